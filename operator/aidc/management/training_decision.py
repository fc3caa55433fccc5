"""The TrainingJob reconcile decision: a pure function of what was observed.

``decide`` takes the job, its pods (as ``RankPod`` values), which supporting objects exist
and the clock, and returns a ``Plan``. It never calls the API, so every rule below is tested
as a table (tests/management/test_training_decision.py) and the cluster tests only prove
the wiring.

The gang lives and dies together: pods carry the gang attempt in a label; a failure moves
the job to the next attempt, which makes every pod of the old one stale (deleted), and the
new gang is created under the same names once the old pods are gone and the backoff passed.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from pydantic import ValidationError

from aidc import contract
from aidc.api.trainingjob import (
    CheckpointStatus,
    ModelStatus,
    Progress,
    ReplicaCounts,
    TrainingJob,
    TrainingJobStatus,
)
from aidc.compute.gang import rank_pod
from aidc.compute.scheduling import binds_all_at_once, pod_group
from aidc.identity.labels import job_labels
from aidc.identity.names import checkpoint_claim_name, rank_pod_name
from aidc.management.checkpoint_snapshot import SnapshotLookup, holds_deletion, take_snapshot
from aidc.management.conditions import set_condition
from aidc.management.observe import RankPod, parse_time
from aidc.management.patching import merge_patch
from aidc.management.plan import Event, Plan, PodDeletion, Refusal
from aidc.management.status_draft import StatusDraft, generation_of
from aidc.network.policies import gang_policy
from aidc.network.rendezvous import rendezvous_service
from aidc.settings import OperatorSettings
from aidc.storage.claims import model_location, owned_claim
from aidc.storage.snapshots import snapshot_request

MAX_BACKOFF_SECONDS = 600
# a refused object is tried again this soon (a quota freed, a policy fixed)
REFUSED_RETRY_SECONDS = 30
# A rank that dies takes its peers' collectives down with it (they exit 1 moments later), and the
# kubelet may report those first: a permanent failure waits this long for running peers to report.
FAILURE_SETTLE_SECONDS = 10
FINISHED = ("Succeeded", "Failed")
# kube-scheduler's message for a pod no node fits: "0/%v nodes are available: <reasons>."
NO_NODE_FITS = re.compile(r"0/(\d+) nodes are available")
# the job's reasons when the gang scheduler stopped the gang (see _queue_stop)
QUEUE_STOPS = ("Preempted", "Evicted")


@dataclass(frozen=True)
class TrainingObservation:
    """Everything ``decide`` looks at."""

    job: TrainingJob
    pods: list[RankPod]
    now: datetime
    settings: OperatorSettings
    service_exists: bool = True
    claim_exists: bool = True
    pod_group_exists: bool = True
    # spec hash of the gang's NetworkPolicy this job controls; None: there is none
    network_policy_hash: str | None = None
    # pods created by this operator that the watch has not delivered yet
    expected: frozenset[str] = frozenset()
    # the checkpoint snapshot of a succeeded job, when there was something to learn about it
    snapshot: SnapshotLookup | None = None
    # why the gang scheduler has not admitted a gated gang, in its words (Kueue's Workload conditions)
    queue_wait: str | None = None


def backoff_seconds(base: int, restarts: int) -> float:
    """Exponential backoff before restart number ``restarts`` (1 = first), capped at 10 minutes."""
    return float(min(base * 2 ** max(restarts - 1, 0), MAX_BACKOFF_SECONDS))


class _Decision(StatusDraft[TrainingJobStatus]):
    """One pass: the status drafted (see StatusDraft) and the gang's outcomes."""

    def __init__(self, obs: TrainingObservation) -> None:
        old = obs.job.status or TrainingJobStatus()
        super().__init__(old, obs.job.status is not None, generation_of(obs.job.metadata), obs.now)
        self.obs = obs
        self.job = obs.job

    # -- outcomes ------------------------------------------------------------------------
    def finish(self, succeeded: bool, reason: str, message: str) -> None:
        self.phase("Succeeded" if succeeded else "Failed", reason, message, warning=not succeeded)
        self.update(completion_time=self.status.completion_time or self.now)
        self.condition("Succeeded" if succeeded else "Failed", True, reason, message)
        self.condition("Running", False, reason, message)
        if self.has_condition("Restarting"):
            self.condition("Restarting", False, reason, message)
        self.clean_up_pods()
        if succeeded and snapshot_request(self.job) is not None:
            self.plan.requeue(0)  # the next pass, from the Succeeded status, takes the snapshot

    def restart(self, reason: str, message: str) -> None:
        restarts = self.status.restarts + 1
        policy = self.job.spec.failure_policy
        if restarts > policy.backoff_limit:
            self.finish(
                False,
                "BackoffLimitExceeded",
                f"{message}; the gang restarted {self.status.restarts} time(s), backoffLimit is {policy.backoff_limit}",
            )
            return
        wait = backoff_seconds(policy.backoff_seconds, restarts)
        self._replace_gang(restarts=restarts)
        self.phase(
            "Restarting",
            "Restarting",
            f"{message}; restarting the whole gang in {wait:.0f}s (restart {restarts} of {policy.backoff_limit})",
            warning=True,
        )
        self.condition("Restarting", True, reason, message)
        self.condition("Running", False, "Restarting", message)
        self.plan.requeue(wait)

    def _replace_gang(self, **counted: int) -> None:
        """The current gang is over: every rank still there is deleted and the next attempt starts from
        nothing; ``counted`` is the status counter the replacement adds to (restarts, preemptions)."""
        self.update(
            **counted,
            gang_attempt=self.status.gang_attempt + 1,
            last_restart_time=self.now,
            gang_created_time=None,
            gang_running_time=None,
        )
        for pod in self.obs.pods:
            if not pod.deleting:
                self.plan.delete.append(PodDeletion(pod.name))

    def requeue_gang(self, reason: str, message: str) -> None:
        """The gang scheduler took the gang's place (Kueue preempted its Workload and deleted every pod):
        the whole gang is recreated at once and waits, gated, to be admitted again.

        A preemption is not the job's failure (as Kubeflow's jobs under Kueue): it is counted in
        ``preemptions``, never against backoffLimit, and waits no backoff (the queue decides when).
        """
        self._replace_gang(preemptions=self.status.preemptions + 1)
        text = f"{message}; the whole gang is recreated and waits to be admitted again"
        if self.status.phase == "Restarting":  # entering the phase is an event; a second stop is one too
            self.event(reason, text, warning=True)
        self.phase("Restarting", reason, text, warning=True)
        self.condition("Restarting", True, reason, message)
        self.condition("Running", False, reason, message)
        self.plan.requeue(0)

    def clean_up_pods(self) -> None:
        policy = self.job.spec.run_policy.clean_pod_policy
        for pod in self.obs.pods:
            if pod.deleting or policy == "None":
                continue
            if policy == "All" or not pod.finished:
                self.plan.delete.append(PodDeletion(pod.name))


def _failure(pod: RankPod, policy_codes: list[int], restart_policy: str) -> tuple[bool, str, str]:
    """(retryable, reason, message) of a failed or vanished rank."""
    where = f"rank {pod.rank} (pod {pod.name})"
    if pod.exit_code is None:
        cause = pod.disrupted or pod.reason or "deleted"
        message = f"{where} went away: {cause}" + (f": {pod.message}" if pod.message else "")
        return restart_policy != "Never", "RankLost", message
    # the kubelet's reason says why when it is more than "Error": OOMKilled, ContainerCannotRun, ...
    why = f" ({pod.reason})" if pod.reason and pod.reason not in ("Error", "Completed") else ""
    message = f"{where} exited with code {pod.exit_code}{why}" + (f": {pod.message.strip()}" if pod.message else "")
    if restart_policy == "Never":
        return False, "Failed", message
    if restart_policy == "OnFailure":
        return pod.exit_code not in contract.PERMANENT_EXIT_CODES, "Failed", message
    return pod.exit_code in policy_codes, "Failed", message


def _finite(value: Any) -> float | None:
    """A heartbeat number the status can hold: JSON has no NaN or infinity (the API server refuses the
    whole status write), yet a trainer reports them: a diverged loss, the mean return of an RL run
    before its first episode ends. Such a value is left out, as are booleans and strings."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def _progress(decision: _Decision, current: list[RankPod]) -> None:
    """Rank 0's heartbeat into status.progress, .checkpoint and .model."""
    rank0 = next((p for p in current if p.rank == 0 and p.progress), None)
    if rank0 is None or rank0.progress is None:
        return
    beat = rank0.progress
    step, total = beat.get("step"), beat.get("totalSteps")
    percent = int(100 * step / total) if isinstance(step, int) and isinstance(total, int) and total > 0 else None
    raw_metrics = beat.get("metrics")
    pairs = raw_metrics.items() if isinstance(raw_metrics, dict) else ()
    metrics = {str(k): number for k, v in pairs if (number := _finite(v)) is not None}
    eta = _finite(beat.get("etaSeconds"))
    heard = parse_time(beat.get("time")) or decision.now
    decision.update(
        progress=Progress(
            step=step,
            total_steps=total,
            epoch=beat.get("epoch"),
            percent=min(percent, 100) if percent is not None else None,
            loss=_finite(beat.get("loss")),
            metrics=metrics,
            samples_per_second=_finite(beat.get("samplesPerSecond")),
            eta_seconds=int(eta) if eta is not None else None,
            last_heartbeat_time=heard,
            last_step_time=_last_step_time(decision.old.progress, step, beat.get("time"), heard),
        )
    )
    job = decision.job
    claim = checkpoint_claim_name(job)
    checkpoint = beat.get("checkpoint") or {}
    if claim and checkpoint.get("path"):
        decision.update(
            checkpoint=CheckpointStatus(
                path=model_location(job, str(checkpoint["path"])),
                step=checkpoint.get("step"),
                time=parse_time(checkpoint.get("time")),
            )
        )
    model = beat.get("model") or {}
    if claim and model.get("path"):
        decision.update(
            model=ModelStatus(
                claim_name=claim,
                path=model_location(job, str(model["path"])),
                best_path=model_location(job, str(model["bestPath"])) if model.get("bestPath") else None,
                step=model.get("step", step),
                size_bytes=model.get("bytes") if isinstance(model.get("bytes"), int) else None,
                task=job.spec.trainer.task if job.spec.trainer is not None else None,
            )
        )


def _last_step_time(old: Progress | None, step: Any, time: Any, heard: datetime) -> datetime:
    """When rank 0 first reported ``step``: a heartbeat that repeats the step recorded keeps its time.

    Progress is a new step, not a fresh heartbeat: a trainer may beat from a thread of its own while
    its training loop blocks in a collective whose peer is stopped. A heartbeat without a step moves
    the clock when its own time does (all such a trainer offers).
    """
    if old is None or old.last_step_time is None:
        return heard
    if step is not None:
        return old.last_step_time if old.step == step else heard
    unchanged = old.step is None and old.last_heartbeat_time == parse_time(time)
    return old.last_step_time if unchanged else heard


def _counts(decision: _Decision, current: list[RankPod]) -> None:
    replicas = decision.job.spec.replicas
    counts = ReplicaCounts(
        desired=replicas,
        pending=sum(1 for p in current if p.phase == "Pending" and not p.deleting),
        running=sum(1 for p in current if p.running),
        succeeded=sum(1 for p in current if p.phase == "Succeeded"),
        failed=sum(1 for p in current if p.phase == "Failed"),
    )
    labels = job_labels(decision.job)
    selector = f"{contract.LABEL_JOB_NAME}={labels[contract.LABEL_JOB_NAME]}"
    decision.update(replica_counts=counts, ready=f"{counts.running}/{replicas}", selector=selector)


def decide(obs: TrainingObservation) -> Plan:
    """The plan for one TrainingJob, from what was observed."""
    d = _Decision(obs)
    status = d.old
    d.update(observed_generation=d.generation)
    current = [p for p in obs.pods if p.attempt == status.gang_attempt]
    stale = [p for p in obs.pods if p.attempt != status.gang_attempt]
    _counts(d, current)
    _progress(d, current)
    _force_out_stuck_pods(d)
    if status.phase in FINISHED and not _invalid_spec_fixed(d):
        d.clean_up_pods()
        _release_held(d, obs.pods)
        take_snapshot(d, obs.job, obs.snapshot, obs.settings)
        _expire(d)
        return d.done()
    if status.phase in FINISHED:  # a spec that could not be parsed was fixed: start over
        d.update(phase="Pending", reason=None, completion_time=None, conditions=[])
    for pod in stale:
        if not pod.deleting:
            d.plan.delete.append(PodDeletion(pod.name))
    _release_held(d, stale)
    _ensure_supporting_objects(d)
    # each of these may hold the gang back for this pass
    if _named_claim_missing(d) or _suspended(d) or _past_deadline(d) or _backing_off(d):
        return d.done()
    _run_gang(d, current, stale)
    return d.done()


def _release_held(d: _Decision, pods: list[RankPod]) -> None:
    """Pods on their way out that Kueue's finalizer holds: released, so their names are free again.

    Kueue keeps the finalizer until a pod of a group is replaced by a pod of another name, or the
    whole group succeeded; a gang is recreated under the same names (stable hostnames), so an old
    attempt's pods (or a finished job's) would otherwise stay Terminating for ever and the new gang
    would never be created. Once they are gone, Kueue drops the group's Workload and queues the next.
    """
    for pod in pods:
        if pod.deleting and pod.held_by_queue:
            d.plan.release.append(pod.name)


def _force_out_stuck_pods(d: _Decision) -> None:
    """Pods whose node is gone never finish terminating: force them out so the gang can return.

    Only ``stuck_terminating_seconds`` after their grace period ended: a node that is only cut off
    may still run the old rank, and a new one under the same name must not meet it too soon."""
    seconds = d.obs.settings.stuck_terminating_seconds
    stuck = timedelta(seconds=seconds)
    for pod in d.obs.pods:
        if pod.deletion is not None and d.now - pod.deletion > stuck:
            d.plan.delete.append(PodDeletion(pod.name, force=True))
            late = (d.now - pod.deletion).total_seconds()
            d.event("ForceDeleted", f"pod {pod.name} still terminating {late:.0f}s after its grace period ended: its "
                    f"node does not confirm (lost or unreachable); force-deleted (stuckTerminatingSeconds {seconds})",
                    warning=True)  # fmt: skip
        elif pod.deletion is not None:
            d.plan.requeue((pod.deletion + stuck - d.now).total_seconds() + 1)


def _named_claim_missing(d: _Decision) -> bool:
    """A checkpoint claim the spec names (the operator never creates it) does not exist."""
    claim, checkpoints = checkpoint_claim_name(d.job), d.job.spec.storage.checkpoints
    if not claim or d.obs.claim_exists or not checkpoints or not checkpoints.claim_name:
        return False
    message = f"checkpoint claim {claim} does not exist; create it or fix spec.storage.checkpoints.claimName"
    d.phase("Pending", "ClaimNotFound", message, warning=True)
    d.condition("Scheduled", False, "ClaimNotFound", message)
    d.plan.requeue(d.obs.settings.resync_seconds)
    return True


def _suspended(d: _Decision) -> bool:
    if d.job.spec.run_policy.suspend:
        _suspend(d)
        return True
    if d.old.phase == "Suspended":
        d.condition("Suspended", False, "Resumed", "the gang is recreated and resumes from its checkpoint")
        d.phase("Pending", "Resumed", "resuming: the gang is recreated and resumes from its checkpoint")
    return False


def _past_deadline(d: _Decision) -> bool:
    deadline, started = d.job.spec.run_policy.active_deadline_seconds, d.old.start_time
    if not deadline or not started:
        return False
    left = (started + timedelta(seconds=deadline) - d.now).total_seconds()
    if left <= 0:
        d.finish(False, "DeadlineExceeded", f"the job ran longer than activeDeadlineSeconds ({deadline}s)")
        return True
    d.plan.requeue(left)
    return False


def _backing_off(d: _Decision) -> bool:
    """A restarting gang waits out its backoff before it is created again."""
    status = d.old
    if status.phase != "Restarting" or status.reason in QUEUE_STOPS:  # the queue decides when, not a backoff
        return False
    wait = backoff_seconds(d.job.spec.failure_policy.backoff_seconds, status.restarts)
    due = (status.last_restart_time or d.now) + timedelta(seconds=wait)
    if d.now < due:
        d.plan.requeue((due - d.now).total_seconds())
        return True
    return False


def _invalid_spec_fixed(d: _Decision) -> bool:
    """A job Failed with InvalidSpec whose spec changed since: it starts over.

    By generation, not by parsing again: a spec the operator parses may still be one the API
    server refuses pods of, and that job must stay Failed until the user edits it.
    """
    failed = next((c for c in d.old.conditions if c.type == "Failed"), None)
    return failed is not None and failed.reason == "InvalidSpec" and failed.observed_generation != d.generation


def _ensure_supporting_objects(d: _Decision) -> None:
    obs = d.obs
    if not obs.service_exists:
        d.plan.create.append(rendezvous_service(obs.job))
    if obs.settings.network_policy:
        d.plan.keep(gang_policy(obs.job, obs.settings.metrics_from), obs.network_policy_hash)
    claim = owned_claim(obs.job)
    if claim is not None and not obs.claim_exists:
        d.plan.create.append(claim)
    group = pod_group(obs.job)
    if group is not None and not obs.pod_group_exists:
        d.plan.create.append(group)


def _suspend(d: _Decision) -> None:
    if d.old.phase != "Suspended":
        # the next gang is a new attempt, so the pods deleted now are not mistaken for lost ranks
        d.update(gang_attempt=d.old.gang_attempt + 1, gang_created_time=None, gang_running_time=None)
    for pod in d.obs.pods:
        if not pod.deleting:
            d.plan.delete.append(PodDeletion(pod.name))
    message = "spec.runPolicy.suspend is true: the gang is deleted; set it to false to resume from the checkpoint"
    d.phase("Suspended", "Suspended", message)
    d.condition("Suspended", True, "Suspended", message)
    d.condition("Running", False, "Suspended", message)


def _run_gang(d: _Decision, current: list[RankPod], stale: list[RankPod]) -> None:
    spec = d.job.spec
    by_rank = {p.rank: p for p in current}
    names = {rank: rank_pod_name(d.job, rank) for rank in range(spec.replicas)}
    missing = [r for r in range(spec.replicas) if r not in by_rank and names[r] not in d.obs.expected]
    if _gang_failed(d, current, missing, names):
        return
    if len(current) == spec.replicas and all(p.completed_run for p in current):
        d.finish(True, "Succeeded", _completed_message(current))
        return
    if missing:
        _create_missing(d, missing, stale, names)
        return
    if d.status.gang_created_time is None:  # every rank is there, but the pass that created them did not record it
        d.update(gang_created_time=d.now)
    if d.status.phase == "Restarting":
        d.condition("Restarting", False, "GangRecreated", f"gang attempt {d.status.gang_attempt} created")
    _hang_check(d, current)
    if d.status.phase == "Restarting":  # restarted by the hang check
        return
    # created, not yet delivered by the watch: not scheduled as far as anyone knows
    unseen = sum(1 for r in range(spec.replicas) if r not in by_rank)
    if unseen:
        d.plan.requeue(d.obs.settings.expectation_seconds)  # then the reconciler asks the API server
    if _all_scheduled(d, current, unseen):
        _report_running(d, current)


def _completed_message(current: list[RankPod]) -> str:
    crashed = sorted((p for p in current if p.phase != "Succeeded"), key=lambda p: p.rank)
    if not crashed:
        return f"all {len(current)} ranks exited 0"
    after = ", ".join(f"rank {p.rank} exited with code {p.exit_code}" for p in crashed)
    return f"all {len(current)} ranks completed the run ({after} after writing its summary)"


def _gang_failed(d: _Decision, current: list[RankPod], missing: list[int], names: dict[int, str]) -> bool:
    """A rank that failed, or vanished after the gang was complete, fails the whole gang."""
    policy = d.job.spec.failure_policy
    gone = [p for p in current if (p.phase == "Failed" and not p.completed_run) or (p.deleting and not p.finished)]
    stopped = sorted((p for p in current if p.stopped_by_queue), key=lambda p: p.rank)
    if stopped:  # Kueue stops (deletes) every rank; the first one it marked says why
        d.requeue_gang(*_queue_stop(stopped[0]))
        return True
    if missing and d.status.gang_created_time is not None:
        attempt = d.status.gang_attempt
        gone += [RankPod(name=names[r], rank=r, attempt=attempt, reason="deleted") for r in missing]
    if not gone:
        return False
    causes = [(pod, _failure(pod, policy.retryable_exit_codes, policy.restart_policy)) for pod in gone]
    # the gang's cause is the rank that failed first; in the same second, a retryable failure (the
    # other is likely its consequence), then the lowest rank
    first, (retryable, reason, message) = min(
        causes, key=lambda c: (c[0].exit_code is None, c[0].finished_at or d.now, not c[1][0], c[0].rank)
    )
    if not retryable and _peers_may_still_report(d, current, first):
        d.plan.requeue(FAILURE_SETTLE_SECONDS)
        return True
    if retryable:
        d.restart(reason if reason != "Failed" else "RankFailed", message)
    else:
        d.finish(False, reason, message)
    return True


def _queue_stop(pod: RankPod) -> tuple[str, str]:
    """(reason, message) of a gang the gang scheduler stopped: Preempted, or Evicted for any other cause
    (its queue stopped, the Workload deactivated or deleted), with the scheduler's own words."""
    cause = pod.stopped_by_queue or "Stopped"
    reason = "Preempted" if cause.endswith("Preempted") else "Evicted"
    said = f": {pod.stop_message}" if pod.stop_message else ""
    return reason, f"Kueue stopped the gang ({cause}) at rank {pod.rank} (pod {pod.name}){said}"


def _peers_may_still_report(d: _Decision, current: list[RankPod], first: RankPod) -> bool:
    """Whether other ranks still run, within FAILURE_SETTLE_SECONDS of ``first`` failing."""
    if first.finished_at is None or d.now - first.finished_at >= timedelta(seconds=FAILURE_SETTLE_SECONDS):
        return False
    return any(not p.finished for p in current if p.name != first.name)


def _create_missing(d: _Decision, missing: list[int], stale: list[RankPod], names: dict[int, str]) -> None:
    replicas, attempt = d.job.spec.replicas, d.status.gang_attempt
    in_the_way = {p.name: p for p in stale}
    creatable = [rank for rank in missing if names[rank] not in in_the_way]  # old pods must be gone first
    for rank in creatable:
        d.plan.create.append(rank_pod(d.job, rank, attempt, d.obs.settings))
    if len(creatable) == len(missing):
        d.phase("Pending", "Creating", f"creating the gang (attempt {attempt}): {len(missing)} rank(s) to create")
        # once these creates succeed every rank exists: the gang is recorded in the same status
        # write (``refused`` takes it back when the API server refuses a create)
        d.update(gang_created_time=d.now)
        d.condition("Scheduled", False, "Creating", f"creating {len(missing)}/{replicas} ranks")
        d.plan.routine_progress = True
    else:
        held = [in_the_way[names[rank]] for rank in missing if names[rank] in in_the_way]
        message = f"{replicas - len(held)}/{replicas} ranks of attempt {attempt} created; " + _held_back(d, held)
        d.phase("Pending", "OldRanksTerminating", message)
        d.condition("Scheduled", False, "OldRanksTerminating", message)
    d.plan.requeue(d.obs.settings.expectation_seconds)


def _held_back(d: _Decision, held: list[RankPod]) -> str:
    """Why ranks wait: their old pods, under the same names, are still terminating."""
    pods = ", ".join(p.name for p in held)
    message = f"waiting for the old pod(s) {pods} to end before their rank(s) are created again"
    overdue = [p for p in held if p.deletion is not None and p.deletion < d.now]
    if not overdue:
        return message
    seconds = d.obs.settings.stuck_terminating_seconds
    due = max(p.deletion for p in overdue if p.deletion is not None) + timedelta(seconds=seconds)
    names = ", ".join(p.name for p in overdue)
    return (f"{message}; {names} outlived its grace period: its node does not confirm (lost or unreachable); "
            f"force-deleted at {due:%Y-%m-%dT%H:%M:%SZ} (stuckTerminatingSeconds {seconds})")  # fmt: skip


def _all_scheduled(d: _Decision, current: list[RankPod], unseen: int) -> bool:
    """Reports a gang still queued or being scheduled; True when every rank is scheduled."""
    spec = d.job.spec
    gated = [p for p in current if p.gated]
    unscheduled = [p for p in current if not p.scheduled and p.phase == "Pending"]
    if gated or unseen:
        held = [p for p in current if p.gang_gated]
    else:  # the gang scheduler admitted every rank: they start together
        held, d.plan.ungate = [], [p.name for p in current if p.gang_gated and not p.deleting]
    if gated or held:
        message = f"{len(gated or held)}/{spec.replicas} ranks wait for admission by the gang scheduler"
        if d.obs.queue_wait:
            message += f"; {spec.scheduling_policy.gang_scheduler} says: {d.obs.queue_wait}"
        d.phase("Queued", "Queued", message)
        d.condition("Scheduled", False, "Queued", message)
        return False
    if not unscheduled and not unseen:
        return True
    timeout = spec.scheduling_policy.schedule_timeout_seconds
    waited = (d.now - (d.status.gang_created_time or d.now)).total_seconds()
    why = _scheduler_says(unscheduled)
    scheduled = spec.replicas - len(unscheduled) - unseen
    message = f"{scheduled}/{spec.replicas} ranks scheduled"
    if binds_all_at_once(d.job) and not scheduled:
        # its own words for a rank it turned back say little: "optimistic rejection in PostFilter"
        message += f"; {spec.scheduling_policy.gang_scheduler} binds none until all {spec.replicas} fit at once"
    message += f"; the scheduler says: {why}" if why else ""
    if waited < timeout:
        d.condition("Scheduled", False, "WaitingForGang", message)
        d.phase("Pending", "WaitingForGang", message)
        d.plan.routine_progress = why is None  # the scheduler's refusal is news, its queue is not
        d.plan.requeue(timeout - waited)
    elif spec.scheduling_policy.on_schedule_timeout == "Fail":
        d.finish(False, "Unschedulable", f"{message} (waited {timeout}s)")
    else:
        d.condition("Scheduled", False, "Unschedulable", f"{message} (waited over {timeout}s)")
        d.phase("Pending", "Unschedulable", message, warning=True)
    return False


def _scheduler_says(unscheduled: list[RankPod]) -> str | None:
    """What the scheduler says of the gang: of the ranks it said something about, the one it tried on
    the most nodes ("0/6 nodes are available: 2 Insufficient nvidia.com/gpu, 4 node(s) didn't match
    ..."), the lowest such rank. That one found no node and says what to change. A gang scheduler turns
    the ranks it had placed back from the one node each held, with only its own word for it
    (Coscheduling: "0/1 nodes are available: 1 optimistic rejection in PostFilter."), and such a
    message, or one of another form, is taken only when nothing else was said."""
    said = [(p.rank, p.unschedulable) for p in unscheduled if p.unschedulable]
    if not said:
        return None
    return min(said, key=lambda rank_and_message: (-_nodes_tried(rank_and_message[1]), rank_and_message[0]))[1]


def _nodes_tried(message: str) -> int:
    """N of kube-scheduler's "0/N nodes are available: ..." (a pod no node fits); 0 for another message."""
    found = NO_NODE_FITS.match(message)
    return int(found.group(1)) if found else 0


def _report_running(d: _Decision, current: list[RankPod]) -> None:
    spec, attempt = d.job.spec, d.status.gang_attempt
    d.condition("Scheduled", True, "AllRanksScheduled", f"all {spec.replicas} ranks scheduled")
    pulling = [p for p in current if p.image_pull_error]
    running = [p for p in current if p.running]
    done = [p for p in current if p.phase == "Succeeded"]
    if pulling:
        message = f"rank {pulling[0].rank} cannot pull its image: {pulling[0].image_pull_error}"
        d.condition("Running", False, "ImagePullFailed", message)
        d.phase("Pending", "ImagePullFailed", message, warning=True)
    elif running and len(running) + len(done) == spec.replicas:
        first_time = d.status.gang_running_time is None
        d.update(gang_running_time=d.status.gang_running_time or d.now, start_time=d.status.start_time or d.now)
        d.condition("Running", True, "Running", f"all {spec.replicas} ranks running (attempt {attempt})")
        d.phase("Running", "Running", f"all {spec.replicas} ranks running (attempt {attempt})")
        if first_time and spec.failure_policy.hang_timeout_seconds:
            d.plan.requeue(spec.failure_policy.hang_timeout_seconds)
    else:
        message = f"{len(running)}/{spec.replicas} ranks running"
        d.condition("Running", False, "ContainersStarting", message)
        d.phase("Pending", "ContainersStarting", message)
        d.plan.routine_progress = True


def _hang_check(d: _Decision, current: list[RankPod]) -> None:
    hang = d.job.spec.failure_policy.hang_timeout_seconds
    if not hang or d.status.phase != "Running" or d.status.gang_running_time is None:
        return
    progress = d.status.progress
    stepped = progress.last_step_time if progress else None
    last = max(t for t in (d.status.gang_running_time, stepped) if t is not None)
    silent = (d.now - last).total_seconds()
    if silent >= hang:
        at = f" (step {progress.step})" if progress and progress.step is not None else ""
        d.restart("Stalled", f"rank 0 reported no new step for {silent:.0f}s{at}; hangTimeoutSeconds is {hang}")
    else:
        d.plan.requeue(hang - silent)


def _expire(d: _Decision) -> None:
    ttl = d.job.spec.run_policy.ttl_seconds_after_finished
    finished = d.status.completion_time
    if ttl is None or finished is None or holds_deletion(d.job):
        return
    left = (finished + timedelta(seconds=ttl) - d.now).total_seconds()
    if left <= 0:
        d.plan.delete_resource = True
    else:
        d.plan.requeue(left)


def refused(obs: TrainingObservation, plan: Plan, refusal: Refusal) -> Plan:
    """``plan`` once the API server refused one of its objects: the refusal decides what comes next.

    A rank pod or claim refused for what it is (400 or 422: an override or value the schema
    cannot check) can never be created, so the job fails with InvalidSpec at once instead of
    staying Pending; it starts over when the spec changes. Any other refusal (quota, admission
    policy) becomes the reason in status and is tried again. A gang the decision recorded as
    created in this pass is not: the next pass creates the ranks still missing rather than
    taking them for lost.
    """
    if refusal.blames_the_spec:
        return _spec_refused(obs, refusal)
    job, now, message = obs.job, obs.now, str(refusal)
    before = job.status or TrainingJobStatus()
    status = TrainingJobStatus.model_validate(plan.status or before.to_wire())
    conditions = set_condition(
        list(status.conditions), "Scheduled", "False", "CreationFailed", message, generation_of(job.metadata), now
    )
    update = {"conditions": conditions, "reason": "CreationFailed", "gang_created_time": before.gang_created_time}
    answer = replace(
        plan,
        status=status.model_copy(update=update).to_wire(),
        events=[*plan.events, Event("Warning", "CreationFailed", message)],
        routine_progress=False,
    )
    answer.requeue(REFUSED_RETRY_SECONDS)
    return answer


def _spec_refused(obs: TrainingObservation, refusal: Refusal) -> Plan:
    """The job Failed with InvalidSpec: what its spec renders is refused by the API server."""
    d = _Decision(obs)
    d.update(observed_generation=d.generation)
    message = f"invalid spec: {refusal}; fix the spec (a new generation starts the job over)"
    d.finish(False, "InvalidSpec", message)
    _expire(d)
    return d.done()


def invalid(status: dict[str, Any], metadata: dict[str, Any], problem: str, now: datetime) -> Plan:
    """A spec the API server admitted but the operator cannot use: Failed with InvalidSpec, never a crash.

    ``status`` is the job's status as the server has it; nothing is written when it says so already.
    """
    try:
        old = TrainingJobStatus.model_validate(status)
    except ValidationError:
        old = TrainingJobStatus()
    generation = generation_of(metadata)
    message = f"invalid spec: {problem}"
    conditions = set_condition(list(old.conditions), "Failed", "True", "InvalidSpec", message, generation, now)
    update = {"phase": "Failed", "reason": "InvalidSpec", "conditions": conditions, "observed_generation": generation}
    new = old.model_copy(update=update)
    plan = Plan()
    if merge_patch(status, new.to_wire()):
        plan.status = new.to_wire()
        plan.events.append(Event("Warning", "InvalidSpec", message))
    return plan
