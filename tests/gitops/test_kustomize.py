"""The kustomize base of config/: it builds, it is the chart's cluster-wide install with default
values (same CRDs, RBAC, Deployment, policy), and the API server admits every object of it."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.chart.rendering import REPO_ROOT, grants, named, of_kind, one, operator_container, render

CONFIG = REPO_ROOT / "config" / "default"
RESTRICTOR = ("--load-restrictor", "LoadRestrictionsNone")
# the chart's user roles (templates/user-roles.yaml) for the release aidc-operator
USER_ROLES = ("aidc-operator-admin", "aidc-operator-edit", "aidc-operator-view", "aidc-operator-inference-client")


def _kustomize(*extra: str) -> subprocess.CompletedProcess[str]:
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not installed")
    return subprocess.run(
        ["kubectl", "kustomize", *extra, str(CONFIG)], capture_output=True, text=True, timeout=60, check=False
    )


@pytest.fixture(scope="module")
def built() -> list[dict[str, Any]]:
    result = _kustomize(*RESTRICTOR)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def test_the_base_reads_crds_from_outside_its_folder() -> None:
    """Why the docs say --load-restrictor LoadRestrictionsNone: without it the build is refused."""
    result = _kustomize()
    assert result.returncode != 0
    assert "is not in or below" in result.stderr


def test_the_base_holds_what_an_install_needs(built: list[dict[str, Any]]) -> None:
    kinds = sorted(o["kind"] for o in built)
    assert kinds == sorted([
        "Namespace", "CustomResourceDefinition", "CustomResourceDefinition", "ServiceAccount", "ClusterRole",
        *["ClusterRole"] * len(USER_ROLES), "ClusterRole", "ClusterRoleBinding", "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding", "Deployment", "Service", "Role", "RoleBinding", "PodDisruptionBudget",
    ])  # fmt: skip
    namespace = one(built, "Namespace")
    assert namespace["metadata"]["name"] == "aidc-system"
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    for obj in built:
        if obj["kind"] in ("ServiceAccount", "Deployment", "Service", "Role", "RoleBinding", "PodDisruptionBudget"):
            assert obj["metadata"]["namespace"] == "aidc-system"
        assert obj["metadata"]["labels"]["app.kubernetes.io/part-of"] == "aidc"
    assert one(built, "ClusterRoleBinding")["subjects"] == [
        {"kind": "ServiceAccount", "name": "aidc-operator", "namespace": "aidc-system"}
    ]


def test_the_crds_are_the_generated_ones(built: list[dict[str, Any]]) -> None:
    generated = {
        doc["metadata"]["name"]: doc for path in sorted((REPO_ROOT / "crds").glob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text()) if doc
    }  # fmt: skip
    for crd in of_kind(built, "CustomResourceDefinition"):
        labels = crd["metadata"].pop("labels")
        assert labels == {"app.kubernetes.io/part-of": "aidc"}
        expected = generated[crd["metadata"]["name"]]
        expected["metadata"].pop("labels", None)
        assert crd == expected


def test_the_base_is_the_charts_cluster_wide_install(built: list[dict[str, Any]]) -> None:
    chart = render({}, release="aidc-operator", namespace="aidc-system")
    for name in ("aidc-operator", *USER_ROLES):
        ours, theirs = named(built, "ClusterRole", name), named(chart, "ClusterRole", name)
        assert grants(ours["rules"]) == grants(theirs["rules"]), name
        assert ours["rules"] == theirs["rules"], name  # order and grouping too
        aggregation = {k: v for k, v in theirs["metadata"]["labels"].items() if k.startswith("rbac.authorization")}
        assert aggregation.items() <= ours["metadata"]["labels"].items(), name
    reviewer = "aidc-operator-inference-reviewer"
    assert named(built, "ClusterRole", reviewer)["rules"] == named(chart, "ClusterRole", reviewer)["rules"]
    ours, theirs = operator_container(built), operator_container(chart)
    assert ours["image"] == theirs["image"] == "ghcr.io/aidc/operator:0.1.0"
    assert ours == theirs
    pod_ours = one(built, "Deployment")["spec"]["template"]["spec"]
    pod_theirs = one(chart, "Deployment")["spec"]["template"]["spec"]
    for key in ("securityContext", "volumes", "automountServiceAccountToken", "serviceAccountName"):
        assert pod_ours[key] == pod_theirs[key], key
    for key in ("replicas", "strategy"):
        assert one(built, "Deployment")["spec"][key] == one(chart, "Deployment")["spec"][key], key
    for built_or_chart, pod in ((built, pod_ours), (chart, pod_theirs)):  # the chart's instance label is the release's
        (term,) = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
        assert term["weight"] == 100 and term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
        selector = one(built_or_chart, "Deployment")["spec"]["selector"]
        assert term["podAffinityTerm"]["labelSelector"] == selector
    assert one(built, "Role")["rules"] == one(chart, "Role")["rules"]  # the Lease's, named alike
    assert one(built, "RoleBinding")["subjects"] == one(chart, "RoleBinding")["subjects"]
    for built_or_chart in (built, chart):
        budget = one(built_or_chart, "PodDisruptionBudget")["spec"]
        assert budget == {"maxUnavailable": 1, "selector": one(built_or_chart, "Deployment")["spec"]["selector"]}
    assert one(built, "Service")["spec"]["ports"] == one(chart, "Service")["spec"]["ports"]
    # kustomize re-encodes the folded CEL expressions with extra blank lines: whitespace to CEL
    assert _policies(built) == _policies(chart)


def _policies(objects: list[dict[str, Any]]) -> list[Any]:
    def squeeze(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: squeeze(v) for k, v in value.items()}
        if isinstance(value, list):
            return [squeeze(v) for v in value]
        return " ".join(value.split()) if isinstance(value, str) else value

    policies = [squeeze(o) for o in objects if o["kind"].startswith("ValidatingAdmissionPolicy")]
    assert len(policies) == 2
    return policies


@pytest.mark.cluster
def test_the_api_server_admits_the_base(
    built: list[dict[str, Any]], testbed: Any, crds_applied: list[str], namespace: str, tmp_path: Path
) -> None:
    """Server-side dry run, moved into this test's namespace (a dry-run Namespace is not created).
    Forced: kustomize re-encodes the policy's folded CEL with extra blank lines, so it conflicts
    with a policy applied from the chart's file (same CEL, other text); nothing is written."""
    docs = []
    for obj in built:
        if obj["kind"] == "Namespace":
            continue
        if "namespace" in obj["metadata"]:
            obj["metadata"]["namespace"] = namespace
        for subject in obj.get("subjects", []):
            subject["namespace"] = namespace
        docs.append(obj)
    manifest = tmp_path / "base.yaml"
    manifest.write_text(yaml.safe_dump_all(docs))
    result = subprocess.run(
        ["kubectl", "--kubeconfig", str(testbed.kubeconfig), "apply", "--server-side", "--dry-run=server",
         "--field-manager=aidc-kustomize-tests", "--force-conflicts", "-f", str(manifest)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("serverside-applied") == len(docs), result.stdout
