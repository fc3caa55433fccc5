"""The state file of a running test bed: which processes run it and on which ports.

`down` and `status` may run in another process than `up`, so everything they need is written to
``state.json`` as soon as a component starts (a start that fails half-way can still be stopped).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from aidc_testbed.components import Ports
from aidc_testbed.process import RunningProcess


@dataclass
class TestbedState:
    """What ``state.json`` holds."""

    __test__ = False

    ports: Ports
    config: dict[str, Any]
    processes: list[RunningProcess] = field(default_factory=list)
    started_at: float = 0.0
    ready_seconds: float | None = None

    def save(self, path: Path) -> None:
        data = {
            "ports": asdict(self.ports),
            "config": self.config,
            "processes": [asdict(p) for p in self.processes],
            "started_at": self.started_at,
            "ready_seconds": self.ready_seconds,
        }
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2) + "\n")
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> TestbedState | None:
        """The recorded state, or None when there is none (never started, or cleanly stopped)."""
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        return cls(
            ports=Ports(**data["ports"]),
            config=data["config"],
            processes=[RunningProcess(**p) for p in data["processes"]],
            started_at=data["started_at"],
            ready_seconds=data.get("ready_seconds"),
        )
