"""The Argo CD health checks of docs/argocd/: the rules on hand-written statuses, then on the
statuses the operator really writes on the test bed (Running, Succeeded, Failed, Suspended)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import yaml
from kubernetes import client

from tests.cluster.resources import condition_is, create, exit_pod, get, patch_spec, pods
from tests.factories import inference_service_body, status_only, training_job_body
from tests.gitops.health import HEALTH_CHECKS, health, script_for


def _condition(type_: str, status: str = "True", message: str = "", generation: int = 1) -> dict[str, Any]:
    return {"type": type_, "status": status, "reason": "Test", "message": message, "observedGeneration": generation}


@pytest.mark.parametrize(
    ("status", "expected", "message"),
    [
        (None, "Progressing", "Waiting for the aidc operator"),
        ({"phase": "Pending", "conditions": []}, "Progressing", "Pending"),
        ({"phase": "Queued"}, "Progressing", "Queued"),
        ({"phase": "Running", "ready": "2/2", "progress": {"percent": 25}}, "Progressing", "Running (2/2 ranks"),
        ({"phase": "Restarting", "conditions": [_condition("Running", "False")]}, "Progressing", "Restarting"),
        ({"phase": "Suspended"}, "Suspended", "suspend"),
        ({"phase": "Succeeded", "conditions": [_condition("Succeeded", message="all ranks exited 0")]},
         "Healthy", "all ranks exited 0"),
        ({"phase": "Failed", "conditions": [_condition("Failed", message="rank 0 exited with code 65")]},
         "Degraded", "rank 0 exited with code 65"),
        ({"phase": "Failed"}, "Degraded", "Failed"),
        # a condition wins over a phase the operator has not rewritten yet
        ({"phase": "Running", "conditions": [_condition("Succeeded", message="done")]}, "Healthy", "done"),
    ],
)  # fmt: skip
def test_training_job_health(status: dict[str, Any] | None, expected: str, message: str) -> None:
    hs = health(status_only("TrainingJob", status))
    assert hs["status"] == expected
    assert message in hs["message"]


@pytest.mark.parametrize(
    ("status", "generation", "expected", "message"),
    [
        (None, 1, "Progressing", "Waiting for the aidc operator"),
        ({"phase": "Pending"}, 1, "Progressing", "Pending"),
        ({"phase": "ModelNotReady", "conditions": [_condition("Ready", "False", "no model yet")]}, 1,
         "Progressing", "no model yet"),
        ({"phase": "Deploying", "conditions": [_condition("Ready", "False", "0/1 replicas ready")]}, 1,
         "Progressing", "0/1 replicas ready"),
        ({"phase": "Ready", "url": "http://d.ns.svc:8080", "conditions": [_condition("Ready")]}, 1,
         "Healthy", "Serving at http://d.ns.svc:8080"),
        # Ready, but for an older spec: the new one is still rolling out
        ({"phase": "Ready", "conditions": [_condition("Ready", generation=1)]}, 2, "Progressing", "generation 2"),
        ({"phase": "Failed", "conditions": [_condition("Ready", "False", "claim models not found")]}, 1,
         "Degraded", "claim models not found"),
    ],
)  # fmt: skip
def test_inference_service_health(status: dict[str, Any] | None, generation: int, expected: str, message: str) -> None:
    hs = health(status_only("InferenceService", status, generation))
    assert hs["status"] == expected
    assert message in hs["message"]


def test_the_argocd_cm_snippet_carries_the_same_scripts() -> None:
    config = yaml.safe_load((HEALTH_CHECKS / "argocd-cm.yaml").read_text())
    assert config["metadata"] == {"name": "argocd-cm", "namespace": "argocd"}
    for kind in ("TrainingJob", "InferenceService"):
        assert config["data"][f"resource.customizations.health.aidc.io_{kind}"] == script_for(kind).read_text()


TJ = "trainingjobs"


@pytest.mark.cluster
def test_health_of_the_statuses_the_operator_writes(
    kube: client.ApiClient, crds_applied: list[str], namespace: str, run_operator: Any, wait_for: Callable[..., Any]
) -> None:
    observed: dict[str, str] = {}
    with run_operator(namespace):
        create(kube, namespace, TJ, training_job_body("good", {"replicas": 2}))
        create(kube, namespace, TJ, training_job_body("bad", {"replicas": 1}))
        create(kube, namespace, TJ, training_job_body("nap", {"replicas": 1}))
        for name in ("good", "bad", "nap"):
            running = wait_for(
                lambda name=name: get(kube, namespace, TJ, name), until=lambda j: condition_is(j, "Running"), timeout=60
            )
            observed[f"{name}: Running"] = health(running)["status"]
        for pod in pods(kube, namespace, "good"):
            exit_pod(kube, namespace, pod.metadata.name, 0)
        exit_pod(kube, namespace, "bad-0", 65)  # a data error: never retried
        patch_spec(kube, namespace, TJ, "nap", {"runPolicy": {"suspend": True}})
        succeeded = wait_for(lambda: get(kube, namespace, TJ, "good"), until=lambda j: condition_is(j, "Succeeded"))
        failed = wait_for(lambda: get(kube, namespace, TJ, "bad"), until=lambda j: condition_is(j, "Failed"))
        suspended = wait_for(
            lambda: get(kube, namespace, TJ, "nap"), until=lambda j: j["status"]["phase"] == "Suspended"
        )
    observed["good: Succeeded"] = health(succeeded)["status"]
    observed["bad: Failed"] = health(failed)["status"]
    observed["nap: Suspended"] = health(suspended)["status"]
    assert observed == {
        "good: Running": "Progressing",
        "bad: Running": "Progressing",
        "nap: Running": "Progressing",
        "good: Succeeded": "Healthy",
        "bad: Failed": "Degraded",
        "nap: Suspended": "Suspended",
    }
    assert "65" in health(failed)["message"]


@pytest.mark.cluster
def test_health_of_a_served_model(
    kube: client.ApiClient, crds_applied: list[str], namespace: str, run_operator: Any, wait_for: Callable[..., Any]
) -> None:
    """An InferenceService on a claim that does not exist stays Progressing; with the model it is Healthy."""
    isvc = inference_service_body("digits", {"model": {"storageUri": "pvc://models/digits"}})
    with run_operator(namespace):
        create(kube, namespace, "inferenceservices", isvc)
        waiting = wait_for(
            lambda: get(kube, namespace, "inferenceservices", "digits"),
            until=lambda s: (s.get("status") or {}).get("conditions"),
        )
        assert health(waiting)["status"] == "Progressing"
        client.CoreV1Api(kube).create_namespaced_persistent_volume_claim(
            namespace,
            {"metadata": {"name": "models"},
             "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}},
        )  # fmt: skip
        ready = wait_for(
            lambda: get(kube, namespace, "inferenceservices", "digits"),
            until=lambda s: condition_is(s, "Ready"),
            timeout=90,
        )
    assert health(ready) == {"status": "Healthy", "message": f"Serving at {ready['status']['url']}"}
