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

from dataclasses import dataclass
from datetime import datetime, timedelta

from aidc import contract
from aidc.api.common import ConditionStatus
from aidc.api.trainingjob import (
    CheckpointStatus,
    ModelStatus,
    Progress,
    ReplicaCounts,
    TrainingJob,
    TrainingJobStatus,
)
from aidc.compute.gang import rank_pod
from aidc.compute.scheduling import pod_group
from aidc.identity.labels import job_labels
from aidc.identity.names import checkpoint_claim_name, rank_pod_name
from aidc.management.conditions import set_condition
from aidc.management.observe import RankPod, parse_time
from aidc.management.plan import Event, Plan, PodDeletion
from aidc.network.rendezvous import rendezvous_service
from aidc.settings import OperatorSettings
from aidc.storage.claims import model_location, owned_claim

MAX_BACKOFF_SECONDS = 600
FINISHED = ("Succeeded", "Failed")


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
    # pods created by this operator that the watch has not delivered yet
    expected: frozenset[str] = frozenset()


def backoff_seconds(base: int, restarts: int) -> float:
    """Exponential backoff before restart number ``restarts`` (1 = first), capped at 10 minutes."""
    return float(min(base * 2 ** max(restarts - 1, 0), MAX_BACKOFF_SECONDS))


class _Decision:
    """One pass: accumulates the new status and the plan."""

    def __init__(self, obs: TrainingObservation) -> None:
        self.obs = obs
        self.job = obs.job
        self.now = obs.now
        self.generation = int(obs.job.metadata.get("generation") or 0) or None
        self.old = obs.job.status or TrainingJobStatus()
        self.status = self.old.model_copy()
        self.plan = Plan()

    # -- status helpers ------------------------------------------------------------------
    def update(self, **changes: object) -> None:
        self.status = self.status.model_copy(update=changes)

    def condition(self, type_: str, status: bool, reason: str, message: str = "") -> None:
        value: ConditionStatus = "True" if status else "False"
        conditions = set_condition(
            list(self.status.conditions), type_, value, reason, message, self.generation, self.now
        )
        self.update(conditions=conditions)

    def event(self, reason: str, message: str, warning: bool = False) -> None:
        self.plan.events.append(Event("Warning" if warning else "Normal", reason, message))

    def phase(self, phase: str, reason: str, message: str, warning: bool = False) -> None:
        if self.status.phase != phase:
            self.event(reason, message, warning)
        self.update(phase=phase)

    # -- outcomes ------------------------------------------------------------------------
    def finish(self, succeeded: bool, reason: str, message: str) -> None:
        self.phase("Succeeded" if succeeded else "Failed", reason, message, warning=not succeeded)
        self.update(completion_time=self.status.completion_time or self.now)
        self.condition("Succeeded" if succeeded else "Failed", True, reason, message)
        self.condition("Running", False, reason, message)
        if self._has("Restarting"):
            self.condition("Restarting", False, reason, message)
        self.clean_up_pods()

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
        self.update(
            restarts=restarts,
            gang_attempt=self.status.gang_attempt + 1,
            last_restart_time=self.now,
            gang_created_time=None,
            gang_running_time=None,
        )
        self.phase(
            "Restarting",
            "Restarting",
            f"{message}; restarting the whole gang in {wait:.0f}s (restart {restarts} of {policy.backoff_limit})",
            warning=True,
        )
        self.condition("Restarting", True, reason, message)
        self.condition("Running", False, "Restarting", message)
        for pod in self.obs.pods:
            if not pod.deleting:
                self.plan.delete.append(PodDeletion(pod.name))
        self.plan.requeue(wait)

    def clean_up_pods(self) -> None:
        policy = self.job.spec.run_policy.clean_pod_policy
        for pod in self.obs.pods:
            if pod.deleting or policy == "None":
                continue
            if policy == "All" or not pod.finished:
                self.plan.delete.append(PodDeletion(pod.name))

    def _has(self, type_: str) -> bool:
        return any(c.type == type_ for c in self.status.conditions)


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


def _progress(decision: _Decision, current: list[RankPod]) -> None:
    """Rank 0's heartbeat into status.progress, .checkpoint and .model."""
    rank0 = next((p for p in current if p.rank == 0 and p.progress), None)
    if rank0 is None or rank0.progress is None:
        return
    beat = rank0.progress
    step, total = beat.get("step"), beat.get("totalSteps")
    percent = int(100 * step / total) if isinstance(step, int) and isinstance(total, int) and total > 0 else None
    metrics = {k: float(v) for k, v in (beat.get("metrics") or {}).items() if isinstance(v, int | float)}
    decision.update(
        progress=Progress(
            step=step,
            total_steps=total,
            epoch=beat.get("epoch"),
            percent=min(percent, 100) if percent is not None else None,
            loss=beat.get("loss"),
            metrics=metrics,
            samples_per_second=beat.get("samplesPerSecond"),
            eta_seconds=int(beat["etaSeconds"]) if isinstance(beat.get("etaSeconds"), int | float) else None,
            last_heartbeat_time=parse_time(beat.get("time")) or decision.now,
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
            )
        )


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
    job, spec, now, status = obs.job, obs.job.spec, obs.now, d.old
    d.update(observed_generation=d.generation)
    current = [p for p in obs.pods if p.attempt == status.gang_attempt]
    stale = [p for p in obs.pods if p.attempt != status.gang_attempt]
    _counts(d, current)
    _progress(d, current)

    # pods whose node is gone never finish terminating: force them out so the gang can return
    stuck = timedelta(seconds=obs.settings.stuck_terminating_seconds)
    for pod in obs.pods:
        if pod.deletion is not None and now - pod.deletion > stuck:
            d.plan.delete.append(PodDeletion(pod.name, force=True))
        elif pod.deletion is not None:
            d.plan.requeue((pod.deletion + stuck - now).total_seconds() + 1)

    if status.phase in FINISHED and not _invalid_spec_fixed(d):
        d.clean_up_pods()
        _expire(d)
        return _done(d)
    if status.phase in FINISHED:  # a spec that could not be parsed was fixed: start over
        d.update(phase="Pending", completion_time=None, conditions=[])

    for pod in stale:
        if not pod.deleting:
            d.plan.delete.append(PodDeletion(pod.name))

    _ensure_supporting_objects(d)
    claim = checkpoint_claim_name(job)
    if claim and not obs.claim_exists and spec.storage.checkpoints and spec.storage.checkpoints.claim_name:
        message = f"checkpoint claim {claim} does not exist; create it or fix spec.storage.checkpoints.claimName"
        d.phase("Pending", "ClaimNotFound", message, warning=True)
        d.condition("Scheduled", False, "ClaimNotFound", message)
        d.plan.requeue(obs.settings.resync_seconds)
        return _done(d)

    if spec.run_policy.suspend:
        _suspend(d, current)
        return _done(d)
    if status.phase == "Suspended":
        d.condition("Suspended", False, "Resumed", "the gang is recreated and resumes from its checkpoint")
        d.phase("Pending", "Resumed", "resuming: the gang is recreated and resumes from its checkpoint")

    deadline = spec.run_policy.active_deadline_seconds
    if deadline and status.start_time:
        left = (status.start_time + timedelta(seconds=deadline) - now).total_seconds()
        if left <= 0:
            d.finish(False, "DeadlineExceeded", f"the job ran longer than activeDeadlineSeconds ({deadline}s)")
            return _done(d)
        d.plan.requeue(left)

    if status.phase == "Restarting":
        due = (status.last_restart_time or now) + timedelta(
            seconds=backoff_seconds(spec.failure_policy.backoff_seconds, status.restarts)
        )
        if now < due:
            d.plan.requeue((due - now).total_seconds())
            return _done(d)

    _run_gang(d, current, stale)
    return _done(d)


def _invalid_spec_fixed(d: _Decision) -> bool:
    failed = next((c for c in d.old.conditions if c.type == "Failed"), None)
    return failed is not None and failed.reason == "InvalidSpec"


def _ensure_supporting_objects(d: _Decision) -> None:
    obs = d.obs
    if not obs.service_exists:
        d.plan.create.append(rendezvous_service(obs.job))
    claim = owned_claim(obs.job)
    if claim is not None and not obs.claim_exists:
        d.plan.create.append(claim)
    group = pod_group(obs.job)
    if group is not None and not obs.pod_group_exists:
        d.plan.create.append(group)


def _suspend(d: _Decision, current: list[RankPod]) -> None:
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
    obs, job, now = d.obs, d.job, d.now
    spec = job.spec
    policy = spec.failure_policy
    by_rank = {p.rank: p for p in current}
    attempt = d.status.gang_attempt
    names = {rank: rank_pod_name(job, rank) for rank in range(spec.replicas)}
    missing = [r for r in range(spec.replicas) if r not in by_rank and names[r] not in obs.expected]

    # a rank that failed, or vanished after the gang was complete, fails the whole gang
    gone = [p for p in current if p.phase == "Failed" or (p.deleting and not p.finished)]
    if missing and d.status.gang_created_time is not None:
        gone += [RankPod(name=names[r], rank=r, attempt=attempt, reason="deleted") for r in missing]
    if gone:
        first = min(gone, key=lambda p: (p.exit_code is None, p.rank))
        retryable, reason, message = _failure(first, policy.retryable_exit_codes, policy.restart_policy)
        if retryable:
            d.restart(reason if reason != "Failed" else "RankFailed", message)
        else:
            d.finish(False, reason, message)
        return

    if len(current) == spec.replicas and all(p.phase == "Succeeded" for p in current):
        d.finish(True, "Succeeded", f"all {spec.replicas} ranks exited 0")
        return

    if missing:
        stale_names = {p.name for p in stale}
        creatable = [rank for rank in missing if names[rank] not in stale_names]  # old pods must be gone first
        for rank in creatable:
            d.plan.create.append(rank_pod(job, rank, attempt, obs.settings))
        d.phase("Pending", "Creating", f"creating the gang (attempt {attempt}): {len(missing)} rank(s) to create")
        if len(creatable) == len(missing):
            # once these creates succeed every rank exists: the gang is recorded in the same
            # status write (the apply layer takes it back when the API server refuses a create)
            d.update(gang_created_time=now)
            d.condition("Scheduled", False, "Creating", f"creating {len(missing)}/{spec.replicas} ranks")
        else:
            d.condition("Scheduled", False, "Creating", f"{spec.replicas - len(missing)}/{spec.replicas} ranks created")
        d.plan.routine_progress = True
        d.plan.requeue(obs.settings.expectation_seconds)
        return

    if d.status.gang_created_time is None:  # every rank is there, but the pass that created them did not record it
        d.update(gang_created_time=now)
    created = d.status.gang_created_time or now

    if d.status.phase == "Restarting":
        d.condition("Restarting", False, "GangRecreated", f"gang attempt {attempt} created")

    _hang_check(d, current)
    if d.status.phase == "Restarting":  # restarted by the hang check
        return

    gated = [p for p in current if p.gated]
    unscheduled = [p for p in current if not p.scheduled and p.phase == "Pending"]
    # created, not yet delivered by the watch: not scheduled as far as anyone knows
    unseen = sum(1 for r in range(spec.replicas) if r not in by_rank)
    if unseen:
        d.plan.requeue(obs.settings.expectation_seconds)  # then the reconciler asks the API server
    pulling = [p for p in current if p.image_pull_error]
    running = [p for p in current if p.running]
    done = [p for p in current if p.phase == "Succeeded"]
    timeout = spec.scheduling_policy.schedule_timeout_seconds
    waited = (now - created).total_seconds()

    if gated:
        message = f"{len(gated)}/{spec.replicas} ranks wait for admission by the gang scheduler"
        d.phase("Queued", "Queued", message)
        d.condition("Scheduled", False, "Queued", message)
    elif unscheduled or unseen:
        why = next((p.unschedulable for p in unscheduled if p.unschedulable), None)
        scheduled = spec.replicas - len(unscheduled) - unseen
        message = f"{scheduled}/{spec.replicas} ranks scheduled" + (f"; the scheduler says: {why}" if why else "")
        if waited >= timeout:
            if spec.scheduling_policy.on_schedule_timeout == "Fail":
                d.finish(False, "Unschedulable", f"{message} (waited {timeout}s)")
                return
            d.condition("Scheduled", False, "Unschedulable", f"{message} (waited over {timeout}s)")
            d.phase("Pending", "Unschedulable", message, warning=True)
        else:
            d.condition("Scheduled", False, "WaitingForGang", message)
            d.phase("Pending", "WaitingForGang", message)
            d.plan.routine_progress = why is None  # the scheduler's refusal is news, its queue is not
            d.plan.requeue(timeout - waited)
    else:
        d.condition("Scheduled", True, "AllRanksScheduled", f"all {spec.replicas} ranks scheduled")
        if pulling:
            message = f"rank {pulling[0].rank} cannot pull its image: {pulling[0].image_pull_error}"
            d.condition("Running", False, "ImagePullFailed", message)
            d.phase("Pending", "ImagePullFailed", message, warning=True)
        elif running and len(running) + len(done) == spec.replicas:
            first_time = d.status.gang_running_time is None
            d.update(
                gang_running_time=d.status.gang_running_time or now,
                start_time=d.status.start_time or now,
            )
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
    beat = d.status.progress.last_heartbeat_time if d.status.progress else None
    last = max(t for t in (d.status.gang_running_time, beat) if t is not None)
    silent = (d.now - last).total_seconds()
    if silent >= hang:
        d.restart("Stalled", f"no progress heartbeat from rank 0 for {silent:.0f}s (hangTimeoutSeconds {hang})")
    else:
        d.plan.requeue(hang - silent)


def _expire(d: _Decision) -> None:
    ttl = d.job.spec.run_policy.ttl_seconds_after_finished
    finished = d.status.completion_time
    if ttl is None or finished is None:
        return
    left = (finished + timedelta(seconds=ttl) - d.now).total_seconds()
    if left <= 0:
        d.plan.delete_resource = True
    else:
        d.plan.requeue(left)


def _done(d: _Decision) -> Plan:
    new = d.status.to_wire()
    if new != (d.old.to_wire() if d.obs.job.status is not None else None):
        d.plan.status = new
    return d.plan
