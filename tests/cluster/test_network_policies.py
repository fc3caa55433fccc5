"""The operator's NetworkPolicies on the real control plane: admitted by the API server, selecting
the pods they are meant for, owned by their resource, kept, and absent when turned off.

What is proven here is the objects, not enforcement: the test bed's nodes (kwok, and the real
nodes' CNI bridge plugin) enforce no NetworkPolicy. The policies' rules are pinned by the golden
files of tests/network.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.cluster.resources import condition, create, get, patch_spec, pods
from tests.factories import inference_service_body, training_job_body

pytestmark = pytest.mark.cluster
ISVC = "inferenceservices"
TEAMS = [{"namespaceSelector": {"matchLabels": {"team": "vision"}}, "podSelector": {"matchLabels": {"role": "api"}}}]


@pytest.fixture(autouse=True)
def _quiet_operator(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIDC_METRICS_PORT", "0")
    monkeypatch.setenv("AIDC_RESYNC_SECONDS", "5")


def _models_claim(core: client.CoreV1Api, namespace: str) -> None:
    core.create_namespaced_persistent_volume_claim(
        namespace,
        {
            "metadata": {"name": "models"},
            "spec": {"accessModes": ["ReadOnlyMany"], "resources": {"requests": {"storage": "1Gi"}}},
        },
    )


def _policy(kube: client.ApiClient, namespace: str, name: str) -> dict[str, Any]:
    """The policy as the API server stores it (defaults filled in), as plain JSON."""
    api = client.NetworkingV1Api(kube)
    stored = api.read_namespaced_network_policy(name, namespace)
    result: dict[str, Any] = kube.sanitize_for_serialization(stored)
    return result


def _selected(core: client.CoreV1Api, namespace: str, policy: dict[str, Any]) -> list[str]:
    labels = policy["spec"]["podSelector"]["matchLabels"]
    selector = ",".join(f"{key}={value}" for key, value in labels.items())
    return sorted(p.metadata.name for p in core.list_namespaced_pod(namespace, label_selector=selector).items)


def _owner(policy: dict[str, Any]) -> tuple[str, str, bool]:
    (ref,) = policy["metadata"]["ownerReferences"]
    return ref["kind"], ref["uid"], ref["controller"]


def test_a_gang_and_a_server_get_their_policies_and_lose_them_with_their_owner(
    kube: client.ApiClient, crds_applied: list[str], namespace: str, run_operator: Any, wait_for: Callable[..., Any]
) -> None:
    core = client.CoreV1Api(kube)
    _models_claim(core, namespace)
    with run_operator(namespace):
        job = create(kube, namespace, "trainingjobs", training_job_body("mnist"))
        isvc = create(
            kube, namespace, ISVC, inference_service_body("digits", {"model": {"storageUri": "pvc://models/digits"}})
        )
        gang = wait_for(lambda: _policy(kube, namespace, "mnist-gang"), ignore=(ApiException,), timeout=30)
        assert _owner(gang) == ("TrainingJob", job["metadata"]["uid"], True)
        assert gang["spec"]["policyTypes"] == ["Ingress"]
        peers, scraper = gang["spec"]["ingress"]
        assert peers == {"from": [{"podSelector": gang["spec"]["podSelector"]}], "ports": [{"protocol": "TCP"}]}
        assert scraper["ports"] == [{"port": 9090, "protocol": "TCP"}]
        # it selects exactly the ranks
        wait_for(lambda: len(pods(kube, namespace, "mnist")) == 2, timeout=30, message="both ranks created")
        assert _selected(core, namespace, gang) == ["mnist-0", "mnist-1"]

        serving = wait_for(lambda: _policy(kube, namespace, "digits-serving"), ignore=(ApiException,), timeout=30)
        assert _owner(serving) == ("InferenceService", isvc["metadata"]["uid"], True)
        audience, serving_scraper = serving["spec"]["ingress"]
        assert audience == {"from": [{"podSelector": {}}], "ports": [{"port": 8080, "protocol": "TCP"}]}
        assert serving_scraper["ports"] == [{"port": 8080, "protocol": "TCP"}]
        servers = wait_for(lambda: _selected(core, namespace, serving), timeout=30, message="a serving pod")
        assert all(name.startswith("digits-") for name in servers) and "mnist-0" not in servers

        # who may connect follows the spec
        patch_spec(kube, namespace, ISVC, "digits", {"network": {"allowFrom": TEAMS}})
        changed = wait_for(
            lambda: _policy(kube, namespace, "digits-serving"),
            until=lambda p: p["spec"]["ingress"][0]["from"] == TEAMS,
            timeout=30,
            message="the policy follows spec.network.allowFrom",
        )
        assert changed["metadata"]["uid"] == serving["metadata"]["uid"]  # replaced in place, not re-created

        # a policy deleted by hand comes back
        client.NetworkingV1Api(kube).delete_namespaced_network_policy("mnist-gang", namespace)
        again = wait_for(
            lambda: _policy(kube, namespace, "mnist-gang"),
            until=lambda p: p["metadata"]["uid"] != gang["metadata"]["uid"],
            ignore=(ApiException,),
            timeout=30,
            message="the deleted policy made again",
        )
        assert again["spec"] == gang["spec"]

        # garbage collection takes it with its owner
        client.CustomObjectsApi(kube).delete_namespaced_custom_object(
            "aidc.io", "v1alpha1", namespace, "trainingjobs", "mnist"
        )
        wait_for(
            lambda: [
                p.metadata.name for p in client.NetworkingV1Api(kube).list_namespaced_network_policy(namespace).items
            ],
            until=lambda names: names == ["digits-serving"],
            timeout=60,
            message="the gang's policy deleted with its TrainingJob",
        )


def test_a_policy_of_that_name_someone_else_owns_is_reported_not_used(
    kube: client.ApiClient, crds_applied: list[str], namespace: str, run_operator: Any, wait_for: Callable[..., Any]
) -> None:
    squatter = {
        "metadata": {"name": "mnist-gang"},
        "spec": {"podSelector": {"matchLabels": {"app": "other"}}, "ingress": [{}]},  # admits everything
    }
    client.NetworkingV1Api(kube).create_namespaced_network_policy(namespace, squatter)
    with run_operator(namespace):
        create(kube, namespace, "trainingjobs", training_job_body("mnist"))
        job = wait_for(
            lambda: get(kube, namespace, "trainingjobs", "mnist"),
            until=lambda j: (condition(j, "Scheduled") or {}).get("reason") == "CreationFailed",
            timeout=30,
            message="the taken name reported",
        )
    assert "NetworkPolicy mnist-gang" in condition(job, "Scheduled")["message"]  # type: ignore[index]


def test_with_the_setting_off_no_policy_is_made(
    kube: client.ApiClient,
    crds_applied: list[str],
    namespace: str,
    run_operator: Any,
    wait_for: Callable[..., Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AIDC_NETWORK_POLICY", "false")
    core = client.CoreV1Api(kube)
    _models_claim(core, namespace)
    with run_operator(namespace):
        create(kube, namespace, "trainingjobs", training_job_body("mnist"))
        create(kube, namespace, ISVC, inference_service_body("digits", {"model": {"storageUri": "pvc://models/d"}}))
        # the passes that would have made the policies made these in the same batch
        wait_for(lambda: len(pods(kube, namespace, "mnist")) == 2, timeout=30, message="both ranks created")
        wait_for(
            lambda: client.AppsV1Api(kube).list_namespaced_deployment(namespace).items,
            timeout=30,
            message="the serving Deployment",
        )
        core.read_namespaced_service("digits", namespace)
        wait_for(
            lambda: get(kube, namespace, "trainingjobs", "mnist").get("status"),
            timeout=30,
            message="the job's first status, written once the pass's creates are done",
        )
    assert client.NetworkingV1Api(kube).list_namespaced_network_policy(namespace).items == []
