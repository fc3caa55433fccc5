"""The InferenceService reconcile decision: a pure function of what was observed.

Resolve the model (a TrainingJob's export, or a path on a claim), then keep a Deployment, a
Service and, with autoscaling, a HorizontalPodAutoscaler as they should be. Ready means the
pods that serve *the resolved model* are ready: a rollout in progress or a crash loop is not.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from aidc import contract
from aidc.api.inferenceservice import InferenceService, InferenceServiceStatus, ServedModel
from aidc.api.trainingjob import ModelStatus
from aidc.compute.serving import autoscaler, serves_openai, serving_deployment
from aidc.management.conditions import set_condition
from aidc.management.plan import Event, Plan, Refusal
from aidc.management.status_draft import StatusDraft, generation_of
from aidc.network.policies import serving_policy
from aidc.network.serving import inference_url, serving_service
from aidc.settings import OperatorSettings

# a refused object is tried again this soon (a quota freed, a policy fixed)
REFUSED_RETRY_SECONDS = 30


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
    # spec hash of the serving NetworkPolicy this InferenceService controls; None: there is none
    network_policy_hash: str | None = None


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
        served = ServedModel(uri=source.storage_uri, claim_name=claim, path=folder, task=source.task)
        return served, "Resolved", source.storage_uri
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
        task=exported.task,
    )
    return model, "Resolved", f"{uri} from TrainingJob {job.name} (step {exported.step})"


class _Decision(StatusDraft[InferenceServiceStatus]):
    """One pass: the status drafted (see StatusDraft)."""

    def __init__(self, obs: ServingObservation) -> None:
        old = obs.isvc.status or InferenceServiceStatus()
        super().__init__(old, obs.isvc.status is not None, generation_of(obs.isvc.metadata), obs.now)
        self.obs = obs
        self.isvc = obs.isvc


def decide(obs: ServingObservation) -> Plan:
    """The plan for one InferenceService."""
    d = _Decision(obs)
    isvc = obs.isvc
    model, reason, message = resolve_model(obs)
    d.update(observed_generation=d.generation, selector=f"{contract.LABEL_SERVICE_NAME}={isvc.metadata['name']}")
    if not obs.service_exists:
        d.plan.create.append(serving_service(isvc))
    if obs.settings.network_policy:
        d.plan.keep(serving_policy(isvc, obs.settings.metrics_from), obs.network_policy_hash)
    if model is None:
        d.condition("ModelResolved", False, reason, message)
        d.condition("Ready", False, reason, message)
        if obs.deployment is None:  # keep serving the previous model while a new one is awaited
            d.phase("ModelNotReady", reason, message)
        d.plan.requeue(obs.settings.resync_seconds)
    else:
        d.condition("ModelResolved", True, "Resolved", message)
        _serve(d, model)
    if obs.deployment is None:
        _report_no_deployment(d, model)
    else:
        _report_deployment(d, obs.deployment, model)
    return d.done()


def _serve(d: _Decision, model: ServedModel) -> None:
    """The resolved model, and the Deployment and autoscaler that serve it as they should be."""
    served, isvc, obs = d.status.model, d.isvc, d.obs
    if served is not None and served.uri != model.uri:
        d.update(previous_model=served)
        d.event("ModelChanged", f"rolling out {model.uri} (was {served.uri})")
    d.update(model=model)
    desired = serving_deployment(isvc, model, obs.settings)
    if obs.deployment is None:
        d.plan.create.append(desired)
    elif obs.deployment.spec_hash != desired["metadata"]["annotations"][contract.ANNOTATION_SPEC_HASH]:
        d.plan.update.append(desired)
    wanted = autoscaler(isvc)
    if wanted is None and obs.autoscaler_hash is not None:
        d.plan.remove.append(("HorizontalPodAutoscaler", str(isvc.metadata["name"])))
    elif wanted is not None and obs.autoscaler_hash is None:
        d.plan.create.append(wanted)
    elif wanted is not None and obs.autoscaler_hash != wanted["metadata"]["annotations"][contract.ANNOTATION_SPEC_HASH]:
        d.plan.update.append(wanted)


def _report_no_deployment(d: _Decision, model: ServedModel | None) -> None:
    d.update(replicas=0, ready_replicas=0)
    if model is not None:
        d.condition("Available", False, "Deploying", "creating the Deployment")
        d.condition("Ready", False, "Deploying", "creating the Deployment")
        d.phase("Deploying", "Deploying", f"deploying {model.uri}")


def _report_deployment(d: _Decision, deployment: DeploymentView, model: ServedModel | None) -> None:
    """Ready means the pods that serve the resolved model are ready: not a rollout, not a crash loop."""
    url = inference_url(d.isvc, d.obs.settings.cluster_domain)
    d.update(replicas=deployment.replicas, ready_replicas=deployment.ready, url=url)
    if model is not None:
        language = serves_openai(model)
        d.update(protocol="v2+openai" if language else "v2", openai_url=f"{url}/v1" if language else None)
    available = deployment.available > 0
    d.condition(
        "Available",
        available,
        "MinimumReplicasAvailable" if available else "NoReplicasAvailable",
        f"{deployment.available}/{deployment.replicas} serving pods available",
    )
    if deployment.failure:
        d.condition("Ready", False, "ProgressDeadlineExceeded", deployment.failure)
        d.phase("Failed", "ProgressDeadlineExceeded", deployment.failure, warning=True)
    elif model is not None and not _rolling(d.plan) and _rolled_out(deployment, model):
        d.condition("Ready", True, "Ready", f"{deployment.ready}/{deployment.replicas} pods serve {model.uri}")
        d.phase("Ready", "Ready", f"serving {model.uri} at {url}")
    elif model is not None:
        message = (
            f"{deployment.ready}/{deployment.replicas} pods ready, {deployment.updated} on {model.uri}; "
            "a server is ready once its model is loaded and a warm-up inference passed"
        )
        d.condition("Ready", False, "RollingOut", message)
        d.phase("Deploying", "Deploying", message)


def _rolling(plan: Plan) -> bool:
    """This pass changes the Deployment: its pods are about to be replaced."""
    return any(obj["kind"] == "Deployment" for obj in plan.update)


def _rolled_out(deployment: DeploymentView, model: ServedModel) -> bool:
    """Every pod of the Deployment runs the current template, serves ``model`` and is ready."""
    return (
        deployment.model_uri == model.uri
        and deployment.observed_generation >= deployment.generation
        and deployment.updated >= deployment.replicas
        and deployment.ready >= deployment.replicas
        and deployment.replicas > 0
    )


def refused(status: dict[str, Any], metadata: dict[str, Any], plan: Plan, refusal: Refusal, now: datetime) -> Plan:
    """``plan`` once the API server refused one of its objects: the refusal is why it is not Ready.

    A serving Deployment refused for what it is (400 or 422: a ``podTemplate`` override the schema
    cannot check) can never be created: InvalidSpec, tried again only at the resync. Any other
    refusal (quota, admission policy, a name taken) is CreationFailed and tried again soon.
    ``status`` is the InferenceService's status as the server has it.
    """
    drafted = InferenceServiceStatus.model_validate(plan.status or status)
    reason = "InvalidSpec" if refusal.blames_the_spec else "CreationFailed"
    message = f"invalid spec: {refusal}" if refusal.blames_the_spec else str(refusal)
    conditions = set_condition(
        list(drafted.conditions), "Ready", "False", reason, message, generation_of(metadata), now
    )
    answer = replace(
        plan,
        status=drafted.model_copy(update={"conditions": conditions, "phase": "Failed", "reason": reason}).to_wire(),
        events=[*plan.events, Event("Warning", reason, message)],
    )
    if not refusal.blames_the_spec:
        answer.requeue(REFUSED_RETRY_SECONDS)
    return answer


def invalid(status: dict[str, Any], metadata: dict[str, Any], problem: str, now: datetime) -> Plan:
    """A spec the API server admitted but the operator cannot use: Failed with InvalidSpec, never a crash."""
    try:
        old = InferenceServiceStatus.model_validate(status)
    except ValidationError:
        old = InferenceServiceStatus()
    generation = generation_of(metadata)
    conditions = set_condition(
        list(old.conditions), "Ready", "False", "InvalidSpec", f"invalid spec: {problem}", generation, now
    )
    update = {"phase": "Failed", "reason": "InvalidSpec", "conditions": conditions, "observed_generation": generation}
    new = old.model_copy(update=update)
    return Plan(status=new.to_wire())
