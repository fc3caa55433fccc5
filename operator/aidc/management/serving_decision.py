"""The InferenceService reconcile decision: a pure function of what was observed.

Resolve the model (a TrainingJob's export, or a path on a claim), then keep a Deployment, a
Service and, with autoscaling, a HorizontalPodAutoscaler as they should be. Ready means the
pods that serve *the resolved model* are ready: a rollout in progress or a crash loop is not.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from aidc import contract
from aidc.api.common import ConditionStatus
from aidc.api.inferenceservice import InferenceService, InferenceServiceStatus, ServedModel
from aidc.api.trainingjob import ModelStatus
from aidc.compute.serving import autoscaler, serving_deployment
from aidc.management.conditions import set_condition
from aidc.management.plan import Event, Plan
from aidc.network.serving import inference_url, serving_service
from aidc.settings import OperatorSettings


@dataclass(frozen=True)
class DeploymentView:
    """What the operator reads of its Deployment."""

    spec_hash: str | None
    model_uri: str | None
    generation: int = 0
    observed_generation: int = 0
    replicas: int = 0  # desired, as the Deployment has it now
    updated: int = 0
    ready: int = 0
    available: int = 0
    failure: str | None = None  # Progressing=False (ProgressDeadlineExceeded) message


def deployment_view(body: dict[str, Any]) -> DeploymentView:
    meta, spec, status = body.get("metadata") or {}, body.get("spec") or {}, body.get("status") or {}
    template_meta = (spec.get("template") or {}).get("metadata") or {}
    conditions = status.get("conditions") or []
    progressing: dict[str, Any] = next((c for c in conditions if c.get("type") == "Progressing"), {})
    return DeploymentView(
        spec_hash=(meta.get("annotations") or {}).get(contract.ANNOTATION_SPEC_HASH),
        model_uri=(template_meta.get("annotations") or {}).get(contract.ANNOTATION_MODEL_URI),
        generation=int(meta.get("generation") or 0),
        observed_generation=int(status.get("observedGeneration") or 0),
        replicas=int(spec["replicas"]) if spec.get("replicas") is not None else 1,
        updated=int(status.get("updatedReplicas") or 0),
        ready=int(status.get("readyReplicas") or 0),
        available=int(status.get("availableReplicas") or 0),
        failure=progressing.get("message") if progressing.get("status") == "False" else None,
    )


@dataclass(frozen=True)
class ServingObservation:
    isvc: InferenceService
    now: datetime
    settings: OperatorSettings
    training_job_exists: bool = False
    training_job_model: ModelStatus | None = None
    claim_exists: bool = True
    deployment: DeploymentView | None = None
    service_exists: bool = False
    autoscaler_hash: str | None = None


def parse_storage_uri(uri: str) -> tuple[str, str]:
    """``pvc://claim/some/folder`` -> (claim, folder)."""
    rest = uri.removeprefix("pvc://")
    claim, _, path = rest.partition("/")
    return claim, path.strip("/")


def resolve_model(obs: ServingObservation) -> tuple[ServedModel | None, str, str]:
    """The model to serve, or None with the reason and message of why not yet."""
    source = obs.isvc.spec.model
    if source.storage_uri is not None:
        claim, folder = parse_storage_uri(source.storage_uri)
        if not obs.claim_exists:
            return None, "ClaimNotFound", f"claim {claim} of {source.storage_uri} does not exist"
        return ServedModel(uri=source.storage_uri, claim_name=claim, path=folder), "Resolved", source.storage_uri
    job = source.from_training_job
    assert job is not None  # the model's CEL rule: one of the two is set
    if not obs.training_job_exists:
        return None, "TrainingJobNotFound", f"TrainingJob {job.name} does not exist (yet)"
    exported = obs.training_job_model
    path: str | None = None
    if exported is not None:
        path = exported.best_path if job.export == "Best" else exported.path
    if exported is None or path is None:
        which = "best-validation" if job.export == "Best" else "final"
        return None, "ModelNotReady", f"waiting for TrainingJob {job.name} to export its {which} model"
    uri = f"pvc://{exported.claim_name}/{path}"
    model = ServedModel(
        uri=uri,
        claim_name=exported.claim_name,
        path=path,
        training_job=job.name,
        step=exported.step,
        size_bytes=exported.size_bytes,
    )
    return model, "Resolved", f"{uri} from TrainingJob {job.name} (step {exported.step})"


def decide(obs: ServingObservation) -> Plan:
    """The plan for one InferenceService."""
    isvc = obs.isvc
    plan = Plan()
    old = isvc.status or InferenceServiceStatus()
    status = old.model_copy()
    generation = int(isvc.metadata.get("generation") or 0) or None

    def condition(type_: str, value: bool, reason: str, message: str) -> None:
        nonlocal status
        state: ConditionStatus = "True" if value else "False"
        conditions = set_condition(list(status.conditions), type_, state, reason, message, generation, obs.now)
        status = status.model_copy(update={"conditions": conditions})

    def phase(new: str, reason: str, message: str, warning: bool = False) -> None:
        nonlocal status
        if status.phase != new:
            plan.events.append(Event("Warning" if warning else "Normal", reason, message))
        status = status.model_copy(update={"phase": new})

    model, reason, message = resolve_model(obs)
    status = status.model_copy(
        update={"observed_generation": generation, "selector": f"{contract.LABEL_SERVICE_NAME}={isvc.metadata['name']}"}
    )
    if not obs.service_exists:
        plan.create.append(serving_service(isvc))
    if model is None:
        condition("ModelResolved", False, reason, message)
        condition("Ready", False, reason, message)
        if obs.deployment is None:  # keep serving the previous model while a new one is awaited
            phase("ModelNotReady", reason, message)
        plan.requeue(obs.settings.resync_seconds)
    else:
        condition("ModelResolved", True, "Resolved", message)
        served = status.model
        if served is not None and served.uri != model.uri:
            status = status.model_copy(update={"previous_model": served})
            plan.events.append(Event("Normal", "ModelChanged", f"rolling out {model.uri} (was {served.uri})"))
        status = status.model_copy(update={"model": model})
        desired = serving_deployment(isvc, model, obs.settings)
        if obs.deployment is None:
            plan.create.append(desired)
        elif obs.deployment.spec_hash != desired["metadata"]["annotations"][contract.ANNOTATION_SPEC_HASH]:
            plan.update.append(desired)
        wanted_autoscaler = autoscaler(isvc)
        if wanted_autoscaler is None and obs.autoscaler_hash is not None:
            plan.remove.append(("HorizontalPodAutoscaler", str(isvc.metadata["name"])))
        elif wanted_autoscaler is not None and obs.autoscaler_hash is None:
            plan.create.append(wanted_autoscaler)
        elif (
            wanted_autoscaler is not None
            and obs.autoscaler_hash != wanted_autoscaler["metadata"]["annotations"][contract.ANNOTATION_SPEC_HASH]
        ):
            plan.update.append(wanted_autoscaler)

    deployment = obs.deployment
    url = inference_url(isvc, obs.settings.cluster_domain)
    if deployment is None:
        status = status.model_copy(update={"replicas": 0, "ready_replicas": 0})
        if model is not None:
            condition("Available", False, "Deploying", "creating the Deployment")
            condition("Ready", False, "Deploying", "creating the Deployment")
            phase("Deploying", "Deploying", f"deploying {model.uri}")
    else:
        status = status.model_copy(
            update={"replicas": deployment.replicas, "ready_replicas": deployment.ready, "url": url}
        )
        available = deployment.available > 0
        condition(
            "Available",
            available,
            "MinimumReplicasAvailable" if available else "NoReplicasAvailable",
            f"{deployment.available}/{deployment.replicas} serving pods available",
        )
        current = (
            model is not None
            and deployment.model_uri == model.uri
            and not plan.update
            and deployment.observed_generation >= deployment.generation
            and deployment.updated >= deployment.replicas
            and deployment.ready >= deployment.replicas
            and deployment.replicas > 0
        )
        if deployment.failure:
            condition("Ready", False, "ProgressDeadlineExceeded", deployment.failure)
            phase("Failed", "ProgressDeadlineExceeded", deployment.failure, warning=True)
        elif current and model is not None:
            condition("Ready", True, "Ready", f"{deployment.ready}/{deployment.replicas} pods serve {model.uri}")
            phase("Ready", "Ready", f"serving {model.uri} at {url}")
        elif model is not None:
            message = (
                f"{deployment.ready}/{deployment.replicas} pods ready, {deployment.updated} on {model.uri}; "
                "a server is ready once its model is loaded and a warm-up inference passed"
            )
            condition("Ready", False, "RollingOut", message)
            phase("Deploying", "Deploying", message)
    new = status.to_wire()
    if isvc.status is None or new != old.to_wire():
        plan.status = new
    return plan
