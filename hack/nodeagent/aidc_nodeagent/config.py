"""What one node agent is: its node's name, size and labels, where it keeps state, how it runs pods.

One frozen value carries every choice so the command line, the test fixtures and the demo build
the same node from the same defaults.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

LABEL_NODE_AGENT: Final = "aidc.io/node-agent"
"""Label (``"true"``) and taint key of a node whose pods the agent really runs."""

GPU_RESOURCE: Final = "nvidia.com/gpu"

DEFAULT_TAINTS: Final = (f"{LABEL_NODE_AGENT}=true:NoSchedule",)
"""Only pods that ask for the agent's node land on it; everything else keeps to kwok's nodes."""


def host_cpus() -> str:
    return str(os.cpu_count() or 1)


def host_memory() -> str:
    """MemTotal of ``/proc/meminfo`` as a Kubernetes quantity (``Ki``)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1])}Ki"
    except OSError:
        pass
    return "4Gi"


def parse_taint(text: str) -> dict[str, str]:
    """``key[=value]:Effect`` (kubectl's taint syntax) as a Node taint."""
    body, sep, effect = text.rpartition(":")
    if not sep or effect not in ("NoSchedule", "PreferNoSchedule", "NoExecute"):
        raise ValueError(f"taint {text!r}: expected key[=value]:NoSchedule|PreferNoSchedule|NoExecute")
    key, _, value = body.partition("=")
    taint = {"key": key, "effect": effect}
    if value:
        taint["value"] = value
    return taint


@dataclass(frozen=True)
class AgentConfig:
    """Everything that shapes one agent and its node."""

    kubeconfig: Path
    state_dir: Path
    node_name: str = "local-0"
    gpus: int = 0
    cpu: str = field(default_factory=host_cpus)
    memory: str = field(default_factory=host_memory)
    pods: int = 110
    labels: dict[str, str] = field(default_factory=dict)
    taints: tuple[str, ...] = DEFAULT_TAINTS
    # The interpreter that runs `python` in a container's command: the one with the trainer.
    python: Path = field(default_factory=lambda: Path(sys.executable))
    # A /24 for the pods (None: the first free 10.244.N.0/24, N derived from the state dir).
    pod_cidr: str | None = None
    kubelet_port: int = 0  # the log endpoint's port; 0 picks a free one
    restart_backoff_seconds: float = 10.0  # a crash-looping container waits 10 s, 20 s, ... up to the cap
    restart_backoff_cap_seconds: float = 300.0
    status_seconds: float = 10.0  # node status and lease renewal
    lease_seconds: int = 40

    def __post_init__(self) -> None:
        if self.gpus < 0:
            raise ValueError("gpus must be >= 0")
        for taint in self.taints:
            parse_taint(taint)
        object.__setattr__(self, "state_dir", Path(self.state_dir).absolute())
        object.__setattr__(self, "kubeconfig", Path(self.kubeconfig).absolute())
        # keep the venv's bin/python path as given: resolving the symlink would leave the venv
        object.__setattr__(self, "python", Path(self.python).absolute())
