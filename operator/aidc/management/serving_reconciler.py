"""parse -> observe -> decide (pure) -> apply -> report, for one InferenceService."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from aidc.api import InferenceService, describe_validation_error
from aidc.api.trainingjob import ModelStatus
from aidc.identity.names import serving_policy_name
from aidc.management.cluster import Cluster, CreationRefusedError
from aidc.management.metrics import OperatorMetrics
from aidc.management.observe import owned_hash
from aidc.management.plan import Plan
from aidc.management.report import report
from aidc.management.serving_decision import (
    DeploymentView,
    ServingObservation,
    decide,
    invalid,
    parse_storage_uri,
    refused,
)
from aidc.management.workers import Memory
from aidc.settings import OperatorSettings

PLURAL = "inferenceservices"
NameIndex = Mapping[tuple[str, str], Any]


@dataclass(frozen=True)
class ServingIndexes:
    """What the watches hold that a pass reads, by (namespace, name) of the InferenceService,
    TrainingJob or claim: views of the Deployments, the Services, the autoscalers' spec hashes,
    the TrainingJobs' exported models, and which claims exist; the NetworkPolicies by their own
    (namespace, name), as (controller uid, spec hash)."""

    deployments: NameIndex
    services: NameIndex
    autoscalers: NameIndex
    training_models: NameIndex
    claims: NameIndex
    policies: NameIndex


class ServingReconciler:
    """Holds the cluster facade and the watch indexes; ``reconcile`` is one pass for one InferenceService."""

    def __init__(
        self, cluster: Cluster, settings: OperatorSettings, indexes: ServingIndexes, metrics: OperatorMetrics
    ) -> None:
        self.cluster = cluster
        self.settings = settings
        self.indexes = indexes
        self.metrics = metrics
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
            network_policy_hash=owned_hash(self.indexes.policies, (namespace, serving_policy_name(isvc)), isvc),
        )

    async def reconcile(self, body: dict[str, Any], memory: Memory) -> tuple[dict[str, Any] | None, float | None]:
        started = time.monotonic()
        try:
            return await self._reconcile(body, memory)
        finally:
            self.metrics.reconcile_seconds.labels("InferenceService").observe(time.monotonic() - started)

    async def _reconcile(self, body: dict[str, Any], memory: Memory) -> tuple[dict[str, Any] | None, float | None]:
        if body.get("metadata", {}).get("deletionTimestamp"):
            return None, None
        status, meta = body.get("status") or {}, body["metadata"]
        try:
            isvc = InferenceService.model_validate(body)
        except ValidationError as error:
            self.metrics.invalid_specs.labels("InferenceService").inc()
            plan = invalid(status, meta, describe_validation_error(error), datetime.now(UTC))
            return await report(self.cluster, PLURAL, body, plan), None
        plan = decide(self.observe(isvc))
        refusal = await self._ensure_identity(isvc) or await self._apply_objects(meta["namespace"], plan)
        if refusal is not None:
            if refusal.refusal.blames_the_spec:
                self.metrics.invalid_specs.labels("InferenceService").inc()
            plan = refused(status, meta, plan, refusal.refusal, datetime.now(UTC))
        memory.phase = (plan.status or status).get("phase")
        return await report(self.cluster, PLURAL, body, plan), plan.requeue_after

    async def _ensure_identity(self, isvc: InferenceService) -> CreationRefusedError | None:
        """The reviewing identity, before a Deployment that runs as it (``spec.auth.kubernetes``)."""
        if isvc.spec.auth is None or isvc.spec.auth.kubernetes is None:
            return None
        try:
            role = self.settings.inference_reviewer_role
            await self.cluster.ensure_inference_identity(isvc.metadata["namespace"], role)
        except CreationRefusedError as error:
            return error
        return None

    async def _apply_objects(self, namespace: str, plan: Plan) -> CreationRefusedError | None:
        """Creates, updates and removes what ``plan`` says, in that order; the first refusal stops it."""
        try:
            for obj in plan.create:
                await self.cluster.create_owned(obj)
            for obj in plan.update:
                await self.cluster.apply(obj)
            for kind, name in plan.remove:
                await self.cluster.remove(namespace, kind, name)
        except CreationRefusedError as error:
            return error
        return None
