"""The heartbeat's least privilege, on the real API server: a rank-0 token may patch only the
``aidc.io/progress`` annotation of its own pod (charts/.../heartbeat-policy.yaml)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from aidc.compute.trainer_account import TRAINER_SERVICE_ACCOUNT, trainer_identity

pytestmark = pytest.mark.cluster
POLICY = Path(__file__).resolve().parents[2] / "charts" / "aidc-operator" / "templates" / "heartbeat-policy.yaml"


@pytest.fixture(scope="module")
def heartbeat_policy(kube: client.ApiClient) -> None:
    admission = client.AdmissionregistrationV1Api(kube)
    for doc in yaml.safe_load_all(POLICY.read_text()):
        if doc["kind"] == "ValidatingAdmissionPolicy":
            admission.patch_validating_admission_policy(
                doc["metadata"]["name"],
                doc,
                field_manager="aidc-tests",
                force=True,
                _content_type="application/apply-patch+yaml",
            )
        else:
            admission.patch_validating_admission_policy_binding(
                doc["metadata"]["name"],
                doc,
                field_manager="aidc-tests",
                force=True,
                _content_type="application/apply-patch+yaml",
            )


def _pod(name: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "annotations": {"keep": "me"}},
        "spec": {
            "serviceAccountName": TRAINER_SERVICE_ACCOUNT,
            "containers": [{"name": "trainer", "image": "trainer"}],
        },
    }


def _client_as(testbed: Any, token: str) -> client.CoreV1Api:
    admin = testbed.api_client().configuration
    configuration = client.Configuration()
    configuration.host = admin.host
    configuration.ssl_ca_cert = admin.ssl_ca_cert
    configuration.verify_ssl = admin.verify_ssl
    configuration.api_key = {"authorization": f"Bearer {token}"}
    return client.CoreV1Api(client.ApiClient(configuration))


def test_a_rank_token_patches_only_its_own_progress_annotation(
    kube: client.ApiClient, testbed: Any, namespace: str, heartbeat_policy: None, wait_for: Callable[..., Any]
) -> None:
    core = client.CoreV1Api(kube)
    rbac = client.RbacAuthorizationV1Api(kube)
    for obj in trainer_identity(namespace):
        {
            "ServiceAccount": lambda o: core.create_namespaced_service_account(namespace, o),
            "Role": lambda o: rbac.create_namespaced_role(namespace, o),
            "RoleBinding": lambda o: rbac.create_namespaced_role_binding(namespace, o),
        }[obj["kind"]](obj)
    own = core.create_namespaced_pod(namespace, _pod("job-0"))
    core.create_namespaced_pod(namespace, _pod("job-1"))
    request = {
        "spec": {
            "audiences": [],
            "expirationSeconds": 600,
            "boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": "job-0", "uid": own.metadata.uid},
        }
    }
    token = core.create_namespaced_service_account_token(TRAINER_SERVICE_ACCOUNT, namespace, request).status.token
    rank0 = _client_as(testbed, token)
    beat = json.dumps({"step": 1})

    def patch(name: str, annotations: dict[str, Any], labels: dict[str, str] | None = None) -> int:
        body: dict[str, Any] = {"metadata": {"annotations": annotations}}
        if labels:
            body["metadata"]["labels"] = labels
        try:
            rank0.patch_namespaced_pod(name, namespace, body)
        except ApiException as error:
            return int(error.status)
        return 200

    # the policy may take a moment to be loaded by the API server's admission
    wait_for(
        lambda: patch("job-1", {"aidc.io/progress": beat}),
        until=lambda code: code in (403, 422),
        message="another pod's heartbeat is refused",
    )
    assert patch("job-0", {"aidc.io/progress": beat}) == 200
    assert core.read_namespaced_pod("job-0", namespace).metadata.annotations["aidc.io/progress"] == beat
    assert patch("job-0", {"keep": "changed"}) in (403, 422)
    assert patch("job-0", {"aidc.io/progress": beat}, labels={"sneaky": "yes"}) in (403, 422)
    assert patch("job-0", {"aidc.io/progress": beat, "extra": "1"}) in (403, 422)
    with pytest.raises(ApiException) as denied:
        rank0.list_namespaced_secret(namespace)
    assert denied.value.status == 403
