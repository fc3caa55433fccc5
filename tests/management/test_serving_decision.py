"""The InferenceService decision as tables: model resolution, objects, readiness, rollouts."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from aidc.api import InferenceService
from aidc.api.trainingjob import ModelStatus
from aidc.compute.serving import serving_deployment, startup_failure_threshold
from aidc.contract import ANNOTATION_SPEC_HASH
from aidc.management.plan import Plan, Refusal
from aidc.management.serving_decision import DeploymentView, ServingObservation, decide, invalid, refused
from aidc.network.policies import serving_policy
from aidc.settings import OperatorSettings
from tests.factories import inference_service as isvc

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
EXPORTED = ModelStatus(
    claim_name="digits-checkpoints", path="digits/export/final", step=200, best_path="digits/export/best"
)


def run(service: InferenceService, **obs: Any) -> Plan:
    """One decision; the Service and the NetworkPolicy are observed as they should be unless told."""
    obs.setdefault("service_exists", True)
    obs.setdefault("settings", OperatorSettings())
    current = serving_policy(service, obs["settings"].metrics_from)
    obs.setdefault("network_policy_hash", current["metadata"]["annotations"][ANNOTATION_SPEC_HASH])
    return decide(ServingObservation(isvc=service, now=NOW, **obs))


def conditions(plan: Plan) -> dict[str, tuple[str, str]]:
    assert plan.status is not None
    return {c["type"]: (c["status"], c["reason"]) for c in plan.status["conditions"]}


def ready_view(service: InferenceService, model_uri: str, replicas: int = 1, ready: int = 1) -> DeploymentView:
    desired = serving_deployment(service, _model(model_uri), OperatorSettings())
    return DeploymentView(
        spec_hash=desired["metadata"]["annotations"][ANNOTATION_SPEC_HASH],
        model_uri=model_uri,
        generation=1,
        observed_generation=1,
        replicas=replicas,
        updated=replicas,
        ready=ready,
        available=ready,
    )


def _model(uri: str) -> Any:
    from aidc.api.inferenceservice import ServedModel

    claim, _, path = uri.removeprefix("pvc://").partition("/")
    return ServedModel(uri=uri, claim_name=claim, path=path, training_job="digits", step=200)


@pytest.mark.parametrize(
    ("observed", "reason"),
    [
        ({"training_job_exists": False}, "TrainingJobNotFound"),
        ({"training_job_exists": True, "training_job_model": None}, "ModelNotReady"),
    ],
)
def test_waits_for_the_model_without_failing(observed: dict[str, Any], reason: str) -> None:
    plan = run(isvc(), **observed)
    assert conditions(plan)["ModelResolved"] == ("False", reason)
    assert plan.status is not None and plan.status["phase"] == "ModelNotReady"
    assert [o["kind"] for o in plan.create] == []


def test_resolved_model_gets_a_deployment_mounting_the_claim_read_only() -> None:
    plan = run(
        isvc({"resources": {"gpus": 1}}), training_job_exists=True, training_job_model=EXPORTED, service_exists=False
    )
    kinds = {o["kind"]: o for o in plan.create}
    assert set(kinds) == {"Service", "Deployment"}
    pod = kinds["Deployment"]["spec"]["template"]["spec"]
    assert pod["volumes"][0]["persistentVolumeClaim"] == {"claimName": "digits-checkpoints", "readOnly": True}
    mount = pod["containers"][0]["volumeMounts"][0]
    assert mount == {"name": "model", "mountPath": "/mnt/model", "readOnly": True, "subPath": "digits/export/final"}
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert pod["containers"][0]["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert plan.status is not None and plan.status["model"]["uri"] == "pvc://digits-checkpoints/digits/export/final"
    assert conditions(plan)["Ready"] == ("False", "Deploying")


def test_best_export_and_storage_uri() -> None:
    best = run(
        isvc({"model": {"fromTrainingJob": {"name": "digits", "export": "Best"}}}),
        training_job_exists=True,
        training_job_model=EXPORTED,
    )
    assert best.status is not None and best.status["model"]["path"] == "digits/export/best"
    direct = run(isvc({"model": {"storageUri": "pvc://models/mnist/v3"}}))
    assert direct.status is not None and direct.status["model"]["claimName"] == "models"
    missing = run(isvc({"model": {"storageUri": "pvc://models/mnist/v3"}}), claim_exists=False)
    assert conditions(missing)["ModelResolved"] == ("False", "ClaimNotFound")


def test_ready_only_when_every_pod_serves_the_resolved_model() -> None:
    service = isvc()
    uri = "pvc://digits-checkpoints/digits/export/final"
    ready = run(service, training_job_exists=True, training_job_model=EXPORTED, deployment=ready_view(service, uri))
    assert conditions(ready)["Ready"] == ("True", "Ready")
    assert ready.status is not None and ready.status["url"] == "http://digits.ml.svc.cluster.local:8080"
    crashing = run(
        service, training_job_exists=True, training_job_model=EXPORTED, deployment=ready_view(service, uri, ready=0)
    )
    assert conditions(crashing)["Ready"] == ("False", "RollingOut")


def test_a_new_export_rolls_the_deployment_and_keeps_the_previous_model() -> None:
    old_uri = "pvc://digits-checkpoints/digits/export/final"
    served = {"model": {"uri": old_uri, "claimName": "digits-checkpoints", "path": "digits/export/final"}}
    service = isvc(status=served)
    newer = EXPORTED.model_copy(update={"path": "digits-v2/export/final", "step": 400})
    plan = run(service, training_job_exists=True, training_job_model=newer, deployment=ready_view(service, old_uri))
    assert [o["kind"] for o in plan.update] == ["Deployment"]
    assert plan.status is not None and plan.status["previousModel"]["uri"] == old_uri
    assert conditions(plan)["Ready"][0] == "False"  # old pods do not serve the new model


def test_autoscaling_creates_an_hpa_and_leaves_replicas_to_it() -> None:
    plan = run(
        isvc({"autoscaling": {"minReplicas": 2, "maxReplicas": 5}}),
        training_job_exists=True,
        training_job_model=EXPORTED,
    )
    kinds = {o["kind"]: o for o in plan.create}
    assert kinds["HorizontalPodAutoscaler"]["spec"]["maxReplicas"] == 5
    assert "replicas" not in kinds["Deployment"]["spec"]
    removed = run(isvc(), training_job_exists=True, training_job_model=EXPORTED, autoscaler_hash="abc")
    assert removed.remove == [("HorizontalPodAutoscaler", "digits")]


def test_startup_probe_grows_with_the_model() -> None:
    small, large = _model("pvc://c/p"), _model("pvc://c/p").model_copy(update={"size_bytes": 30 * 2**30})
    assert startup_failure_threshold(small) == 12
    assert startup_failure_threshold(large) > 100


@pytest.mark.parametrize(
    ("kind", "code", "reason", "retried_in"),
    [
        ("Deployment", 403, "CreationFailed", 30),  # a quota or a policy may pass later
        ("Service", 409, "CreationFailed", 30),  # a name another owner holds
        ("Deployment", 422, "InvalidSpec", None),  # what it is: only a spec change helps
        ("Deployment", 400, "InvalidSpec", None),
        ("HorizontalPodAutoscaler", 422, "CreationFailed", 30),
    ],
)
def test_a_refused_object_fails_the_service_with_the_reason(
    kind: str, code: int, reason: str, retried_in: float | None
) -> None:
    plan = run(isvc(), training_job_exists=True, training_job_model=EXPORTED, service_exists=False)
    answer = refused({}, {"generation": 1}, plan, Refusal(kind, "digits", code, "denied"), NOW)
    assert answer.status is not None and (answer.status["phase"], answer.status["reason"]) == ("Failed", reason)
    assert conditions(answer)["Ready"] == ("False", reason)
    assert f"creating {kind} digits was refused ({code}): denied" in answer.status["conditions"][-1]["message"]
    assert [(e.type, e.reason) for e in answer.events][-1] == ("Warning", reason)
    assert answer.requeue_after == retried_in


def test_an_unusable_spec_fails_the_service() -> None:
    plan = invalid({"phase": "Ready"}, {"generation": 2}, "spec.model: set one", NOW)
    assert plan.status is not None and (plan.status["phase"], plan.status["observedGeneration"]) == ("Failed", 2)
    assert conditions(plan)["Ready"] == ("False", "InvalidSpec")


@pytest.mark.parametrize(
    ("observed_hash", "settings", "created", "updated"),
    [
        (None, OperatorSettings(), ["digits-serving"], []),
        ("0123456789abcdef", OperatorSettings(), [], ["digits-serving"]),  # e.g. spec.network.allowFrom changed
        ("current", OperatorSettings(), [], []),
        (None, OperatorSettings(network_policy=False), [], []),
    ],
)
def test_the_servers_network_policy_is_kept_whatever_the_model(
    observed_hash: str | None, settings: OperatorSettings, created: list[str], updated: list[str]
) -> None:
    obs: dict[str, Any] = {"settings": settings}
    if observed_hash != "current":
        obs["network_policy_hash"] = observed_hash
    for observed in ({"training_job_exists": False}, {"training_job_exists": True, "training_job_model": EXPORTED}):
        plan = run(isvc(), **obs, **observed)
        assert [o["metadata"]["name"] for o in plan.create if o["kind"] == "NetworkPolicy"] == created
        assert [o["metadata"]["name"] for o in plan.update if o["kind"] == "NetworkPolicy"] == updated


def test_replacing_the_policy_does_not_take_readiness_away() -> None:
    """Only a Deployment change rolls pods: a policy (or autoscaler) rewrite leaves Ready as it is."""
    service = isvc()
    uri = "pvc://digits-checkpoints/digits/export/final"
    plan = run(
        service,
        training_job_exists=True,
        training_job_model=EXPORTED,
        deployment=ready_view(service, uri),
        network_policy_hash="0123456789abcdef",
    )
    assert [o["kind"] for o in plan.update] == ["NetworkPolicy"]
    assert conditions(plan)["Ready"] == ("True", "Ready")


def test_changing_who_may_connect_changes_the_policy() -> None:
    open_to_all = isvc({"network": {"allowFrom": [{"namespaceSelector": {}}]}})
    default = serving_policy(isvc(), ())
    changed = serving_policy(open_to_all, ())
    assert default["metadata"]["annotations"] != changed["metadata"]["annotations"]
    assert changed["spec"]["ingress"][0]["from"] == [{"namespaceSelector": {}}]


@pytest.mark.parametrize(
    ("task", "protocol", "openai"),
    [("language-model", "v2+openai", True), ("classifier", "v2", False), (None, "v2", False)],
)
def test_a_language_models_server_must_serve_the_openai_routes_and_the_status_says_where(
    task: str | None, protocol: str, openai: bool
) -> None:
    from aidc.api.inferenceservice import ServedModel

    service = isvc()
    exported = EXPORTED.model_copy(update={"task": task})
    uri = "pvc://digits-checkpoints/digits/export/final"
    model = ServedModel(uri=uri, claim_name="digits-checkpoints", path="digits/export/final", training_job="digits",
                        step=200, task=task)  # fmt: skip
    desired = serving_deployment(service, model, OperatorSettings())
    env = {e["name"]: e.get("value") for e in desired["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert (env.get("AIDC_OPENAI") == "required") is openai
    view = DeploymentView(
        spec_hash=desired["metadata"]["annotations"][ANNOTATION_SPEC_HASH], model_uri=uri, generation=1,
        observed_generation=1, replicas=1, updated=1, ready=1, available=1,
    )  # fmt: skip
    plan = run(service, training_job_exists=True, training_job_model=exported, deployment=view)
    assert conditions(plan)["Ready"] == ("True", "Ready")
    assert plan.status is not None and plan.status["protocol"] == protocol
    assert plan.status["model"].get("task") == task
    base = "http://digits.ml.svc.cluster.local:8080"
    assert plan.status.get("openaiUrl") == (f"{base}/v1" if openai else None)


def test_a_storage_uri_model_says_what_it_holds() -> None:
    plan = run(isvc({"model": {"storageUri": "pvc://models/llm/v1", "task": "language-model"}}))
    assert plan.status is not None and plan.status["model"]["task"] == "language-model"
    (deployment,) = [o for o in plan.create if o["kind"] == "Deployment"]
    env = {e["name"]: e.get("value") for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["AIDC_OPENAI"] == "required"
