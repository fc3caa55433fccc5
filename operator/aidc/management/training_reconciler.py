"""Observe -> decide -> apply for one TrainingJob."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp
from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from aidc import contract
from aidc.api import TrainingJob, describe_validation_error
from aidc.api.trainingjob import TrainingJobStatus
from aidc.compute.scheduling import group_name, pod_group
from aidc.identity.labels import job_labels
from aidc.identity.names import checkpoint_claim_name, rendezvous_service_name
from aidc.management import metrics
from aidc.management.cluster import Cluster, CreationRefusedError
from aidc.management.conditions import set_condition
from aidc.management.observe import RankPod
from aidc.management.patching import merge_patch
from aidc.management.plan import Event, Plan
from aidc.management.training_decision import TrainingObservation, decide
from aidc.management.workers import Memory
from aidc.settings import OperatorSettings

log = logging.getLogger(__name__)
PLURAL = "trainingjobs"

# index lookups: (namespace, job) -> [(controller uid, RankPod)], (namespace, name) -> value
PodIndex = Mapping[tuple[str, str], Iterable[tuple[str | None, RankPod]]]
NameIndex = Mapping[tuple[str, str], Any]


# status fields that only describe (a late write loses nothing the decision relies on)
_DESCRIPTIVE = frozenset(
    {"phase", "conditions", "replicaCounts", "ready", "selector", "observedGeneration", "progress"}
)


def write_at_once(server: dict[str, Any], target: dict[str, Any]) -> bool:
    """Whether a decided status goes out now rather than after the batch window.

    A phase change is written at once (but the very first Pending of a new job), and so is any
    change to what the decision remembers in status (gang attempt and times, restarts, checkpoint,
    ...), so an operator stopped within the window resumes from it. That includes the first
    ``gangCreatedTime``: without it a restarted operator cannot tell a rank lost while it was down
    from one never created, and would recreate the rank instead of restarting the gang
    (``test_operator_restarts_without_duplicates_or_lost_jobs`` caught a version that waited).
    """
    before, after = server.get("phase"), target.get("phase")
    if before != after and not (before is None and after == "Pending"):
        return True
    return any(server.get(k) != target.get(k) for k in server.keys() | target.keys() if k not in _DESCRIPTIVE)


def _parse(seen: dict[str, Any], memory: Memory) -> TrainingJob:
    """The job as a model, its spec parsed once per generation.

    Most passes see a new version that differs only in status (each status write makes one),
    and the spec with its CEL checks was most of the parsing. The API server bumps
    ``metadata.generation`` on every change of spec, so (uid, generation) names a spec.
    """
    metadata = seen.get("metadata") or {}
    spec_key = (metadata.get("uid"), metadata.get("generation"))
    if memory.spec is not None and spec_key[1] is not None and memory.spec[0] == spec_key:
        return TrainingJob.model_validate({**seen, "spec": memory.spec[1]})
    job = TrainingJob.model_validate(seen)
    memory.spec = (spec_key, job.spec)
    return job


@dataclass(frozen=True)
class TrainingIndexes:
    """What the watches hold that a pass reads: the rank pods, and which Services and claims exist."""

    pods: PodIndex
    services: NameIndex
    claims: NameIndex


class TrainingReconciler:
    """Holds the cluster facade and the watch indexes; ``reconcile`` is one pass for one job."""

    def __init__(self, cluster: Cluster, settings: OperatorSettings, indexes: TrainingIndexes) -> None:
        self.cluster = cluster
        self.settings = settings
        self.indexes = indexes

    def _pods_of(self, job: TrainingJob) -> list[RankPod]:
        meta = job.metadata
        pods = self.indexes.pods.get((meta["namespace"], meta["name"]), ())
        return [pod for owner, pod in pods if owner == meta["uid"]]

    async def check_overdue(self, job: TrainingJob, memory: Memory) -> None:
        """Asks the API server about pods created more than ``expectation_seconds`` ago that the
        watch has still not delivered.

        Such a pod is usually there and the watch behind: under a burst the operator's pod watch
        fell more than 30 s behind its own creates, and ranks that existed counted as lost (433 of
        1,000 gangs restarted; RESULTS.md, round 4). A pod the server has stays expected for
        another window; one it has not is no longer expected (lost, or its create never landed).
        When the server cannot be asked, nothing is concluded and the next pass asks again.
        """
        if not memory.expected:  # most passes: every rank created has been delivered
            return
        now = time.monotonic()
        seen = {pod.name for pod in self._pods_of(job)}  # delivered since the last pass: not overdue
        window = self.settings.expectation_seconds
        overdue = [n for n, t in memory.expected.items() if n not in seen and now - t >= window]
        if not overdue:
            return
        selector = f"{contract.LABEL_JOB_NAME}={job_labels(job)[contract.LABEL_JOB_NAME]}"
        try:
            existing = await self.cluster.owned_pod_names(job.metadata["namespace"], selector, job.metadata["uid"])
        except (ApiException, aiohttp.ClientError, TimeoutError) as error:
            log.warning("could not check the overdue pods %s: %s", ", ".join(sorted(overdue)), error)
            return
        seen = {pod.name for pod in self._pods_of(job)}  # the watch may have caught up meanwhile
        for name in overdue:
            if name in seen:
                memory.expected.pop(name, None)
            elif name in existing:
                memory.expected[name] = now
                metrics.OVERDUE_PODS.labels("found").inc()
            else:
                memory.expected.pop(name, None)
                metrics.OVERDUE_PODS.labels("gone").inc()

    def observe(self, job: TrainingJob, memory: Memory) -> TrainingObservation:
        namespace = job.metadata["namespace"]
        pods = self._pods_of(job)
        seen = {pod.name for pod in pods}
        memory.expected = {n: t for n, t in memory.expected.items() if n not in seen}
        claim = checkpoint_claim_name(job)
        group = pod_group(job)
        return TrainingObservation(
            job=job,
            pods=pods,
            now=datetime.now(UTC),
            settings=self.settings,
            service_exists=(namespace, rendezvous_service_name(job)) in self.indexes.services,
            claim_exists=claim is None or (namespace, claim) in self.indexes.claims,
            pod_group_exists=group is None or f"podgroup/{group_name(job)}" in memory.ensured,
            expected=frozenset(memory.expected),
        )

    async def reconcile(self, body: dict[str, Any], memory: Memory) -> tuple[dict[str, Any] | None, float | None]:
        started = time.monotonic()
        try:
            return await self._reconcile(body, memory)
        finally:
            metrics.RECONCILE_SECONDS.labels("TrainingJob").observe(time.monotonic() - started)

    async def _reconcile(self, body: dict[str, Any], memory: Memory) -> tuple[dict[str, Any] | None, float | None]:
        if body.get("metadata", {}).get("deletionTimestamp"):
            return None, None  # garbage collection removes what it owned
        seen = body
        if memory.unwritten is not None:
            if memory.unwritten_base == (body.get("status") or {}):
                # decide from the status already decided, as if it had been written
                seen = {**body, "status": memory.unwritten}
            else:  # someone else wrote status meanwhile: start again from theirs
                memory.unwritten = None
        version, status = str(body["metadata"].get("resourceVersion")), seen.get("status")
        if memory.parsed is not None and memory.parsed[0] == version and memory.parsed[1] is status:
            job = memory.parsed[2]  # nothing changed since the last pass: the job is parsed already
        else:
            try:
                job = _parse(seen, memory)
            except ValidationError as error:
                memory.unwritten = None
                return await self._invalid(body, describe_validation_error(error)), None
            memory.parsed = (version, status, job)
        await self.check_overdue(job, memory)
        plan = decide(self.observe(job, memory))
        creation_error = await self._apply_objects(job, plan, memory)
        if creation_error is not None:
            plan = self._with_creation_error(job, plan, creation_error)
        updated, wait = await self._apply_status(job, body, seen.get("status") or {}, plan, memory)
        requeue = plan.requeue_after
        if wait is not None:
            requeue = wait if requeue is None else min(requeue, wait)
        return updated, requeue

    async def _apply_objects(self, job: TrainingJob, plan: Plan, memory: Memory) -> CreationRefusedError | None:
        namespace = job.metadata["namespace"]

        async def create(obj: dict[str, Any]) -> None:
            await self.cluster.create(obj)
            if obj["kind"] == "Pod":
                memory.expected[obj["metadata"]["name"]] = time.monotonic()
            elif obj["kind"] == "PodGroup":
                memory.ensured.add(f"podgroup/{obj['metadata']['name']}")

        # the claim and the pod group before the gang (a scheduler must find them), then the gang
        # at once, with its Service: a Service may follow its pods (DNS names appear when it
        # does, before any rank resolves rank 0), so it costs the gang no round trip
        first = [o for o in plan.create if o["kind"] not in ("Pod", "Service")]
        gang = [o for o in plan.create if o["kind"] in ("Pod", "Service")]
        if any(o["kind"] == "Pod" for o in gang):
            await self.cluster.ensure_trainer_identity(namespace)
        error: CreationRefusedError | None = None
        for batch in (first, gang):
            results = await asyncio.gather(*(create(o) for o in batch), return_exceptions=True)
            for result in results:
                if isinstance(result, CreationRefusedError):
                    error = error or result
                elif isinstance(result, BaseException):
                    raise result
        await asyncio.gather(*(self.cluster.delete_pod(namespace, d) for d in plan.delete))
        if plan.delete_resource:
            await self.cluster.delete_custom(PLURAL, namespace, job.metadata["name"])
        return error

    def _with_creation_error(self, job: TrainingJob, plan: Plan, error: CreationRefusedError) -> Plan:
        """An object the API server refused (quota, admission, a bad podTemplate) becomes the reason.

        A gang the decision recorded as created in this pass is not: the next pass creates the
        ranks still missing rather than taking them for lost.
        """
        before = job.status or TrainingJobStatus()
        status = TrainingJobStatus.model_validate(plan.status or before.to_wire())
        now = datetime.now(UTC)
        conditions = set_condition(
            list(status.conditions),
            "Scheduled",
            "False",
            "CreationFailed",
            str(error),
            int(job.metadata.get("generation") or 0) or None,
            now,
        )
        update = {"conditions": conditions, "gang_created_time": before.gang_created_time}
        plan.status = status.model_copy(update=update).to_wire()
        plan.events.append(Event("Warning", "CreationFailed", str(error)))
        plan.routine_progress = False
        plan.requeue(30)
        return plan

    async def _apply_status(
        self, job: TrainingJob, body: dict[str, Any], seen: dict[str, Any], plan: Plan, memory: Memory
    ) -> tuple[dict[str, Any] | None, float | None]:
        """Writes the decided status, or keeps it unwritten a little while; returns (updated, wait).

        ``seen`` is the status the decision started from (the server's, or one not written yet).
        A phase change is written at once, with everything decided before it; anything else is
        written once it has waited ``status_batch_seconds``, so a gang coming up makes one write.
        """
        updated, wait = None, None
        server = body.get("status") or {}
        target = plan.status if plan.status is not None else memory.unwritten
        if target is not None and not plan.delete_resource:
            patch = merge_patch(server, target)
            now = time.monotonic()
            batch = self.settings.status_batch_seconds
            if batch > 0 and plan.routine_progress and server.get("phase") == target.get("phase") == "Pending":
                # a written Pending status that only counts a gang coming up: the next phase is near
                batch = max(batch, self.settings.gang_progress_seconds)
            if not patch:
                memory.unwritten = None
            elif (
                batch <= 0
                or write_at_once(server, target)
                or (memory.unwritten is not None and now - memory.unwritten_since >= batch)
            ):
                memory.unwritten = None
                updated = await self.cluster.patch_status(
                    PLURAL, job.metadata["namespace"], job.metadata["name"], patch
                )
            else:
                if memory.unwritten is None:
                    memory.unwritten_since = now
                memory.unwritten, memory.unwritten_base = target, server
                wait = max(0.0, memory.unwritten_since + batch - now)
        self._account(job, seen, plan.status or seen, memory)
        for event in plan.events:
            await self.cluster.post_event(body, event)
        return updated, wait

    def _account(self, job: TrainingJob, old: dict[str, Any], new: dict[str, Any], memory: Memory) -> None:
        before, after = old.get("phase"), new.get("phase")
        memory.phase = after
        if before == after:
            return
        metrics.TRANSITIONS.labels(before or "New", after or "Pending").inc()
        if after == "Restarting":
            reason = next((c["reason"] for c in new.get("conditions", []) if c["type"] == "Restarting"), "Unknown")
            metrics.RESTARTS.labels(reason).inc()
        if after == "Running":
            created = job.metadata.get("creationTimestamp")
            now = datetime.now(UTC)
            if created and new.get("restarts", 0) == 0:
                born = datetime.fromisoformat(str(created).replace("Z", "+00:00"))
                metrics.TIME_TO_RUNNING.observe((now - born).total_seconds())
            gang = new.get("gangCreatedTime")
            if gang:
                metrics.SCHEDULING_WAIT.observe(
                    (now - datetime.fromisoformat(gang.replace("Z", "+00:00"))).total_seconds()
                )

    async def _invalid(self, body: dict[str, Any], problem: str) -> dict[str, Any] | None:
        """A spec the API server admitted but the operator cannot use: a condition, never a crash."""
        meta = body["metadata"]
        metrics.INVALID_SPECS.labels("TrainingJob").inc()
        old = body.get("status") or {}
        try:
            status = TrainingJobStatus.model_validate(old)
        except ValidationError:
            status = TrainingJobStatus()
        now = datetime.now(UTC)
        generation = int(meta.get("generation") or 0) or None
        message = f"invalid spec: {problem}"
        conditions = set_condition(list(status.conditions), "Failed", "True", "InvalidSpec", message, generation, now)
        new = status.model_copy(
            update={"phase": "Failed", "conditions": conditions, "observed_generation": generation}
        ).to_wire()
        patch = merge_patch(old, new)
        if not patch:
            return None
        updated = await self.cluster.patch_status(PLURAL, meta["namespace"], meta["name"], patch)
        await self.cluster.post_event(body, Event("Warning", "InvalidSpec", message))
        return updated
