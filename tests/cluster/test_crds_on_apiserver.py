"""The generated CRDs on a real API server: examples admitted, bad input refused with the field named."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.api.cases import INFERENCE_SERVICE, INVALID, TRAINING_JOB, VALID

pytestmark = pytest.mark.cluster
ROOT = Path(__file__).resolve().parents[2]
PLURALS = {"TrainingJob": "trainingjobs", "InferenceService": "inferenceservices"}


def _dry_run_create(kube: client.ApiClient, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = client.CustomObjectsApi(kube).create_namespaced_custom_object(
        "aidc.io", "v1alpha1", namespace, PLURALS[body["kind"]], body, dry_run="All"
    )
    return result


@pytest.mark.parametrize(("case", "body", "words"), INVALID, ids=[c for c, _, _ in INVALID])
def test_api_server_rejects_what_the_models_reject(
    kube: client.ApiClient, crds_applied: list[str], namespace: str, case: str, body: dict[str, Any], words: list[str]
) -> None:
    with pytest.raises(ApiException) as caught:
        _dry_run_create(kube, namespace, body)
    assert caught.value.status == 422, caught.value.body
    for word in words:
        assert word in caught.value.body, f"{case}: {word!r} not in {caught.value.body}"


@pytest.mark.parametrize(("case", "body"), VALID, ids=[c for c, _ in VALID])
def test_api_server_admits_what_the_models_admit(
    kube: client.ApiClient, crds_applied: list[str], namespace: str, case: str, body: dict[str, Any]
) -> None:
    stored = _dry_run_create(kube, namespace, body)
    trainer = stored["spec"].get("trainer") or {}
    if "dataset" not in (body["spec"].get("trainer") or {}):
        assert "dataset" not in trainer  # no default: the trainer picks one per task


def test_api_server_applies_the_defaults_of_the_models(
    kube: client.ApiClient, crds_applied: list[str], namespace: str
) -> None:
    stored = _dry_run_create(kube, namespace, TRAINING_JOB)
    assert stored["spec"]["failurePolicy"] == {
        "restartPolicy": "OnRetryableExitCode", "backoffLimit": 3, "retryableExitCodes": [137, 143],
        "backoffSeconds": 10,
    }  # fmt: skip
    assert stored["spec"]["trainer"]["epochs"] == 8
    served = _dry_run_create(kube, namespace, INFERENCE_SERVICE)
    assert served["spec"]["batching"] == {"maxBatchSize": 32, "maxDelayMs": 5}


def test_every_example_is_admitted(kube: client.ApiClient, crds_applied: list[str], namespace: str) -> None:
    for path in sorted((ROOT / "examples").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            _dry_run_create(kube, namespace, doc)


def test_storage_is_immutable(kube: client.ApiClient, crds_applied: list[str], namespace: str) -> None:
    api = client.CustomObjectsApi(kube)
    body = {**TRAINING_JOB, "spec": {**TRAINING_JOB["spec"], "storage": {"checkpoints": {"size": "1Gi"}}}}
    api.create_namespaced_custom_object("aidc.io", "v1alpha1", namespace, "trainingjobs", body)
    with pytest.raises(ApiException) as caught:
        api.patch_namespaced_custom_object(
            "aidc.io",
            "v1alpha1",
            namespace,
            "trainingjobs",
            "ok",
            {"spec": {"storage": {"checkpoints": {"size": "2Gi"}}}},
        )
    assert caught.value.status == 422 and "spec.storage is immutable" in caught.value.body


def test_kubectl_dry_run_client_and_printer_columns(testbed: Any, crds_applied: list[str], namespace: str) -> None:
    kubectl = ["kubectl", "--kubeconfig", str(testbed.kubeconfig)]
    subprocess.run([*kubectl, "apply", "--dry-run=client", "-f", str(ROOT / "crds")], check=True, capture_output=True)
    subprocess.run([*kubectl, "-n", namespace, "apply", "-f", str(ROOT / "examples")], check=True, capture_output=True)
    table = subprocess.run(
        [*kubectl, "-n", namespace, "get", "tj"], check=True, capture_output=True, text=True
    ).stdout.split("\n")[0]
    assert table.split() == ["NAME", "PHASE", "READY", "PROGRESS", "RESTARTS", "AGE"]
    listing = subprocess.run(
        [*kubectl, "-n", namespace, "get", "aidc", "-o", "name"], check=True, capture_output=True, text=True
    ).stdout
    assert "trainingjob.aidc.io/digits" in listing and "inferenceservice.aidc.io/digits" in listing


def _table(kube: client.ApiClient, path: str) -> list[dict[str, Any]]:
    """The rows of ``path`` as the API server prints them (what kubectl get shows), by column name."""
    request = kube.param_serialize(
        "GET",
        path,
        header_params={"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io"},
        auth_settings=["BearerToken"],
    )
    answer = kube.call_api(*request)
    answer.read()
    table = json.loads(answer.data)
    names = [c["name"] for c in table["columnDefinitions"]]
    return [dict(zip(names, row["cells"], strict=True)) for row in table["rows"]]


def test_the_reason_column_shows_why_the_job_is_in_its_phase(
    kube: client.ApiClient, crds_applied: list[str], namespace: str
) -> None:
    """A Failed gang was scheduled first: the column must not print that older, truer condition."""
    api = client.CustomObjectsApi(kube)
    api.create_namespaced_custom_object("aidc.io", "v1alpha1", namespace, "trainingjobs", TRAINING_JOB)
    at = "2026-12-02T12:00:00Z"
    conditions = [
        {"type": "Scheduled", "status": "True", "reason": "AllRanksScheduled", "lastTransitionTime": at},
        {"type": "Running", "status": "False", "reason": "BackoffLimitExceeded", "lastTransitionTime": at},
        {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded", "lastTransitionTime": at},
    ]
    status = {"phase": "Failed", "reason": "BackoffLimitExceeded", "conditions": conditions}
    api.patch_namespaced_custom_object_status(
        "aidc.io", "v1alpha1", namespace, "trainingjobs", "ok", {"status": status}
    )
    (row,) = _table(kube, f"/apis/aidc.io/v1alpha1/namespaces/{namespace}/trainingjobs")
    assert (row["Phase"], row["Reason"]) == ("Failed", "BackoffLimitExceeded")


def test_the_protocol_column_tells_a_language_models_service(
    kube: client.ApiClient, crds_applied: list[str], namespace: str
) -> None:
    api = client.CustomObjectsApi(kube)
    api.create_namespaced_custom_object("aidc.io", "v1alpha1", namespace, "inferenceservices", INFERENCE_SERVICE)
    name = INFERENCE_SERVICE["metadata"]["name"]
    status = {"phase": "Ready", "protocol": "v2+openai", "url": "http://ok.ns.svc.cluster.local:8080",
              "openaiUrl": "http://ok.ns.svc.cluster.local:8080/v1"}  # fmt: skip
    api.patch_namespaced_custom_object_status(
        "aidc.io", "v1alpha1", namespace, "inferenceservices", name, {"status": status}
    )
    (row,) = _table(kube, f"/apis/aidc.io/v1alpha1/namespaces/{namespace}/inferenceservices")
    assert (row["Phase"], row["Protocol"]) == ("Ready", "v2+openai")
    stored = api.get_namespaced_custom_object("aidc.io", "v1alpha1", namespace, "inferenceservices", name)
    assert stored["status"]["openaiUrl"].endswith("/v1")  # kept by the schema, not pruned
