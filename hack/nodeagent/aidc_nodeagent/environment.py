"""A container's environment and command line, resolved as a kubelet resolves them.

Base variables first (what an image and a kubelet provide: PATH, HOSTNAME, the ``kubernetes``
Service's address), then ``envFrom`` and ``env`` in order, each value expanded with ``$(NAME)``
from the variables before it; ``valueFrom`` reads the pod's own fields, a ConfigMap or a Secret.
The command and args are expanded the same way.

The image is not pulled: the process runs on the host, with the interpreter that has the trainer
installed. ``python``/``python3`` at the head of a command are that interpreter, and its folder
leads PATH.
"""

from __future__ import annotations

import base64
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aidc_nodeagent.downward import FieldError, field_value, resource_value

_REFERENCE = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
PYTHON_NAMES = ("python", "python3")


class ConfigError(ValueError):
    """The container's configuration cannot be resolved (reason CreateContainerConfigError)."""


def expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion: a known name is replaced, an unknown one kept, ``$$`` is ``$``."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        return env.get(name, match.group(0))

    return _REFERENCE.sub(replace, text)


Lookup = Callable[[str, str], dict[str, Any] | None]
"""``lookup(kind, name)``: a ConfigMap (``configmaps``) or Secret (``secrets``) of the pod's namespace."""


def _data(kind: str, found: dict[str, Any]) -> dict[str, str]:
    if kind == "secrets":
        return {k: base64.b64decode(v).decode(errors="replace") for k, v in (found.get("data") or {}).items()}
    return dict(found.get("data") or {})


def _key_ref(kind: str, ref: dict[str, Any], lookup: Lookup) -> str | None:
    found = lookup(kind, ref["name"])
    optional = bool(ref.get("optional"))
    if found is None:
        if optional:
            return None
        raise ConfigError(f'{kind[:-1]} "{ref["name"]}" not found')
    data = _data(kind, found)
    if ref["key"] not in data:
        if optional:
            return None
        raise ConfigError(f"couldn't find key {ref['key']} in {kind[:-1]} {ref['name']}")
    return data[ref["key"]]


def container_environment(
    pod: dict[str, Any],
    container: dict[str, Any],
    base: dict[str, str],
    lookup: Lookup,
    pod_ip: str | None,
    host_ip: str,
    allocatable: dict[str, str],
) -> dict[str, str]:
    """The environment of ``container``: ``base``, then envFrom, then env, expanded in order."""
    env = dict(base)
    for source in container.get("envFrom") or []:
        prefix = source.get("prefix", "")
        for kind, key in (("configmaps", "configMapRef"), ("secrets", "secretRef")):
            if key not in source:
                continue
            ref = source[key]
            found = lookup(kind, ref["name"])
            if found is None:
                if ref.get("optional"):
                    continue
                raise ConfigError(f'{kind[:-1]} "{ref["name"]}" not found')
            env.update({f"{prefix}{k}": v for k, v in _data(kind, found).items()})
    for item in container.get("env") or []:
        name = item["name"]
        if "valueFrom" not in item:
            env[name] = expand(item.get("value", ""), env)
            continue
        source = item["valueFrom"]
        value: str | None
        try:
            if "fieldRef" in source:
                value = field_value(pod, source["fieldRef"]["fieldPath"], pod_ip, host_ip)
            elif "resourceFieldRef" in source:
                value = resource_value(container, source["resourceFieldRef"], allocatable)
            elif "configMapKeyRef" in source:
                value = _key_ref("configmaps", source["configMapKeyRef"], lookup)
            elif "secretKeyRef" in source:
                value = _key_ref("secrets", source["secretKeyRef"], lookup)
            else:
                raise ConfigError(f"env {name}: unsupported valueFrom {sorted(source)}")
        except FieldError as error:
            raise ConfigError(f"env {name}: {error}") from None
        if value is not None:
            env[name] = value
    return env


def command_line(container: dict[str, Any], env: dict[str, str], python: Path) -> list[str]:
    """``command`` + ``args`` expanded; ``python`` is the host interpreter that has the trainer."""
    command = [expand(part, env) for part in container.get("command") or []]
    args = [expand(part, env) for part in container.get("args") or []]
    if not command:
        raise ConfigError("the image's entrypoint is unknown here: the container needs a command")
    if command[0] in PYTHON_NAMES:
        command[0] = str(python)
    return command + args


def host_paths(python: Path) -> list[Path]:
    """What the processes need from the host: the interpreter's environment and its base install,
    and this repository (the trainer is installed from it in editable mode)."""
    venv = python.parent.parent
    return [venv, Path(sys.base_prefix), Path(__file__).resolve().parents[3]]


def check_mounts(targets: list[str], python: Path) -> None:
    """A mount path that would hide the host's Python (a volume at /root, say) is a config error."""
    for target in targets:
        mount = Path(target)
        for needed in host_paths(python):
            if mount == needed or mount in needed.parents:
                raise ConfigError(f"mountPath {target} would hide {needed}, which the node's processes need")


def base_environment(hostname: str, python: Path, service: tuple[str, int] | None) -> dict[str, str]:
    """What the image and the kubelet give every container before its own ``env``."""
    env = {
        "PATH": f"{python.parent}:{SYSTEM_PATH}",
        "HOME": "/root",
        "HOSTNAME": hostname,
        "LANG": "C.UTF-8",
    }
    if service is not None:
        host, port = service
        env |= {
            "KUBERNETES_SERVICE_HOST": host,
            "KUBERNETES_SERVICE_PORT": str(port),
            "KUBERNETES_SERVICE_PORT_HTTPS": str(port),
            "KUBERNETES_PORT": f"tcp://{host}:{port}",
            "KUBERNETES_PORT_443_TCP": f"tcp://{host}:{port}",
            "KUBERNETES_PORT_443_TCP_PROTO": "tcp",
            "KUBERNETES_PORT_443_TCP_PORT": str(port),
            "KUBERNETES_PORT_443_TCP_ADDR": host,
        }
    return env
