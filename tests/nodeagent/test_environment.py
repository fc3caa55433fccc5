"""A container's environment and command line, resolved as a kubelet resolves them."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest

from aidc_nodeagent.environment import (
    ConfigError,
    base_environment,
    check_mounts,
    command_line,
    container_environment,
    expand,
)

POD = {
    "metadata": {"name": "digits-1", "namespace": "team", "uid": "u-1", "labels": {"app": "x"}},
    "spec": {"nodeName": "local-0", "serviceAccountName": "aidc-trainer"},
}
OBJECTS: dict[tuple[str, str], dict[str, Any]] = {
    ("configmaps", "settings"): {"data": {"LEVEL": "debug", "MODE": "fast"}},
    ("secrets", "creds"): {"data": {"TOKEN": base64.b64encode(b"s3cret").decode()}},
}


def lookup(kind: str, name: str) -> dict[str, Any] | None:
    return OBJECTS.get((kind, name))


def resolve(container: dict[str, Any]) -> dict[str, str]:
    return container_environment(POD, container, {"BASE": "b"}, lookup, "10.244.7.3", "127.0.0.1", {"cpu": "8"})


def test_field_refs_key_refs_and_expansion_in_order() -> None:
    env = resolve(
        {
            "env": [
                {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
                {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
                {"name": "LEVEL", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "LEVEL"}}},
                {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "TOKEN"}}},
                {"name": "CPUS", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}}},
                {"name": "WHERE", "value": "$(POD).$(NS) at $(IP) $(UNKNOWN) $$(POD)"},
            ]
        }
    )
    assert env["POD"] == "digits-1" and env["NS"] == "team" and env["IP"] == "10.244.7.3"
    assert env["NODE"] == "local-0" and env["APP"] == "x" and env["LEVEL"] == "debug" and env["TOKEN"] == "s3cret"
    assert env["CPUS"] == "8"  # no limit: the node's allocatable, as a kubelet reports it
    assert env["WHERE"] == "digits-1.team at 10.244.7.3 $(UNKNOWN) $(POD)"
    assert env["BASE"] == "b"


def test_env_from_with_prefix_and_env_overrides_it() -> None:
    env = resolve(
        {
            "envFrom": [{"configMapRef": {"name": "settings"}, "prefix": "CFG_"}],
            "env": [{"name": "CFG_MODE", "value": "slow"}],
        }
    )
    assert env["CFG_LEVEL"] == "debug" and env["CFG_MODE"] == "slow"


@pytest.mark.parametrize(
    "item",
    [
        {"name": "X", "valueFrom": {"configMapKeyRef": {"name": "absent", "key": "k"}}},
        {"name": "X", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "absent"}}},
        {"name": "X", "valueFrom": {"fieldRef": {"fieldPath": "spec.nonsense"}}},
    ],
)
def test_what_cannot_be_resolved_is_a_config_error(item: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        resolve({"env": [item]})


def test_optional_references_may_be_missing() -> None:
    env = resolve(
        {"env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "absent", "key": "k", "optional": True}}}]}
    )
    assert "X" not in env


def test_python_in_a_command_is_the_nodes_interpreter_and_args_expand() -> None:
    python = Path("/opt/venv/bin/python")
    argv = command_line(
        {"command": ["python", "-m", "aidc_trainer"], "args": ["--config", "$(CFG)"]}, {"CFG": "c.json"}, python
    )
    assert argv == ["/opt/venv/bin/python", "-m", "aidc_trainer", "--config", "c.json"]
    assert base_environment("h", python, ("10.96.0.1", 443))["PATH"].startswith("/opt/venv/bin:")
    with pytest.raises(ConfigError, match="needs a command"):
        command_line({"image": "busybox"}, {}, python)


def test_a_mount_over_the_nodes_python_is_refused() -> None:
    python = Path("/work/main/.venv/bin/python")
    check_mounts(["/mnt/checkpoints", "/var/run/secrets/kubernetes.io/serviceaccount"], python)
    with pytest.raises(ConfigError, match=r"would hide /work/main/\.venv"):
        check_mounts(["/work"], python)


def test_expand_leaves_unknown_names() -> None:
    assert expand("$(A)-$(B)", {"A": "1"}) == "1-$(B)"
