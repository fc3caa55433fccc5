"""Observe -> decide -> apply for one InferenceService."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from aidc.api import InferenceService, describe_validation_error
from aidc.api.inferenceservice import InferenceServiceStatus
from aidc.api.trainingjob import ModelStatus
from aidc.management import metrics
from aidc.management.cluster import Cluster, CreationRefusedError
from aidc.management.conditions import set_condition
from aidc.management.patching import merge_patch
from aidc.management.plan import Event
from aidc.management.serving_decision import DeploymentView, ServingObservation, decide, parse_storage_uri
from aidc.management.workers import Memory
from aidc.settings import OperatorSettings

PLURAL = "inferenceservices"
NameIndex = Mapping[tuple[str, str], Any]


@dataclass(frozen=True)
class ServingIndexes:
    """What the watches hold that a pass reads, by (namespace, name) of the InferenceService,
    TrainingJob or claim: views of the Deployments, the Services, the autoscalers' spec hashes,
    the TrainingJobs' exported models, and which claims exist."""

    deployments: NameIndex
    services: NameIndex
    autoscalers: NameIndex
    training_models: NameIndex
    claims: NameIndex


class ServingReconciler:
    """Holds the cluster facade and the watch indexes; ``reconcile`` is one pass for one InferenceService."""

    def __init__(self, cluster: Cluster, settings: OperatorSettings, indexes: ServingIndexes) -> None:
        self.cluster = cluster
        self.settings = settings
        self.indexes = indexes
        # (namespace, TrainingJob) -> InferenceServices serving it, so a new export wakes them
        self.followers: dict[tuple[str, str], set[tuple[str, str]]] = {}

    @staticmethod
    def _one(index: NameIndex, key: tuple[str, str]) -> Any:
        for value in index.get(key, ()):
            return value
        return None

    def observe(self, isvc: InferenceService) -> ServingObservation:
        namespace, name = isvc.metadata["namespace"], isvc.metadata["name"]
        key = (namespace, name)
        source = isvc.spec.model
        job_exists, job_model, claim_exists = False, None, True
        if source.from_training_job is not None:
            job_key = (namespace, source.from_training_job.name)
            self.followers.setdefault(job_key, set()).add(key)
            job_exists = job_key in self.indexes.training_models
            raw = self._one(self.indexes.training_models, job_key)
            job_model = ModelStatus.model_validate(raw) if raw else None
        elif source.storage_uri is not None:
            claim_exists = (namespace, parse_storage_uri(source.storage_uri)[0]) in self.indexes.claims
        deployment = self._one(self.indexes.deployments, key)
        return ServingObservation(
            isvc=isvc,
            now=datetime.now(UTC),
            settings=self.settings,
            training_job_exists=job_exists,
            training_job_model=job_model,
            claim_exists=claim_exists,
            deployment=deployment if isinstance(deployment, DeploymentView) else None,
            service_exists=key in self.indexes.services,
            autoscaler_hash=self._one(self.indexes.autoscalers, key),
        )

    async def reconcile(self, body: dict[str, Any], memory: Memory) -> tuple[dict[str, Any] | None, float | None]:
        started = time.monotonic()
        try:
            return await self._reconcile(body, memory)
        finally:
            metrics.RECONCILE_SECONDS.labels("InferenceService").observe(time.monotonic() - started)

    async def _reconcile(self, body: dict[str, Any], memory: Memory) -> tuple[dict[str, Any] | None, float | None]:
        if body.get("metadata", {}).get("deletionTimestamp"):
            return None, None
        meta = body["metadata"]
        try:
            isvc = InferenceService.model_validate(body)
        except ValidationError as error:
            return await self._write(body, self._invalid(body, describe_validation_error(error))), None
        plan = decide(self.observe(isvc))
        namespace = meta["namespace"]
        try:
            for obj in plan.create:
                await self.cluster.create(obj)
            for obj in plan.update:
                await self.cluster.apply(obj)
            for kind, name in plan.remove:
                await self.cluster.remove(namespace, kind, name)
        except CreationRefusedError as error:
            status = InferenceServiceStatus.model_validate(plan.status or body.get("status") or {})
            conditions = set_condition(
                list(status.conditions),
                "Ready",
                "False",
                "CreationFailed",
                str(error),
                int(meta.get("generation") or 0) or None,
                datetime.now(UTC),
            )
            plan.status = status.model_copy(update={"conditions": conditions, "phase": "Failed"}).to_wire()
            plan.events.append(Event("Warning", "CreationFailed", str(error)))
            plan.requeue(30)
        memory.phase = (plan.status or body.get("status") or {}).get("phase")
        updated = await self._write(body, plan.status)
        for event in plan.events:
            await self.cluster.post_event(body, event)
        return updated, plan.requeue_after

    async def _write(self, body: dict[str, Any], status: dict[str, Any] | None) -> dict[str, Any] | None:
        if status is None:
            return None
        patch = merge_patch(body.get("status") or {}, status)
        if not patch:
            return None
        meta = body["metadata"]
        return await self.cluster.patch_status(PLURAL, meta["namespace"], meta["name"], patch)

    def _invalid(self, body: dict[str, Any], problem: str) -> dict[str, Any]:
        metrics.INVALID_SPECS.labels("InferenceService").inc()
        try:
            status = InferenceServiceStatus.model_validate(body.get("status") or {})
        except ValidationError:
            status = InferenceServiceStatus()
        generation = int(body["metadata"].get("generation") or 0) or None
        conditions = set_condition(
            list(status.conditions),
            "Ready",
            "False",
            "InvalidSpec",
            f"invalid spec: {problem}",
            generation,
            datetime.now(UTC),
        )
        return status.model_copy(
            update={"phase": "Failed", "conditions": conditions, "observed_generation": generation}
        ).to_wire()
