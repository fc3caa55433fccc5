"""What cannot be built here (no Docker engine) is still read: the operator's Dockerfile, the build
context it gets, the kind cluster and its end-to-end script, and the CI workflow that runs them."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
import yaml

from tests.chart.rendering import REPO_ROOT

DOCKERFILE = REPO_ROOT / "operator" / "Dockerfile"
KIND_E2E = REPO_ROOT / "hack" / "kind-e2e.sh"


def _stages() -> list[list[str]]:
    """The Dockerfile's instructions (continuation lines joined, comments dropped), per stage."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    stages: list[list[str]] = []
    for line in lines:
        if line.upper().startswith("FROM "):
            stages.append([])
        if stages:
            stages[-1].append(line)
    return stages


def test_operator_image_is_multi_stage_and_ships_only_the_venv() -> None:
    build, final = _stages()
    assert build[0].startswith("FROM ${PYTHON_IMAGE} AS build")
    assert "ARG PYTHON_IMAGE=python:3.11-slim" in DOCKERFILE.read_text()
    assert any("pip wheel" in line and "/wheels ." in line for line in build)  # a wheel of the root project
    assert any("python -m venv /opt/aidc" in line for line in build)
    assert any("pip uninstall --yes pip setuptools" in line for line in build)  # no installer in the image
    copies = [line for line in final if line.startswith("COPY")]
    assert copies == ["COPY --from=build /opt/aidc /opt/aidc"]
    assert not any(line.startswith("RUN") for line in final)  # nothing built or installed in the final stage


def test_operator_image_runs_as_non_root_and_writes_nothing() -> None:
    final = _stages()[-1]
    user = next(line for line in final if line.startswith("USER "))
    uid = user.split()[1].split(":")[0]
    assert uid.isdigit() and int(uid) >= 10000  # numeric, so runAsNonRoot can check it
    env = " ".join(line for line in final if line.startswith("ENV "))
    assert "PYTHONDONTWRITEBYTECODE=1" in env and "HOME=/tmp" in env
    assert 'ENTRYPOINT ["aidc", "run"]' in final
    assert "EXPOSE 8000 8080" in final


def test_build_context_holds_only_what_the_wheel_needs() -> None:
    patterns = [
        line for line in (REPO_ROOT / ".dockerignore").read_text().splitlines() if line and not line.startswith("#")
    ]
    assert patterns[0] == "*"  # an allow-list: .venv, .cache, tests and the trainer never reach the daemon
    allowed = {p[1:] for p in patterns if p.startswith("!")}
    assert allowed == {"pyproject.toml", "README.md", "operator/aidc"}
    copied = {part for line in _stages()[0] if line.startswith("COPY") for part in line.split()[1:-1]}
    assert copied == {"pyproject.toml", "README.md", "operator/aidc"}


def test_kind_cluster_has_a_control_plane_two_workers_and_host_storage() -> None:
    config = yaml.safe_load((REPO_ROOT / "kind-config.yaml").read_text())
    assert config["apiVersion"] == "kind.x-k8s.io/v1alpha4"
    roles = [node["role"] for node in config["nodes"]]
    assert roles == ["control-plane", "worker", "worker"]
    for worker in config["nodes"][1:]:
        assert worker["extraMounts"] == [
            {"hostPath": "/tmp/aidc-kind/storage", "containerPath": "/var/local-path-provisioner"}
        ]


def test_kind_e2e_script_parses_and_does_what_it_says() -> None:
    subprocess.run(["bash", "-n", str(KIND_E2E)], check=True)
    text = KIND_E2E.read_text()
    assert text.startswith("#!/usr/bin/env bash") and "set -euo pipefail" in text
    for step in (
        "kind create cluster",
        "docker build -f operator/Dockerfile",
        "docker build -f trainer-image/Dockerfile --build-arg VARIANT=cpu",
        "kind load docker-image",
        'install "$RELEASE" charts/aidc-operator',
        'test "$RELEASE"',
        "examples/trainingjob-digits-cpu.yaml",
        "--for=condition=Succeeded",
        "examples/inferenceservice-digits.yaml",
        "--for=condition=Ready",
        "port-forward service/digits",
        "/v2/models/digits/infer",
        "kind delete cluster",
    ):
        assert step in text, step
    for example in ("trainingjob-digits-cpu.yaml", "inferenceservice-digits.yaml"):
        assert (REPO_ROOT / "examples" / example).is_file()


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed")
def test_kind_e2e_script_is_shellcheck_clean() -> None:
    subprocess.run(["shellcheck", str(KIND_E2E)], check=True)


def test_ci_runs_the_tests_and_the_kind_end_to_end() -> None:
    workflow = yaml.safe_load((REPO_ROOT / ".github" / "workflows" / "ci.yml").read_text())
    steps = {name: [s.get("run") for s in job["steps"]] for name, job in workflow["jobs"].items()}
    # as root: the local node agent of the e2e tests needs network and mount namespaces
    assert 'sudo -E env "PATH=$PATH" bash .ci/run' in steps["test"]
    assert "make kind-e2e" in steps["kind-e2e"]
