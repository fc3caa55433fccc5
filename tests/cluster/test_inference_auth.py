"""Kubernetes identities at the model server, checked by the bed's real API server.

The server (the real app and gate, on the host) reviews tokens with the token of the
``aidc-inference`` ServiceAccount, bound by the operator's own objects to the chart's own reviewer
ClusterRole; callers are ServiceAccounts with real tokens (TokenRequest) and real RBAC. The
operator's part (it renders and creates those objects, and its chart RBAC lets it bind that role
and no other) is checked against the same API server.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from aidc.compute.inference_account import INFERENCE_SERVICE_ACCOUNT, inference_identity
from aidc_trainer.serving.access_review import AccessReviews, ApiServerAddress
from aidc_trainer.serving.auth import KubernetesGate
from tests.chart.rendering import named, operator_role, render
from tests.cluster.resources import create, get
from tests.factories import inference_service_body
from tests.serving.harness import ScaleServable, in_process_server, loaded

pytestmark = pytest.mark.cluster
RELEASE = "authtest"  # the chart's roles under a release name no other test installs
REVIEWER = f"{RELEASE}-aidc-operator-inference-reviewer"
ROW = {"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}


def _token(core: client.CoreV1Api, namespace: str, account: str, audience: str | None = None) -> str:
    request: dict[str, Any] = {"spec": {"expirationSeconds": 600}}
    if audience is not None:
        request["spec"]["audiences"] = [audience]
    return str(core.create_namespaced_service_account_token(account, namespace, request).status.token)


def _create_cluster_object(kube: client.ApiClient, body: dict[str, Any]) -> None:
    rbac = client.RbacAuthorizationV1Api(kube)
    make = rbac.create_cluster_role if body["kind"] == "ClusterRole" else rbac.create_cluster_role_binding
    with contextlib.suppress(ApiException):  # 409: a previous run left it; the same content
        make(body)


@pytest.fixture
def chart_roles(kube: client.ApiClient) -> Iterator[list[dict[str, Any]]]:
    """The chart's reviewer and operator ClusterRoles (release ``authtest``), deleted afterwards."""
    objects = render({}, release=RELEASE)
    roles = [named(objects, "ClusterRole", REVIEWER), operator_role(objects, f"{RELEASE}-aidc-operator")]
    for role in roles:
        role["metadata"].pop("labels", None)
        _create_cluster_object(kube, role)
    yield roles
    for role in roles:
        with contextlib.suppress(ApiException):
            client.RbacAuthorizationV1Api(kube).delete_cluster_role(role["metadata"]["name"])


@pytest.fixture
def reviewer_token(kube: client.ApiClient, namespace: str, chart_roles: Any, tmp_path: Path) -> Iterator[Path]:
    """A token file of ``aidc-inference``, created exactly as the operator creates it."""
    account, binding = inference_identity(namespace, REVIEWER)
    client.CoreV1Api(kube).create_namespaced_service_account(namespace, account)
    _create_cluster_object(kube, binding)
    path = tmp_path / "token"
    path.write_text(_token(client.CoreV1Api(kube), namespace, INFERENCE_SERVICE_ACCOUNT))
    yield path
    client.RbacAuthorizationV1Api(kube).delete_cluster_role_binding(binding["metadata"]["name"])


def _callers(kube: client.ApiClient, namespace: str) -> dict[str, str]:
    """alice may infer on ``digits`` (a Role on inferenceservices/infer), bob may not; their tokens."""
    core, rbac = client.CoreV1Api(kube), client.RbacAuthorizationV1Api(kube)
    for name in ("alice", "bob"):
        core.create_namespaced_service_account(namespace, {"metadata": {"name": name}})
    rule = {"apiGroups": ["aidc.io"], "resources": ["inferenceservices/infer"], "verbs": ["create"],
            "resourceNames": ["digits"]}  # fmt: skip
    rbac.create_namespaced_role(namespace, {"metadata": {"name": "infer-digits"}, "rules": [rule]})
    rbac.create_namespaced_role_binding(namespace, {
        "metadata": {"name": "alice-infers"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "infer-digits"},
        "subjects": [{"kind": "ServiceAccount", "name": "alice", "namespace": namespace}],
    })  # fmt: skip
    return {name: _token(core, namespace, name) for name in ("alice", "bob")}


async def _infer(session: aiohttp.ClientSession, token: str | None) -> tuple[int, bytes]:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    async with session.post("/v2/models/m/infer", json={"inputs": [ROW]}, headers=headers) as answer:
        return answer.status, await answer.read()


def test_the_server_admits_only_identities_rbac_allows_to_infer(
    kube: client.ApiClient, namespace: str, reviewer_token: Path
) -> None:
    tokens = _callers(kube, namespace)
    address = ApiServerAddress(kube.configuration.host, reviewer_token, Path(kube.configuration.ssl_ca_cert))

    async def scenario() -> dict[str, Any]:
        gate = KubernetesGate(AccessReviews(address), namespace, "digits")
        async with in_process_server(loaded(ScaleServable()), gate=gate) as server:
            await asyncio.wait_for(server.loading, 30)
            async with aiohttp.ClientSession(server.url) as session:
                outcomes = {
                    "alice": await _infer(session, tokens["alice"]),
                    "bob": await _infer(session, tokens["bob"]),
                    "garbage": await _infer(session, "not-a-token"),
                    "none": await _infer(session, None),
                    "alice again": await _infer(session, tokens["alice"]),
                }
                async with session.get("/v2/health/ready") as answer:
                    outcomes["health"] = (answer.status, b"")
            return outcomes

    outcomes = asyncio.run(scenario())
    assert outcomes["alice"][0] == 200 and b'"scaled"' in outcomes["alice"][1]
    assert outcomes["alice again"][0] == 200
    assert outcomes["bob"][0] == 403 and b"scaled" not in outcomes["bob"][1]
    assert f"system:serviceaccount:{namespace}:bob".encode() in outcomes["bob"][1]  # who, so RBAC can be fixed
    assert outcomes["garbage"][0] == 401 and outcomes["none"][0] == 401
    assert outcomes["health"][0] == 200


def _statuses(address: ApiServerAddress, namespace: str, tokens: list[str], audiences: tuple[str, ...]) -> list[int]:
    """The status of one inference per token, at a server whose gate wants ``audiences``."""

    async def scenario() -> list[int]:
        gate = KubernetesGate(AccessReviews(address), namespace, "digits", audiences=audiences)
        async with in_process_server(loaded(ScaleServable()), gate=gate) as server:
            await asyncio.wait_for(server.loading, 30)
            async with aiohttp.ClientSession(server.url) as session:
                return [(await _infer(session, token))[0] for token in tokens]

    return asyncio.run(scenario())


def test_with_audiences_only_tokens_issued_for_them_are_accepted(
    kube: client.ApiClient, namespace: str, reviewer_token: Path
) -> None:
    """A token for the API server is refused where an audience is set, and the other way round:
    a caller's token then cannot be replayed against the API server by whoever runs the server."""
    default = _callers(kube, namespace)["alice"]
    scoped = _token(client.CoreV1Api(kube), namespace, "alice", audience="aidc.io/digits")
    address = ApiServerAddress(kube.configuration.host, reviewer_token, Path(kube.configuration.ssl_ca_cert))
    assert _statuses(address, namespace, [scoped, default], ("aidc.io/digits",)) == [200, 401]
    assert _statuses(address, namespace, [scoped, default], ()) == [401, 200]
    with pytest.raises(ApiException) as refused:  # and the API server itself does not take the scoped token
        configuration = client.Configuration()
        configuration.host, configuration.ssl_ca_cert = kube.configuration.host, kube.configuration.ssl_ca_cert
        configuration.api_key = {"authorization": f"Bearer {scoped}"}
        client.CoreV1Api(client.ApiClient(configuration)).list_namespaced_pod(namespace)
    assert refused.value.status == 401


def test_a_reviewer_without_its_binding_cannot_verify_anyone(
    kube: client.ApiClient, namespace: str, tmp_path: Path
) -> None:
    """Without the ClusterRoleBinding the API server refuses the review: 503, never a 200."""
    tokens = _callers(kube, namespace)
    core = client.CoreV1Api(kube)
    core.create_namespaced_service_account(namespace, {"metadata": {"name": INFERENCE_SERVICE_ACCOUNT}})
    token = tmp_path / "token"
    token.write_text(_token(core, namespace, INFERENCE_SERVICE_ACCOUNT))
    address = ApiServerAddress(kube.configuration.host, token, Path(kube.configuration.ssl_ca_cert))

    async def scenario() -> int:
        gate = KubernetesGate(AccessReviews(address), namespace, "digits")
        async with in_process_server(loaded(ScaleServable()), gate=gate) as server:
            await asyncio.wait_for(server.loading, 30)
            async with aiohttp.ClientSession(server.url) as session:
                return (await _infer(session, tokens["alice"]))[0]

    assert asyncio.run(scenario()) == 503


def test_the_operators_chart_rbac_binds_the_reviewer_role_and_no_other(
    kube: client.ApiClient, namespace: str, chart_roles: list[dict[str, Any]]
) -> None:
    """As the operator's ServiceAccount with the chart's ClusterRole: the reviewer binding is
    accepted, a binding to cluster-admin is refused (bind is limited by resourceNames)."""
    core, rbac = client.CoreV1Api(kube), client.RbacAuthorizationV1Api(kube)
    core.create_namespaced_service_account(namespace, {"metadata": {"name": "operator"}})
    own = f"{namespace}-operator"
    rbac.create_cluster_role_binding({
        "metadata": {"name": own},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                    "name": chart_roles[1]["metadata"]["name"]},
        "subjects": [{"kind": "ServiceAccount", "name": "operator", "namespace": namespace}],
    })  # fmt: skip
    configuration = client.Configuration()
    configuration.host, configuration.ssl_ca_cert = kube.configuration.host, kube.configuration.ssl_ca_cert
    configuration.api_key = {"authorization": f"Bearer {_token(core, namespace, 'operator')}"}
    as_operator = client.RbacAuthorizationV1Api(client.ApiClient(configuration))
    account, binding = inference_identity(namespace, REVIEWER)
    escalation = {**binding, "metadata": {"name": f"{namespace}-escalation"},
                  "roleRef": {**binding["roleRef"], "name": "cluster-admin"}}  # fmt: skip
    try:
        client.CoreV1Api(client.ApiClient(configuration)).create_namespaced_service_account(namespace, account)
        as_operator.create_cluster_role_binding(binding)
        with pytest.raises(ApiException) as refused:
            as_operator.create_cluster_role_binding(escalation)
        assert refused.value.status == 403
    finally:
        for name in (own, binding["metadata"]["name"], escalation["metadata"]["name"]):
            with contextlib.suppress(ApiException):
                rbac.delete_cluster_role_binding(name)


def test_the_operator_runs_authenticating_servers_as_their_reviewing_identity(
    kube: client.ApiClient, crds_applied: list[str], namespace: str, run_operator: Any, wait_for: Callable[..., Any]
) -> None:
    apps, rbac = client.AppsV1Api(kube), client.RbacAuthorizationV1Api(kube)
    spec = {"model": {"storageUri": "pvc://models/digits"}, "auth": {"kubernetes": {}}, "tls": {"secretName": "tls"}}
    binding = f"aidc-operator-inference-reviewer-{namespace}"
    try:
        with run_operator(namespace):
            client.CoreV1Api(kube).create_namespaced_persistent_volume_claim(namespace, {
                "metadata": {"name": "models"},
                "spec": {"accessModes": ["ReadOnlyMany"], "resources": {"requests": {"storage": "1Gi"}}},
            })  # fmt: skip
            create(kube, namespace, "inferenceservices", inference_service_body("digits", spec))
            deployment = wait_for(lambda: _deployment(apps, namespace), timeout=60)
            status = wait_for(lambda: get(kube, namespace, "inferenceservices", "digits").get("status") or {},
                              until=lambda s: s.get("url"), timeout=60)  # fmt: skip
        pod = deployment.spec.template.spec
        assert pod.service_account_name == INFERENCE_SERVICE_ACCOUNT and pod.automount_service_account_token
        assert pod.containers[0].readiness_probe.http_get.scheme == "HTTPS"
        assert status["url"].startswith(f"https://digits.{namespace}.svc")
        client.CoreV1Api(kube).read_namespaced_service_account(INFERENCE_SERVICE_ACCOUNT, namespace)
        created = rbac.read_cluster_role_binding(binding)
        assert created.role_ref.name == "aidc-operator-inference-reviewer"
        assert [(s.name, s.namespace) for s in created.subjects] == [(INFERENCE_SERVICE_ACCOUNT, namespace)]
    finally:
        with contextlib.suppress(ApiException):
            rbac.delete_cluster_role_binding(binding)


def _deployment(apps: client.AppsV1Api, namespace: str) -> Any:
    try:
        return apps.read_namespaced_deployment("digits", namespace)
    except ApiException as error:
        if error.status == 404:
            return None
        raise
