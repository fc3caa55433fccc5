"""parse -> observe -> decide (pure) -> apply -> report, for one TrainingJob.

The parts with a story of their own live beside it: the parse cache (``job_parsing``), the check
of pods the watch is late with (``overdue_pods``), and when a status is written
(``status_batching``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from aidc.api import TrainingJob, describe_validation_error
from aidc.compute.scheduling import (
    GANG_GATE,
    KUEUE_FINALIZER,
    KUEUE_WORKLOAD_API,
    KUEUE_WORKLOADS,
    group_name,
    kueue_wait,
    pod_group,
)
from aidc.identity.names import checkpoint_claim_name, gang_policy_name, rendezvous_service_name
from aidc.management.apiserver import ApiError
from aidc.management.checkpoint_snapshot import SnapshotLookup, snapshot_refused, snapshot_to_look_up
from aidc.management.cluster import Cluster, CreationRefusedError
from aidc.management.job_parsing import parse_job
from aidc.management.metrics import OperatorMetrics
from aidc.management.observe import RankPod, owned_hash
from aidc.management.overdue_pods import check_overdue
from aidc.management.plan import Plan
from aidc.management.report import report
from aidc.management.status_batching import body_to_decide_from, patch_to_write
from aidc.management.training_decision import TrainingObservation, decide, invalid, refused
from aidc.management.workers import Memory
from aidc.settings import OperatorSettings
from aidc.storage.snapshots import SNAPSHOT_API_VERSION, SNAPSHOT_PLURAL

PLURAL = "trainingjobs"

# index lookups: (namespace, job) -> [(controller uid, RankPod)], (namespace, name) -> value
PodIndex = Mapping[tuple[str, str], Iterable[tuple[str | None, RankPod]]]
NameIndex = Mapping[tuple[str, str], Any]


@dataclass(frozen=True)
class TrainingIndexes:
    """What the watches hold that a pass reads: the rank pods, which Services and claims exist, and
    the NetworkPolicies (their controller's uid and spec hash)."""

    pods: PodIndex
    services: NameIndex
    claims: NameIndex
    policies: NameIndex


class TrainingReconciler:
    """Holds the cluster facade and the watch indexes; ``reconcile`` is one pass for one job."""

    def __init__(
        self, cluster: Cluster, settings: OperatorSettings, indexes: TrainingIndexes, metrics: OperatorMetrics
    ) -> None:
        self.cluster = cluster
        self.settings = settings
        self.indexes = indexes
        self.metrics = metrics

    def _pods_of(self, job: TrainingJob) -> list[RankPod]:
        meta = job.metadata
        pods = self.indexes.pods.get((meta["namespace"], meta["name"]), ())
        return [pod for owner, pod in pods if owner == meta["uid"]]

    def _delivered(self, job: TrainingJob) -> set[str]:
        return {pod.name for pod in self._pods_of(job)}

    def observe(
        self, job: TrainingJob, memory: Memory, snapshot: SnapshotLookup | None = None, queue_wait: str | None = None
    ) -> TrainingObservation:
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
            network_policy_hash=owned_hash(self.indexes.policies, (namespace, gang_policy_name(job)), job),
            expected=frozenset(memory.expected),
            snapshot=snapshot,
            queue_wait=queue_wait,
        )

    async def _ask_queue(self, job: TrainingJob) -> str | None:
        """Why Kueue holds a gated gang back, read from its Workload (named after the pod group) only
        while a rank is gated; None when there is no such Workload or it may not be read."""
        if job.spec.scheduling_policy.gang_scheduler != "Kueue" or not any(p.gated for p in self._pods_of(job)):
            return None
        try:
            workload = await self.cluster.read(KUEUE_WORKLOAD_API, KUEUE_WORKLOADS, job.metadata["namespace"],
                                               group_name(job))  # fmt: skip
        except ApiError:
            return None  # Kueue's API not served here, or not granted: the status says less, nothing breaks
        return kueue_wait(workload)

    async def _look_up_snapshot(self, job: TrainingJob) -> SnapshotLookup | None:
        """The checkpoint snapshot of a succeeded job, read by name (the operator watches no snapshots:
        it may only get and create them); None when the decision has nothing to learn from it."""
        name = snapshot_to_look_up(job)
        if name is None:
            return None
        namespace = job.metadata["namespace"]
        try:
            found = await self.cluster.read(SNAPSHOT_API_VERSION, SNAPSHOT_PLURAL, namespace, name)
            if found is None and not await self.cluster.serves(SNAPSHOT_API_VERSION, SNAPSHOT_PLURAL):
                return SnapshotLookup(api_available=False)
        except ApiError as error:
            problem = f"reading VolumeSnapshot {name} was refused ({error.status}): {error.message}"
            return SnapshotLookup(problem=problem)
        return SnapshotLookup(found=found)

    async def reconcile(self, body: dict[str, Any], memory: Memory) -> tuple[dict[str, Any] | None, float | None]:
        """One pass; the job as its status write returned it (if any), and seconds until the next pass."""
        started = time.monotonic()
        try:
            return await self._reconcile(body, memory)
        finally:
            self.metrics.reconcile_seconds.labels("TrainingJob").observe(time.monotonic() - started)

    async def _reconcile(self, body: dict[str, Any], memory: Memory) -> tuple[dict[str, Any] | None, float | None]:
        if body.get("metadata", {}).get("deletionTimestamp"):
            return None, None  # garbage collection removes what it owned
        seen = body_to_decide_from(body, memory)
        try:
            job = parse_job(seen, memory)
        except ValidationError as error:
            memory.unwritten = None
            self.metrics.invalid_specs.labels("TrainingJob").inc()
            problem = describe_validation_error(error)
            plan = invalid(body.get("status") or {}, body["metadata"], problem, datetime.now(UTC))
            return await report(self.cluster, PLURAL, body, plan), None
        window = self.settings.expectation_seconds
        await check_overdue(self.cluster, job, lambda: self._delivered(job), memory, window, self.metrics)
        observation = self.observe(job, memory, await self._look_up_snapshot(job), await self._ask_queue(job))
        plan = decide(observation)
        for refusal in await self._apply_objects(job, plan, memory):
            if refusal.kind == "VolumeSnapshot":
                plan = snapshot_refused(job, plan, refusal.status, refusal.message, datetime.now(UTC))
                continue
            if refusal.refusal.blames_the_spec:
                self.metrics.invalid_specs.labels("TrainingJob").inc()
            plan = refused(replace(observation, now=datetime.now(UTC)), plan, refusal.refusal)
        updated, wait = await self._report(job, body, seen.get("status") or {}, plan, memory)
        if wait is None:
            return updated, plan.requeue_after
        return updated, wait if plan.requeue_after is None else min(plan.requeue_after, wait)

    async def _apply_objects(self, job: TrainingJob, plan: Plan, memory: Memory) -> list[CreationRefusedError]:
        """Creates and deletes what ``plan`` says; the creates the API server refused (the first of
        the gang's, and the snapshot's: each has its own condition)."""
        namespace = job.metadata["namespace"]

        async def create(obj: dict[str, Any]) -> None:
            if obj["kind"] == "NetworkPolicy":  # one of that name the job does not own is refused
                await self.cluster.create_owned(obj)
            else:
                await self.cluster.create(obj)
            if obj["kind"] == "Pod":
                memory.expected[obj["metadata"]["name"]] = time.monotonic()
            elif obj["kind"] == "PodGroup":
                memory.ensured.add(f"podgroup/{obj['metadata']['name']}")

        # the claim and the pod group before the gang (a scheduler must find them), then the gang
        # at once, with its Service and NetworkPolicy: a Service may follow its pods (DNS names
        # appear when it does, before any rank resolves rank 0), and a policy lands long before a
        # scheduled, started rank listens, so neither costs the gang a round trip
        alongside = ("Pod", "Service", "NetworkPolicy")
        first = [o for o in plan.create if o["kind"] not in alongside]
        gang = [o for o in plan.create if o["kind"] in alongside]
        if any(o["kind"] == "Pod" for o in gang):
            await self.cluster.ensure_trainer_identity(namespace)
        refusals: dict[bool, CreationRefusedError] = {}  # by: is it the snapshot's
        for batch in (first, gang):
            results = await asyncio.gather(*(create(o) for o in batch), return_exceptions=True)
            for result in results:
                if isinstance(result, CreationRefusedError):
                    refusals.setdefault(result.kind == "VolumeSnapshot", result)
                elif isinstance(result, BaseException):
                    raise result
        for obj in plan.update:  # a NetworkPolicy rendered otherwise than the one observed
            await self.cluster.apply(obj)
        await asyncio.gather(*(self.cluster.delete_pod(namespace, d) for d in plan.delete))
        await asyncio.gather(*(self.cluster.release_pod(namespace, n, KUEUE_FINALIZER) for n in plan.release))
        await asyncio.gather(*(self.cluster.ungate_pod(namespace, n, GANG_GATE) for n in plan.ungate))
        if plan.delete_resource:
            await self.cluster.delete_custom(PLURAL, namespace, job.metadata["name"])
        return list(refusals.values())

    async def _report(
        self, job: TrainingJob, body: dict[str, Any], seen: dict[str, Any], plan: Plan, memory: Memory
    ) -> tuple[dict[str, Any] | None, float | None]:
        """Writes the decided status, or keeps it unwritten a little while; returns (updated, wait).

        ``seen`` is the status the decision started from (the server's, or one not written yet).
        """
        updated, wait = None, None
        server = body.get("status") or {}
        target = plan.status if plan.status is not None else memory.unwritten
        if target is not None and not plan.delete_resource:
            now = time.monotonic()
            patch, wait = patch_to_write(server, target, plan.routine_progress, memory, self.settings, now)
            if patch is not None:
                meta = job.metadata
                updated = await self.cluster.patch_status(PLURAL, meta["namespace"], meta["name"], patch)
        new = plan.status or seen
        memory.phase = new.get("phase")
        self.metrics.record_phase_change(job.metadata, seen, new, datetime.now(UTC))
        for event in plan.events:
            await self.cluster.post_event(body, event)
        return updated, wait
