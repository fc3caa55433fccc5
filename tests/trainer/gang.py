"""Run the real trainer as a gang of local processes (gloo on CPU), the way pods would.

Each rank is ``python -m aidc_trainer`` with ``RANK``/``WORLD_SIZE``/``MASTER_*`` set, exactly the
variables the operator injects; ``launch`` also covers the in-pod torchrun path. One intra-op
thread per rank keeps two ranks from fighting over two cores and keeps float results
reproducible between runs.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Variables of the outer environment that would leak into a test gang (a developer's shell,
# or pytest itself running under torchrun).
_SCRUBBED_PREFIXES = ("AIDC_", "PET_", "TORCHELASTIC_", "KUBERNETES_")
_SCRUBBED = {
    "RANK",
    "WORLD_SIZE",
    "LOCAL_RANK",
    "LOCAL_WORLD_SIZE",
    "MASTER_ADDR",
    "MASTER_PORT",
    "NODE_RANK",
    "NNODES",
    "NPROC_PER_NODE",
    "GROUP_RANK",
    "ROLE_RANK",
}

TIMEOUT = 240.0


# Rendezvous ports come from below the kernel's ephemeral range (32768-60999 by default) and below
# Kubernetes' NodePorts (30000-32767). A port bind(0) hands out is an ephemeral one: between the probe
# and the gang's listen, any connection on the machine (a real node's kubelet, a pod) may take it as its
# local port, and rank 0 then fails with EADDRINUSE. No connection takes a port from this range.
RENDEZVOUS_PORTS = range(20000, 30000)


def free_port() -> int:
    """A port no one listens on now, from RENDEZVOUS_PORTS, picked at random so gangs rarely meet."""
    for port in random.sample(RENDEZVOUS_PORTS, 200):
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {RENDEZVOUS_PORTS} after 200 tries")


def base_environment(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED and not k.startswith(_SCRUBBED_PREFIXES)}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1", CUDA_VISIBLE_DEVICES="")
    env.update(extra)
    return env


@dataclass
class Rank:
    process: subprocess.Popen[bytes]
    stderr_path: Path
    termination_log: Path

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def termination(self) -> dict[str, Any]:
        return json.loads(self.termination_log.read_text())  # type: ignore[no-any-return]


@dataclass
class Gang:
    ranks: list[Rank] = field(default_factory=list)

    def wait(self, timeout: float = TIMEOUT) -> list[int]:
        deadline = time.monotonic() + timeout
        codes = []
        try:
            for rank in self.ranks:
                codes.append(rank.process.wait(timeout=max(1.0, deadline - time.monotonic())))
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError("the gang did not finish in time:\n" + self.report()) from None
        return codes

    def kill(self) -> None:
        for rank in self.ranks:
            if rank.process.poll() is None:
                rank.process.kill()
                rank.process.wait()

    def signal(self, rank: int, signum: int = signal.SIGTERM) -> None:
        self.ranks[rank].process.send_signal(signum)

    @property
    def leader(self) -> Rank:
        return self.ranks[0]

    def report(self, tail: int = 3000) -> str:
        """The end of every rank's output, for an assertion message (a failure is often not rank 0's)."""
        return "\n".join(
            f"--- rank {index} exited {rank.process.returncode}:\n{rank.stderr[-tail:]}"
            for index, rank in enumerate(self.ranks)
        )


def launch(
    workdir: Path,
    config: Mapping[str, Any] | str,
    *,
    world_size: int = 1,
    checkpoint_dir: Path | None = None,
    loss_log: Path | None = None,
    env: Mapping[str, str] | None = None,
    torchrun_in_pod: bool = False,
    name: str = "run",
) -> Gang:
    """Start ``world_size`` ranks (or one pod that starts them through torchrun)."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = str(free_port())
    common = base_environment(
        AIDC_TRAINER_CONFIG=config if isinstance(config, str) else json.dumps(config),
        AIDC_METRICS_PORT="0",
        AIDC_CHECKPOINT_EVERY_SECONDS="0",
        **({"AIDC_CHECKPOINT_DIR": str(checkpoint_dir)} if checkpoint_dir else {}),
        **({"AIDC_LOSS_LOG": str(loss_log)} if loss_log else {}),
        **(env or {}),
    )
    gang = Gang()
    if torchrun_in_pod:
        layouts = [
            {
                "NPROC_PER_NODE": str(world_size),
                "NNODES": "1",
                "NODE_RANK": "0",
                "PET_NNODES": "1",
                "PET_NPROC_PER_NODE": str(world_size),
                "PET_NODE_RANK": "0",
                "PET_MASTER_ADDR": "127.0.0.1",
                "PET_MASTER_PORT": port,
            }
        ]
    else:
        layouts = [
            {
                "RANK": str(rank),
                "WORLD_SIZE": str(world_size),
                "MASTER_ADDR": "127.0.0.1",
                "MASTER_PORT": port,
                "LOCAL_RANK": "0",
                "NODE_RANK": str(rank),
            }
            for rank in range(world_size)
        ]
    for index, layout in enumerate(layouts):
        stderr_path = workdir / f"{name}-rank{index}.log"
        termination = workdir / f"{name}-rank{index}.termination"
        rank_env = {**common, **layout, "AIDC_TERMINATION_LOG": str(termination)}
        with stderr_path.open("wb") as stderr:
            process = subprocess.Popen(
                [sys.executable, "-m", "aidc_trainer"],
                env=rank_env,
                cwd=workdir,
                stdout=stderr,
                stderr=subprocess.STDOUT,
            )
        gang.ranks.append(Rank(process, stderr_path, termination))
    return gang


def run(workdir: Path, config: Mapping[str, Any] | str, **options: Any) -> tuple[list[int], Gang]:
    gang = launch(workdir, config, **options)
    return gang.wait(), gang


def read_losses(path: Path) -> dict[int, dict[str, str]]:
    """The loss log: step -> {name: repr(float)}."""
    if not path.exists():
        return {}
    entries = {}
    for line in path.read_text().splitlines():
        entry = json.loads(line)
        entries[int(entry.pop("step"))] = entry
    return entries


def wait_until(condition: Callable[[], bool], timeout: float = TIMEOUT, interval: float = 0.01) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(interval)
