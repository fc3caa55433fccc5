"""InferenceServices on the real control plane: resolution from a TrainingJob, objects, readiness, rollout.

kwok plays the serving pods (their readiness is kwok's); the model server's own readiness
(model loaded, warm-up passed) is tested with real HTTP in tests/serving.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from kubernetes import client

from tests.cluster.resources import annotate_pod, condition, condition_is, create, get
from tests.factories import inference_service_body, training_job_body

pytestmark = pytest.mark.cluster
ISVC = "inferenceservices"


@pytest.fixture(autouse=True)
def _quiet_operator(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIDC_METRICS_PORT", "0")
    monkeypatch.setenv("AIDC_RESYNC_SECONDS", "5")


def create_models_claim(core: client.CoreV1Api, namespace: str) -> None:
    """A claim named ``models`` for ``storageUri: pvc://models/...`` (it binds to a pool volume)."""
    core.create_namespaced_persistent_volume_claim(
        namespace,
        {
            "metadata": {"name": "models"},
            "spec": {"accessModes": ["ReadOnlyMany"], "resources": {"requests": {"storage": "1Gi"}}},
        },
    )


def export(kube: client.ApiClient, namespace: str, pod: str, path: str, step: int) -> None:
    """What rank 0's heartbeat says once it exported its model (see tests/trainer for the real one)."""
    beat = {"step": step, "totalSteps": step, "model": {"path": path, "step": step}, "time": "2026-11-29T07:00:00Z"}
    annotate_pod(kube, namespace, pod, {"aidc.io/progress": json.dumps(beat)})


def test_serves_a_training_jobs_export_and_rolls_out_a_new_one(
    kube: client.ApiClient, crds_applied: list[str], namespace: str, run_operator: Any, wait_for: Callable[..., Any]
) -> None:
    apps = client.AppsV1Api(kube)
    with run_operator(namespace):
        create(
            kube, namespace, "trainingjobs", training_job_body("digits", {"storage": {"checkpoints": {"size": "1Gi"}}})
        )
        create(
            kube, namespace, ISVC, inference_service_body("digits", {"model": {"fromTrainingJob": {"name": "digits"}}})
        )
        waiting = wait_for(
            lambda: get(kube, namespace, ISVC, "digits"),
            until=lambda s: (s.get("status") or {}).get("phase") == "ModelNotReady",
        )
        assert condition(waiting, "ModelResolved")["reason"] in ("ModelNotReady", "TrainingJobNotFound")  # type: ignore[index]
        wait_for(
            lambda: get(kube, namespace, "trainingjobs", "digits"),
            until=lambda j: condition_is(j, "Running"),
            timeout=60,
        )
        export(kube, namespace, "digits-0", "export/final", 100)
        ready = wait_for(
            lambda: get(kube, namespace, ISVC, "digits"),
            until=lambda s: condition_is(s, "Ready"),
            timeout=60,
            message="Ready once the model is exported and the pod is ready",
        )
        assert ready["status"]["model"]["uri"] == "pvc://digits-checkpoints/digits/export/final"
        assert ready["status"]["url"] == f"http://digits.{namespace}.svc.cluster.local:8080"
        deployment = apps.read_namespaced_deployment("digits", namespace)
        volume = deployment.spec.template.spec.volumes[0].persistent_volume_claim
        assert volume.claim_name == "digits-checkpoints" and volume.read_only
        assert deployment.metadata.owner_references[0].kind == "InferenceService"
        # the job and the InferenceService share a name: each has a Service of its own
        service = client.CoreV1Api(kube).read_namespaced_service("digits", namespace)
        assert service.spec.ports[0].port == 8080 and service.metadata.owner_references[0].kind == "InferenceService"
        gang = client.CoreV1Api(kube).read_namespaced_service("digits-gang", namespace)
        assert gang.spec.cluster_ip == "None" and gang.metadata.owner_references[0].kind == "TrainingJob"
        # a new export: the Deployment rolls, the previous model stays in status for a rollback
        export(kube, namespace, "digits-0", "export/best-v2", 200)
        rolled = wait_for(
            lambda: get(kube, namespace, ISVC, "digits"),
            until=lambda s: s["status"]["model"]["step"] == 200 and condition_is(s, "Ready"),
            timeout=60,
        )
        assert rolled["status"]["previousModel"]["uri"] == "pvc://digits-checkpoints/digits/export/final"
        mount = apps.read_namespaced_deployment("digits", namespace).spec.template.spec.containers[0].volume_mounts[0]
        assert mount.sub_path == "digits/export/best-v2"


def test_crash_looping_servers_are_not_ready(
    kube: client.ApiClient, crds_applied: list[str], namespace: str, run_operator: Any, wait_for: Callable[..., Any]
) -> None:
    core = client.CoreV1Api(kube)
    create_models_claim(core, namespace)
    crash = {"aidc.io/kwok-exit-code": "1", "aidc.io/kwok-exit-after": "1s"}
    spec = {"model": {"storageUri": "pvc://models/mnist"}, "podTemplate": {"annotations": crash}}
    with run_operator(namespace):
        create(kube, namespace, ISVC, inference_service_body("broken", spec))
        wait_for(
            lambda: core.list_namespaced_pod(namespace, label_selector="aidc.io/inference-service=broken").items,
            until=lambda pods: any(
                (p.status.container_statuses or [None])[0] is not None
                and p.status.container_statuses[0].restart_count > 0
                for p in pods
            ),
            timeout=60,
            message="the server crash-loops",
        )
        # kwok runs the pod Ready for its first second, so the service may have been Ready then:
        # what must hold is that a crash loop takes it out of Ready (the operator follows the
        # Deployment's readiness, a moment after the restart)
        status = wait_for(
            lambda: get(kube, namespace, ISVC, "broken"),
            until=lambda s: not condition_is(s, "Ready"),
            timeout=30,
            message="the crash loop reported as not Ready",
        )
        assert status["status"]["phase"] != "Ready"


def test_storage_uri_on_a_missing_claim_waits_with_a_reason(
    kube: client.ApiClient, crds_applied: list[str], namespace: str, run_operator: Any, wait_for: Callable[..., Any]
) -> None:
    with run_operator(namespace):
        create(kube, namespace, ISVC, inference_service_body("nowhere", {"model": {"storageUri": "pvc://absent/m"}}))
        status = wait_for(
            lambda: get(kube, namespace, ISVC, "nowhere"),
            until=lambda s: (condition(s, "ModelResolved") or {}).get("reason") == "ClaimNotFound",
        )
        assert "claim absent" in condition(status, "ModelResolved")["message"]  # type: ignore[index]


def test_autoscaling_makes_an_hpa(
    kube: client.ApiClient, crds_applied: list[str], namespace: str, run_operator: Any, wait_for: Callable[..., Any]
) -> None:
    core = client.CoreV1Api(kube)
    create_models_claim(core, namespace)
    spec = {"model": {"storageUri": "pvc://models/mnist"}, "autoscaling": {"minReplicas": 2, "maxReplicas": 4}}
    with run_operator(namespace):
        create(kube, namespace, ISVC, inference_service_body("elastic", spec))
        hpa = wait_for(
            lambda: client.AutoscalingV2Api(kube).read_namespaced_horizontal_pod_autoscaler("elastic", namespace),
            ignore=(client.ApiException,),
        )
        assert hpa.spec.min_replicas == 2 and hpa.spec.max_replicas == 4
        assert hpa.spec.scale_target_ref.name == "elastic"


def test_a_service_of_that_name_the_operator_did_not_make_is_refused_and_left_alone(
    kube: client.ApiClient, crds_applied: list[str], namespace: str, run_operator: Any, wait_for: Callable[..., Any]
) -> None:
    core = client.CoreV1Api(kube)
    create_models_claim(core, namespace)
    theirs = {"metadata": {"name": "taken"}, "spec": {"selector": {"app": "theirs"}, "ports": [{"port": 80}]}}
    core.create_namespaced_service(namespace, theirs)
    with run_operator(namespace):
        create(kube, namespace, ISVC, inference_service_body("taken", {"model": {"storageUri": "pvc://models/m"}}))
        status = wait_for(
            lambda: get(kube, namespace, ISVC, "taken"),
            until=lambda s: (condition(s, "Ready") or {}).get("reason") == "CreationFailed",
            timeout=60,
            message="Ready=False CreationFailed: the Service name is taken",
        )
    assert status["status"]["phase"] == "Failed"
    message = condition(status, "Ready")["message"]  # type: ignore[index]
    assert "Service taken" in message and "does not own" in message
    service = core.read_namespaced_service("taken", namespace)
    assert service.spec.selector == {"app": "theirs"} and not service.metadata.owner_references


def test_a_server_whose_deployment_the_api_server_refuses_fails_with_invalid_spec(
    kube: client.ApiClient, crds_applied: list[str], namespace: str, run_operator: Any, wait_for: Callable[..., Any]
) -> None:
    """A podTemplate override the schema cannot check makes the Deployment a 422: no retry can help."""
    create_models_claim(client.CoreV1Api(kube), namespace)
    spec = {"model": {"storageUri": "pvc://models/m"}, "podTemplate": {"spec": {"dnsPolicy": "Bogus"}}}
    with run_operator(namespace):
        create(kube, namespace, ISVC, inference_service_body("bogus", spec))
        status = wait_for(
            lambda: get(kube, namespace, ISVC, "bogus"),
            until=lambda s: (condition(s, "Ready") or {}).get("reason") == "InvalidSpec",
            timeout=60,
            message="Ready=False InvalidSpec: the Deployment is refused for what it is",
        )
    assert (status["status"]["phase"], status["status"]["reason"]) == ("Failed", "InvalidSpec")
    message = condition(status, "Ready")["message"]  # type: ignore[index]
    assert "was refused (422)" in message and "dnsPolicy" in message, message
    assert not client.AppsV1Api(kube).list_namespaced_deployment(namespace).items
