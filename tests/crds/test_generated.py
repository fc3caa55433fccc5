"""The checked-in CRDs are exactly what the models generate, and they are structural."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from aidc.cli import main as aidc
from aidc.crdgen.definitions import dump, render_crds

ROOT = Path(__file__).resolve().parents[2]
TOP = ROOT / "crds"
CHART = ROOT / "charts" / "aidc-operator" / "crds"

# What apiextensions.k8s.io/v1 accepts in a structural schema (no $ref, no oneOf at will...).
ALLOWED_KEYWORDS = {
    "type", "description", "properties", "required", "items", "additionalProperties", "enum", "default",
    "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "minLength", "maxLength", "pattern",
    "minItems", "maxItems", "minProperties", "maxProperties", "format", "anyOf", "nullable",
    "x-kubernetes-validations", "x-kubernetes-preserve-unknown-fields", "x-kubernetes-int-or-string",
    "x-kubernetes-list-type", "x-kubernetes-list-map-keys",
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(render_crds()))
def test_checked_in_crds_match_the_models(name: str) -> None:
    expected = dump(render_crds()[name])
    assert (TOP / name).read_text() == expected, "crds/ is stale: run `make crds`"


@pytest.mark.parametrize("name", sorted(render_crds()))
def test_chart_crds_are_identical_to_the_top_level_ones(name: str) -> None:
    assert (CHART / name).read_bytes() == (TOP / name).read_bytes()


def test_no_other_files_in_the_crd_folders() -> None:
    assert sorted(p.name for p in TOP.glob("*.yaml")) == sorted(render_crds())
    assert sorted(p.name for p in CHART.glob("*.yaml")) == sorted(render_crds())


def test_check_mode_fails_on_a_stale_file(tmp_path: Path) -> None:
    assert aidc(["crds", "--out", str(tmp_path)]) == 0
    assert aidc(["crds", "--check", "--out", str(tmp_path)]) == 0
    stale = tmp_path / sorted(render_crds())[0]
    stale.write_text(stale.read_text().replace("replicas", "replicaz", 1))
    assert aidc(["crds", "--check", "--out", str(tmp_path)]) == 1


def _walk(node: dict[str, Any], path: str) -> list[str]:
    problems = []
    unknown = set(node) - ALLOWED_KEYWORDS
    if unknown:
        problems.append(f"{path}: unsupported keywords {sorted(unknown)}")
    special = node.get("x-kubernetes-preserve-unknown-fields") or node.get("x-kubernetes-int-or-string")
    if "type" not in node and not special:
        problems.append(f"{path}: no type")
    for name, child in node.get("properties", {}).items():
        problems += _walk(child, f"{path}.{name}")
        if path != "" and "description" not in child:
            problems.append(f"{path}.{name}: no description")
    if "items" in node:
        problems += _walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        problems += _walk(node["additionalProperties"], f"{path}{{}}")
    return problems


@pytest.mark.parametrize("name", sorted(render_crds()))
def test_schemas_are_structural_and_described(name: str) -> None:
    crd = yaml.safe_load((TOP / name).read_text())
    (version,) = crd["spec"]["versions"]
    assert "$ref" not in (TOP / name).read_text()
    assert _walk(version["schema"]["openAPIV3Schema"], "") == []


def test_names_printer_columns_and_subresources() -> None:
    crds = {c["spec"]["names"]["kind"]: c for c in render_crds().values()}
    tj, isvc = crds["TrainingJob"], crds["InferenceService"]
    assert tj["spec"]["names"]["shortNames"] == ["tj"]
    assert "isvc" not in isvc["spec"]["names"]["shortNames"]  # KServe's
    for crd in (tj, isvc):
        assert crd["spec"]["names"]["categories"] == ["aidc"]
        (version,) = crd["spec"]["versions"]
        assert set(version["subresources"]) == {"status", "scale"}
    columns = lambda crd: [c["name"] for c in crd["spec"]["versions"][0]["additionalPrinterColumns"]]  # noqa: E731
    assert columns(tj)[:5] == ["Phase", "Ready", "Progress", "Restarts", "Age"]
    assert columns(isvc) == ["Phase", "Ready", "URL", "Protocol", "Model", "Age", "Reason"]
    # the reason of the phase, not the first condition a JSONPath matches (AllRanksScheduled on a Failed job)
    for crd in (tj, isvc):
        reason = next(c for c in crd["spec"]["versions"][0]["additionalPrinterColumns"] if c["name"] == "Reason")
        assert (reason["jsonPath"], reason["priority"]) == (".status.reason", 1)


def test_api_reference_is_generated_from_the_models() -> None:
    from aidc.crdgen.reference import render_reference

    text = (ROOT / "docs" / "api-reference.md").read_text()
    assert text == render_reference(), "docs/api-reference.md is stale: run `make crds`"
    assert "`spec.failurePolicy.hangTimeoutSeconds`" in text and "`spec.model.storageUri`" in text


def test_docs_and_scripts_never_name_inferenceservices_bare_to_kubectl() -> None:
    """KServe's InferenceService has the same plural: a bare name may resolve to it, so say infsvc or the full name."""
    import re

    bare = re.compile(r"(?<![\w./-])inferenceservices?(?=[\s/,`]|$)", re.IGNORECASE)
    files = [
        ROOT / "README.md",
        *(ROOT / "docs").rglob("*.md"),
        *(ROOT / "examples").glob("*"),
        *(ROOT / "hack").glob("*.sh"),
    ]
    found = [
        f"{path.relative_to(ROOT)}: {line.strip()}"
        for path in files
        if path.is_file() and path.name != "api-reference.md"
        for line in path.read_text().splitlines()
        # the line that warns of the ambiguity names it on purpose
        if "kubectl" in line.lower() and "KServe" not in line and bare.search(line)
    ]
    assert found == []
