"""Where the node agent keeps what it knows, under its state directory.

Everything a restarted agent needs to find its pods again lives in files: the node's network,
one folder per pod (its address, sandbox and volumes) and, per container attempt, the shim's
spec, the process id, the exit record and the log. Written down once so the agent, the shim,
``down`` and the log endpoint agree on the paths.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_ATTEMPT = re.compile(r"^(\d+)\.json$")


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` atomically: a reader never sees half a file (write, fsync, rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = path.with_name(f".{path.name}.tmp")
    with scratch.open("w") as handle:
        json.dump(data, handle, sort_keys=True)
        handle.flush()
        os.fsync(handle.fileno())
    scratch.replace(path)


def read_json(path: Path) -> Any:
    """The JSON document at ``path``, or None when it does not exist (yet) or is unreadable."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


@dataclass(frozen=True)
class ContainerDir:
    """The files of one container, one set per attempt (restart count)."""

    path: Path

    def spec(self, attempt: int) -> Path:
        """What the shim runs: namespaces, mounts, argv, environment (see :mod:`aidc_nodeagent.shim`)."""
        return self.path / f"{attempt}.json"

    def pid(self, attempt: int) -> Path:
        return self.path / f"{attempt}.pid"

    def exit(self, attempt: int) -> Path:
        return self.path / f"{attempt}.exit"

    def log(self, attempt: int) -> Path:
        return self.path / f"{attempt}.log"

    def termination(self, attempt: int) -> Path:
        """The container's termination message file (``terminationMessagePath`` maps here)."""
        return self.path / f"{attempt}.termination"

    def attempts(self) -> list[int]:
        """Every attempt started so far, oldest first."""
        if not self.path.is_dir():
            return []
        found = (_ATTEMPT.match(p.name) for p in self.path.iterdir())
        return sorted(int(m.group(1)) for m in found if m)


@dataclass(frozen=True)
class PodDir:
    """The folder of one pod: ``<state>/pods/<namespace>_<name>_<uid>``."""

    path: Path

    @property
    def record(self) -> Path:
        """The sandbox: uid, name, address, network namespace, GPUs (see :class:`PodRecord`)."""
        return self.path / "pod.json"

    @property
    def hosts(self) -> Path:
        """The pod's ``/etc/hosts``, bind-mounted and rewritten in place as the node's pods change."""
        return self.path / "hosts"

    @property
    def resolv_conf(self) -> Path:
        """The pod's ``/etc/resolv.conf``."""
        return self.path / "resolv.conf"

    @property
    def volumes(self) -> Path:
        return self.path / "volumes"

    def volume(self, name: str) -> Path:
        return self.volumes / name

    def container(self, name: str) -> ContainerDir:
        return ContainerDir(self.path / "containers" / name)


@dataclass(frozen=True)
class Layout:
    """The state directory of one agent."""

    root: Path

    @property
    def pods(self) -> Path:
        return self.root / "pods"

    @property
    def network(self) -> Path:
        """The node's bridge and pod subnet, kept so a restarted agent reuses them."""
        return self.root / "network.json"

    @property
    def agent(self) -> Path:
        """The running agent: pid, node name, kubelet port."""
        return self.root / "agent.json"

    @property
    def tls(self) -> Path:
        """The self-signed serving certificate of the kubelet endpoint (logs)."""
        return self.root / "tls"

    def pod(self, namespace: str, name: str, uid: str) -> PodDir:
        return PodDir(self.pods / f"{namespace}_{name}_{uid}")

    def pod_dirs(self) -> list[PodDir]:
        if not self.pods.is_dir():
            return []
        return [PodDir(p) for p in sorted(self.pods.iterdir()) if p.is_dir()]
