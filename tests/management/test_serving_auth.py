"""What spec.auth and spec.tls render into: the server's environment, token, volumes, probes, URL and identity."""

from __future__ import annotations

from typing import Any

import pytest

from aidc.api.inferenceservice import ServedModel
from aidc.compute.inference_account import inference_identity
from aidc.compute.serving import serving_deployment
from aidc.network.serving import inference_url
from aidc.settings import OperatorSettings
from tests.factories import inference_service as isvc

MODEL = ServedModel(uri="pvc://models/digits", claim_name="models", path="digits")
API_KEY = {"apiKey": {"secretName": "keys", "key": "api-key"}}
TLS = {"secretName": "serving-tls"}


def _pod(spec: dict[str, Any]) -> dict[str, Any]:
    pod: dict[str, Any] = serving_deployment(isvc(spec), MODEL, OperatorSettings())["spec"]["template"]["spec"]
    return pod


def _env(pod: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in pod["containers"][0]["env"]}


@pytest.mark.parametrize(
    ("auth", "expected_env", "token", "account"),
    [
        (None, {}, False, None),
        (API_KEY, {"AIDC_AUTH": "api-key", "AIDC_API_KEY": {"secretKeyRef": {"name": "keys", "key": "api-key"}}},
         False, None),
        ({"kubernetes": {}}, {"AIDC_AUTH": "kubernetes", "AIDC_AUTH_NAMESPACE": "ml", "AIDC_AUTH_NAME": "digits"},
         True, "aidc-inference"),
    ],
    ids=["open", "api-key", "kubernetes"],
)  # fmt: skip
def test_only_a_server_that_reviews_tokens_gets_an_api_token(
    auth: dict[str, Any] | None, expected_env: dict[str, Any], token: bool, account: str | None
) -> None:
    pod = _pod({"auth": auth} if auth else {})
    env = _env(pod)
    security = {k: v for k, v in env.items() if k.startswith(("AIDC_AUTH", "AIDC_API_KEY", "AIDC_TLS"))}
    assert security == expected_env
    assert pod["automountServiceAccountToken"] is token
    assert pod.get("serviceAccountName") == account


@pytest.mark.parametrize(("tls", "scheme"), [(None, "HTTP"), (TLS, "HTTPS")])
def test_tls_mounts_the_secret_and_switches_probes_and_url_to_https(tls: dict[str, Any] | None, scheme: str) -> None:
    service = isvc({"tls": tls} if tls else {})
    pod = serving_deployment(service, MODEL, OperatorSettings())["spec"]["template"]["spec"]
    container = pod["containers"][0]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"].get("scheme", "HTTP") == scheme
        assert container[probe]["httpGet"]["path"].startswith("/v2/health/")  # the open routes
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    env = _env(pod)
    assert inference_url(service, "cluster.local") == f"{scheme.lower()}://digits.ml.svc.cluster.local:8080"
    if tls is None:
        assert "tls" not in volumes and "tls" not in mounts and "AIDC_TLS_CERT_FILE" not in env
        return
    assert volumes["tls"]["secret"]["secretName"] == "serving-tls"
    assert mounts["tls"] == {"name": "tls", "mountPath": "/etc/aidc/tls", "readOnly": True}
    assert (env["AIDC_TLS_CERT_FILE"], env["AIDC_TLS_KEY_FILE"]) == ("/etc/aidc/tls/tls.crt", "/etc/aidc/tls/tls.key")


def test_token_audiences_reach_the_server_joined() -> None:
    env = _env(_pod({"auth": {"kubernetes": {"audiences": ["aidc.io/digits", "other"]}}}))
    assert env["AIDC_AUTH_AUDIENCES"] == "aidc.io/digits,other"
    assert "AIDC_AUTH_AUDIENCES" not in _env(_pod({"auth": {"kubernetes": {}}}))


def test_without_auth_and_tls_the_pod_template_is_what_it_was() -> None:
    """An operator upgrade must not roll every serving Deployment: nothing new appears when both are off."""
    container = _pod({})["containers"][0]
    assert container["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": "http"}
    # the model, and /tmp (an emptyDir: the root file system is read-only, and torch's compiler, which
    # transformers imports, needs a temporary directory)
    assert [m["name"] for m in container["volumeMounts"]] == ["model", "tmp"]
    assert not any(e["name"].startswith(("AIDC_AUTH", "AIDC_API_KEY", "AIDC_TLS")) for e in container["env"])
    assert "AIDC_SERVER_WORKERS" not in _env(_pod({}))  # the server picks its count from its CPU limit


@pytest.mark.parametrize(("workers", "rendered"), [(None, None), (1, "1"), (4, "4")])
def test_workers_reach_the_server_only_when_the_spec_names_a_count(workers: int | None, rendered: str | None) -> None:
    env = _env(_pod({} if workers is None else {"workers": workers}))
    assert env.get("AIDC_SERVER_WORKERS") == rendered


def test_turning_auth_on_rolls_the_deployment() -> None:
    hashes = {
        serving_deployment(isvc(spec), MODEL, OperatorSettings())["metadata"]["annotations"]["aidc.io/spec-hash"]
        for spec in ({}, {"auth": API_KEY}, {"auth": {"kubernetes": {}}}, {"tls": TLS})
    }
    assert len(hashes) == 4


def test_the_reviewing_identity_binds_one_service_account_to_the_reviewer_role_only() -> None:
    account, binding = inference_identity("ml", "aidc-operator-inference-reviewer")
    assert (account["kind"], account["metadata"]["name"], account["metadata"]["namespace"]) == (
        "ServiceAccount", "aidc-inference", "ml",
    )  # fmt: skip
    assert binding["kind"] == "ClusterRoleBinding" and "namespace" not in binding["metadata"]
    assert binding["metadata"]["name"] == "aidc-operator-inference-reviewer-ml"
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "aidc-operator-inference-reviewer",
    }  # fmt: skip
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "aidc-inference", "namespace": "ml"}]


def test_the_server_has_a_writable_tmp_on_a_read_only_root() -> None:
    """A transformers export imports torch's compiler, which needs a temporary directory: without one the
    server could not load a fine-tuned model (seen on the real node)."""
    pod = _pod({})
    container = pod["containers"][0]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
    assert {"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}} in pod["volumes"]
