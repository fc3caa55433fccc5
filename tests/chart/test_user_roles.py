"""The users' roles of the chart (templates/user-roles.yaml): what they grant as rendered, and on
the real control plane that kube-controller-manager aggregates them into the built-in admin, edit
and view ClusterRoles, so that a namespace's editor (a RoleBinding to ``edit``, nothing of ours)
may create TrainingJobs and InferenceServices and call its models, and a viewer may only read."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.chart.rendering import grants, named, of_kind, render, require_helm
from tests.factories import inference_service_body, training_job_body

AGGREGATE = "rbac.authorization.k8s.io/aggregate-to-"
KINDS = ("trainingjobs", "inferenceservices")
READ = ("get", "list", "watch")
WRITE = ("create", "update", "patch", "delete", "deletecollection")
INFER = ("aidc.io", "inferenceservices/infer", "create")


def _grants(resources: tuple[str, ...], verbs: tuple[str, ...]) -> set[tuple[str, str, str]]:
    return {("aidc.io", resource, verb) for resource in resources for verb in verbs}


OBJECTS = KINDS + tuple(f"{kind}/scale" for kind in KINDS)
STATUS = tuple(f"{kind}/status" for kind in KINDS)
WRITER = _grants(OBJECTS, READ + WRITE) | _grants(STATUS, READ) | {INFER}
EXPECTED = {
    "admin": (WRITER, {f"{AGGREGATE}admin": "true"}),
    "edit": (WRITER, {f"{AGGREGATE}edit": "true"}),
    "view": (_grants(OBJECTS + STATUS, READ), {f"{AGGREGATE}view": "true"}),
    "inference-client": ({INFER}, {}),
}


@pytest.fixture(autouse=True)
def _helm_is_built() -> None:
    require_helm()


def _user_roles(values: dict[str, Any], release: str = "ml") -> dict[str, dict[str, Any]]:
    prefix = f"{release}-aidc-operator-"
    return {
        r["metadata"]["name"].removeprefix(prefix): r
        for r in of_kind(render(values, release=release), "ClusterRole")
        if r["metadata"]["labels"].get("app.kubernetes.io/component") == "user-roles"
    }


@pytest.mark.parametrize("role", list(EXPECTED))
def test_each_user_role_grants_exactly_its_share(role: str) -> None:
    rendered = _user_roles({})[role]
    expected_grants, aggregation = EXPECTED[role]
    assert grants(rendered["rules"]) == expected_grants
    labels = rendered["metadata"]["labels"]
    assert {k: v for k, v in labels.items() if k.startswith(AGGREGATE)} == aggregation
    assert labels["app.kubernetes.io/instance"] == "ml"
    # status is the operator's to write; a user only reads it
    assert not {g for g in grants(rendered["rules"]) if g[1].endswith("/status") and g[2] not in READ}


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({}, {"admin", "edit", "view", "inference-client"}),
        ({"userRoles": {"aggregate": False}}, {"inference-client"}),
        ({"userRoles": {"inferenceClient": False}}, {"admin", "edit", "view"}),
        ({"userRoles": {"aggregate": False, "inferenceClient": False}}, set()),
    ],
    ids=["default", "no-aggregation", "no-client-role", "none"],
)
def test_user_roles_can_be_turned_off(values: dict[str, Any], expected: set[str]) -> None:
    assert set(_user_roles(values)) == expected
    # the operator's own ClusterRole is there either way, and unchanged
    assert (
        named(render(values, release="ml"), "ClusterRole", "ml-aidc-operator")["rules"]
        == named(render({}, release="ml"), "ClusterRole", "ml-aidc-operator")["rules"]
    )


# --- on the real control plane -----------------------------------------------------------------


def _as_user(kube: client.ApiClient, user: str) -> client.ApiClient:
    """The admin's connection, acting as ``user`` (the API server's impersonation)."""
    return client.ApiClient(kube.configuration, header_name="Impersonate-User", header_value=user)


def _built_in_grants(kube: client.ApiClient, role: str) -> set[tuple[str, str, str]]:
    rules = client.RbacAuthorizationV1Api(kube).read_cluster_role(role).rules or []
    return grants([{"apiGroups": r.api_groups or [], "resources": r.resources or [], "verbs": r.verbs} for r in rules])


def _status(call: Callable[[], Any]) -> int:
    try:
        call()
    except ApiException as error:
        return int(error.status)
    return 200


def _may_infer(kube: client.ApiClient, user: str, namespace: str, name: str) -> bool:
    """The review an InferenceService with Kubernetes authentication asks for each request."""
    attributes = {
        "namespace": namespace, "verb": "create", "group": "aidc.io", "resource": "inferenceservices",
        "subresource": "infer", "name": name,
    }  # fmt: skip
    review = {"spec": {"user": user, "groups": ["system:authenticated"], "resourceAttributes": attributes}}
    return bool(client.AuthorizationV1Api(kube).create_subject_access_review(review).status.allowed)


def _bind(kube: client.ApiClient, namespace: str, user: str, cluster_role: str) -> None:
    binding = {
        "metadata": {"name": f"{user}-{cluster_role}"[:63]},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": cluster_role},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
    }
    client.RbacAuthorizationV1Api(kube).create_namespaced_role_binding(namespace, binding)


@pytest.mark.cluster
def test_namespace_editors_run_jobs_and_viewers_only_read(
    kube: client.ApiClient,
    testbed: Any,
    crds_applied: list[str],
    namespace: str,
    wait_for: Callable[..., Any],
) -> None:
    from tests.chart.test_on_cluster import installed

    creates = {("aidc.io", kind, "create") for kind in KINDS}
    aggregated = {"admin": creates | {INFER}, "edit": creates | {INFER}, "view": {("aidc.io", "trainingjobs", "get")}}
    with installed(testbed, namespace, {"heartbeatPolicy": {"enabled": False}}) as release:
        # kube-controller-manager's aggregation controller copies our rules into the built-in roles
        for role, wanted in aggregated.items():
            wait_for(lambda role=role: _built_in_grants(kube, role), until=lambda g, w=wanted: w <= g, timeout=60,
                     message=f"aidc's rules aggregated into {role}")  # fmt: skip
        assert not creates & _built_in_grants(kube, "view") and INFER not in _built_in_grants(kube, "view")

        _bind(kube, namespace, "jane", "edit")
        _bind(kube, namespace, "joe", "view")
        _bind(kube, namespace, "ann", f"{release}-aidc-operator-inference-client")
        jane, joe = client.CustomObjectsApi(_as_user(kube, "jane")), client.CustomObjectsApi(_as_user(kube, "joe"))

        def create(api: client.CustomObjectsApi, plural: str, body: dict[str, Any]) -> int:
            return _status(lambda: api.create_namespaced_custom_object("aidc.io", "v1alpha1", namespace, plural, body))

        # the API server's RBAC cache learns of a new binding a moment after it is created
        job = training_job_body("by-jane")
        wait_for(lambda: create(jane, "trainingjobs", job), until=lambda code: code in (200, 201),
                 message="the editor creates a TrainingJob")  # fmt: skip
        assert create(jane, "inferenceservices", inference_service_body("by-jane")) in (200, 201)
        patch = {"spec": {"runPolicy": {"suspend": True}}}
        custom = ("aidc.io", "v1alpha1", namespace)
        assert _status(lambda: jane.patch_namespaced_custom_object(*custom, "trainingjobs", "by-jane", patch)) == 200

        wait_for(lambda: _status(lambda: joe.list_namespaced_custom_object(*custom, "trainingjobs")),
                 until=lambda code: code == 200, message="the viewer lists TrainingJobs")  # fmt: skip
        assert _status(lambda: joe.get_namespaced_custom_object(*custom, "inferenceservices", "by-jane")) == 200
        assert _status(lambda: joe.get_namespaced_custom_object_status(*custom, "trainingjobs", "by-jane")) == 200
        assert create(joe, "trainingjobs", training_job_body("by-joe")) == 403
        assert create(joe, "inferenceservices", inference_service_body("by-joe")) == 403
        assert _status(lambda: joe.patch_namespaced_custom_object(*custom, "trainingjobs", "by-jane", patch)) == 403
        assert _status(lambda: joe.delete_namespaced_custom_object(*custom, "trainingjobs", "by-jane")) == 403
        # nor may the editor write status: that is the operator's
        done = {"status": {"phase": "Succeeded"}}
        assert (
            _status(lambda: jane.patch_namespaced_custom_object_status(*custom, "trainingjobs", "by-jane", done)) == 403
        )

        # calling a model: editors and the inference client, not viewers, and only in this namespace
        assert _may_infer(kube, "jane", namespace, "by-jane") and _may_infer(kube, "ann", namespace, "by-jane")
        assert not _may_infer(kube, "joe", namespace, "by-jane")
        assert not _may_infer(kube, "ann", f"{namespace}-elsewhere", "by-jane")
        ann = client.CustomObjectsApi(_as_user(kube, "ann"))
        assert _status(lambda: ann.get_namespaced_custom_object(*custom, "inferenceservices", "by-jane")) == 403
        assert _status(lambda: jane.delete_namespaced_custom_object(*custom, "trainingjobs", "by-jane")) == 200
    # uninstalled: the aggregation controller takes aidc's rules out of the built-in roles again
    wait_for(lambda: _built_in_grants(kube, "edit"), until=lambda g: not creates & g, timeout=60,
             message="aidc's rules gone from edit after uninstall")  # fmt: skip
