"""GitOps readiness: what Argo CD or Flux applies (the chart's objects, the CRDs, the examples)
shows no drift while the operator works, because the operator writes only status.

Argo CD and Flux apply with server-side apply under their own field manager; `kubectl diff
--server-side` under the same manager is how they detect drift, and a second apply of the same
manifests must change nothing (the manager's managedFields entry, timestamp included, stays put).
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client, dynamic
from kubernetes.client.exceptions import ApiException

from tests.chart.rendering import REPO_ROOT, render_text, require_helm
from tests.cluster.resources import condition_is, exit_pod, get, pods

pytestmark = pytest.mark.cluster
MANAGER = "argocd-controller"
EXAMPLES = ("trainingjob-digits-cpu.yaml", "inferenceservice-digits.yaml")


@pytest.fixture
def manifests(kube: client.ApiClient, namespace: str, tmp_path: Path) -> Iterator[Path]:
    """The chart rendered for ``namespace`` (no hooks, no cluster-wide policy) and the examples,
    in one file; what they make outside the namespace (ClusterRole, binding) is deleted after."""
    require_helm()
    values = {"heartbeatPolicy": {"enabled": False}, "watchNamespaces": [namespace]}
    text = render_text(values, release=f"gitops-{namespace[-6:]}", namespace=namespace)
    docs = [d for d in yaml.safe_load_all(text) if d and "helm.sh/hook" not in d["metadata"].get("annotations", {})]
    for example in EXAMPLES:
        doc = yaml.safe_load((REPO_ROOT / "examples" / example).read_text())
        doc["metadata"]["namespace"] = namespace
        docs.append(doc)
    path = tmp_path / "manifests.yaml"
    path.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    yield path
    rbac = client.RbacAuthorizationV1Api(kube)
    for doc in docs:
        name = doc["metadata"]["name"]
        with contextlib.suppress(ApiException):
            if doc["kind"] == "ClusterRole":
                rbac.delete_cluster_role(name)
            elif doc["kind"] == "ClusterRoleBinding":
                rbac.delete_cluster_role_binding(name)


def _kubectl(testbed: Any, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["kubectl", "--kubeconfig", str(testbed.kubeconfig), *args],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def _apply(testbed: Any, manifests: Path) -> None:
    result = _kubectl(testbed, "apply", "--server-side", f"--field-manager={MANAGER}", "-f", str(manifests))
    assert result.returncode == 0, result.stderr


def _diff(testbed: Any, manifests: Path) -> subprocess.CompletedProcess[str]:
    return _kubectl(testbed, "diff", "--server-side", f"--field-manager={MANAGER}", "-f", str(manifests))


def _ours(kube: client.ApiClient, manifests: Path) -> dict[str, tuple[Any, list[dict[str, Any]]]]:
    """Per object: its generation and the managedFields entries of the GitOps manager."""
    api = dynamic.DynamicClient(kube)
    found = {}
    for doc in yaml.safe_load_all(manifests.read_text()):
        resource = api.resources.get(api_version=doc["apiVersion"], kind=doc["kind"])
        live = resource.get(name=doc["metadata"]["name"], namespace=doc["metadata"].get("namespace")).to_dict()
        entries = [m for m in live["metadata"]["managedFields"] if m["manager"] == MANAGER]
        found[f"{doc['kind']}/{doc['metadata']['name']}"] = (live["metadata"].get("generation"), entries)
    return found


def test_applying_the_same_manifests_again_shows_no_drift_while_the_operator_runs(
    kube: client.ApiClient,
    testbed: Any,
    crds_applied: list[str],
    namespace: str,
    run_operator: Any,
    wait_for: Callable[..., Any],
    manifests: Path,
) -> None:
    _apply(testbed, manifests)
    before = _ours(kube, manifests)
    with run_operator(namespace):
        running = wait_for(
            lambda: get(kube, namespace, "trainingjobs", "digits"),
            until=lambda j: condition_is(j, "Running"),
            timeout=60,
        )
        assert running["status"]["phase"] == "Running"  # the operator has written status
        wait_for(lambda: get(kube, namespace, "inferenceservices", "digits").get("status"))
        diff = _diff(testbed, manifests)
        assert diff.returncode == 0, diff.stdout + diff.stderr
        _apply(testbed, manifests)
        assert _ours(kube, manifests) == before  # the second apply changed nothing we own
        for pod in pods(kube, namespace, "digits"):
            exit_pod(kube, namespace, pod.metadata.name, 0)
        wait_for(
            lambda: get(kube, namespace, "trainingjobs", "digits"),
            until=lambda j: condition_is(j, "Succeeded"),
            timeout=60,
        )
        diff = _diff(testbed, manifests)
        assert diff.returncode == 0, diff.stdout + diff.stderr
    after = get(kube, namespace, "trainingjobs", "digits")
    assert not after["metadata"].get("finalizers")
    spec_managers = {m["manager"] for m in after["metadata"]["managedFields"] if m.get("subresource") != "status"}
    assert spec_managers == {MANAGER}  # nobody else wrote spec or metadata


def test_a_changed_manifest_is_seen_as_drift(testbed: Any, crds_applied: list[str], manifests: Path) -> None:
    """The check above can fail: an edited manifest does show a diff (exit code 1)."""
    _apply(testbed, manifests)
    edited = manifests.read_text().replace("epochs: 8", "epochs: 9")
    assert edited != manifests.read_text()
    manifests.write_text(edited)
    diff = _diff(testbed, manifests)
    assert diff.returncode == 1, diff.stderr
    assert "epochs: 9" in diff.stdout
