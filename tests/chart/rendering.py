"""The Helm chart as the tests see it: the helm binary of the test bed, rendered objects, RBAC rules.

``helm`` is the one ``make tools`` builds from its pinned module (``.cache/tools/bin/helm``);
tests that need it are skipped while it is not built. Helm's cache, config and data folders
are kept in a temporary folder, so the tests never touch ``~/.config/helm``.
"""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
CHART = REPO_ROOT / "charts" / "aidc-operator"
TOOLS = Path(os.environ.get("AIDC_TOOLS", REPO_ROOT / ".cache" / "tools" / "bin"))
HELM = TOOLS / "helm"
_HELM_HOME = Path(tempfile.mkdtemp(prefix="aidc-helm-"))
atexit.register(shutil.rmtree, _HELM_HOME, ignore_errors=True)

Rule = dict[str, list[str]]


def require_helm() -> Path:
    """The helm binary, or a skip when `make tools` has not built it."""
    if not HELM.is_file():
        pytest.skip(f"{HELM} is not built (make tools)")
    return HELM


def helm(*args: str, kubeconfig: Path | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run helm with its state in a temporary folder; output captured, failure shown in the error."""
    env = {
        **os.environ,
        "HELM_CACHE_HOME": str(_HELM_HOME / "cache"),
        "HELM_CONFIG_HOME": str(_HELM_HOME / "config"),
        "HELM_DATA_HOME": str(_HELM_HOME / "data"),
    }
    if kubeconfig is not None:
        env["KUBECONFIG"] = str(kubeconfig)
    result = subprocess.run(
        [str(require_helm()), *args], env=env, capture_output=True, text=True, timeout=300, check=False
    )
    if check and result.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
    return result


def values_file(values: Mapping[str, Any], folder: Path | None = None) -> Path:
    """``values`` written to a YAML file for ``helm -f``."""
    handle, name = tempfile.mkstemp(prefix="values-", suffix=".yaml", dir=folder)
    with os.fdopen(handle, "w") as out:
        yaml.safe_dump(dict(values), out)
    return Path(name)


def render_text(
    values: Mapping[str, Any] | None = None,
    *,
    release: str = "aidc-operator",
    namespace: str = "aidc-system",
    extra: Sequence[str] = (),
) -> str:
    """`helm template` of the chart with ``values`` (CRDs and test hooks included), as YAML text."""
    path = values_file(values or {})
    try:
        args = ["template", release, str(CHART), "--namespace", namespace, "--include-crds", "-f", str(path)]
        return helm(*args, *extra).stdout
    finally:
        path.unlink()


def render(
    values: Mapping[str, Any] | None = None, *, release: str = "aidc-operator", namespace: str = "aidc-system"
) -> list[dict[str, Any]]:
    """The objects `helm template` renders for ``values``."""
    return [doc for doc in yaml.safe_load_all(render_text(values, release=release, namespace=namespace)) if doc]


def of_kind(objects: Sequence[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o.get("kind") == kind]


def one(objects: Sequence[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = of_kind(objects, kind)
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def named(objects: Sequence[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    """The one ``kind`` called ``name`` (the operator's ClusterRole among the users' roles)."""
    found = [o for o in of_kind(objects, kind) if o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def operator_role(objects: Sequence[dict[str, Any]], release: str = "aidc-operator") -> dict[str, Any]:
    """The ClusterRole the operator's own ServiceAccount is bound to (the chart ships others)."""
    return named(objects, "ClusterRole", release)


def rules(objects: Sequence[dict[str, Any]]) -> Iterator[tuple[str, str | None, Rule]]:
    """Every RBAC rule as (kind of role, its namespace, rule)."""
    for role in objects:
        if role.get("kind") in ("Role", "ClusterRole"):
            for rule in role.get("rules") or []:
                yield role["kind"], role["metadata"].get("namespace"), rule


def grants(rule_list: Sequence[Rule]) -> set[tuple[str, str, str]]:
    """Rules flattened to (apiGroup, resource, verb) triples, for comparing two sets of rules."""
    return {
        (group, resource, verb)
        for rule in rule_list
        for group in rule.get("apiGroups", [])
        for resource in rule.get("resources", [])
        for verb in rule.get("verbs", [])
    }


def operator_container(objects: Sequence[dict[str, Any]]) -> dict[str, Any]:
    container: dict[str, Any] = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    return container


def environment(container: Mapping[str, Any]) -> dict[str, str]:
    """The container's plain variables (those from the downward API left out: ``downward_api``)."""
    return {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}


def downward_api(container: Mapping[str, Any]) -> dict[str, str]:
    """The container's variables from the downward API, by the field they read."""
    return {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in container.get("env", []) if "valueFrom" in e}
