"""Several server processes on one port: one per CPU the pod may use, each with its own batcher.

One Python process spends most of a small model's request on HTTP and JSON under the GIL, so it
keeps one core busy however many the pod has. ``--workers N`` starts N copies of the server, each
listening on the same port with ``SO_REUSEPORT``, so the kernel spreads connections over them.
The supervising process holds the port bound (not listening: it takes no connections) so that
port 0 resolves once for all workers, forwards SIGTERM, and ends when any worker ends, with its
code, so the kubelet restarts the pod rather than leaving it half-served.

The default (``--workers 0``) is the pod's CPU limit as the container sees it: cgroup v2
``cpu.max``, else cgroup v1's CFS quota of the process's own cgroup, rounded up and never more than
the CPUs the process may run on; without a limit, one. On a GPU the default is one
worker: every worker would hold its own copy of the model in the device's memory.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from aidc_trainer.logs import fields
from aidc_trainer.serving.metrics import ENV_SHARED_METRICS

log = logging.getLogger(__name__)

CGROUP_ROOT: Final = Path("/sys/fs/cgroup")
POLL_SECONDS: Final = 0.2
STOP_SECONDS: Final = 30.0
PROC_CGROUP: Final = Path("/proc/self/cgroup")


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _own_v1_cpu_path(proc_cgroup: Path) -> str:
    """This process's cgroup in v1's cpu hierarchy ("" where unknown): with the host's cgroup
    namespace (runc's default on v1) /sys/fs/cgroup/cpu is the node's root, not the container's."""
    for line in (_read(proc_cgroup) or "").splitlines():
        _, controllers, path = line.split(":", 2)
        if "cpu" in controllers.split(","):
            return path.strip("/")
    return ""


def cgroup_cpu_limit(root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_CGROUP) -> float | None:
    """CPUs the container's cgroup allows (quota / period), or None when unlimited or unknown."""
    v2 = _read(root / "cpu.max")
    if v2 is not None:
        quota, _, period = v2.partition(" ")
        if quota == "max" or not period:
            return None
        return int(quota) / int(period)
    own = _own_v1_cpu_path(proc_cgroup)
    for folder in (root / "cpu" / own, root / "cpu", root):  # the container's own, else a mount of it
        quota_v1, period_v1 = _read(folder / "cpu.cfs_quota_us"), _read(folder / "cpu.cfs_period_us")
        if quota_v1 is not None and period_v1 is not None:
            return int(quota_v1) / int(period_v1) if int(quota_v1) > 0 else None
    return None


def usable_cpus(
    root: Path = CGROUP_ROOT, affinity: int | None = None, proc_cgroup: Path = PROC_CGROUP
) -> int:
    """Whole CPUs this process may keep busy: the cgroup limit rounded up, at most the affinity.

    Without a limit it is one: nothing says how much of the node the pod may take, and each worker
    holds a copy of the model.
    """
    allowed = len(os.sched_getaffinity(0)) if affinity is None else affinity
    limit = cgroup_cpu_limit(root, proc_cgroup)
    if limit is None:
        return 1
    return max(1, min(allowed, math.ceil(limit - 1e-9)))


def default_workers(device: str, cpus: int, gpu_visible: bool) -> int:
    """One worker per usable CPU; one when the model would sit on a GPU (a copy per worker)."""
    if device == "cuda" or (device == "auto" and gpu_visible):
        return 1
    return max(1, cpus)


def reserve_port(host: str, port: int) -> socket.socket:
    """A socket bound to (host, port) with SO_REUSEPORT and not listening: it keeps the port for the
    workers (port 0 resolved once) without taking any of their connections."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    holder = socket.socket(family, socket.SOCK_STREAM)
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    holder.bind((host, port))
    return holder


def worker_command(argv: Sequence[str], port: int) -> list[str]:
    """A worker's command line: the supervisor's flags, then one worker on the shared port (last wins)."""
    return [
        sys.executable,
        "-m",
        "aidc_trainer.serving",
        *argv,
        "--port",
        str(port),
        "--workers",
        "1",
        "--reuse-port",
        "true",
    ]


def worker_environment(workers: int, cpus: int, metrics_dir: Path) -> dict[str, str]:
    """The supervisor's environment, torch threads split between workers unless set by the user, and
    the folder where all workers keep their metrics (so any of them answers a scrape for all)."""
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(max(1, cpus // workers)))
    env[ENV_SHARED_METRICS] = str(metrics_dir)
    return env


def supervise(argv: Sequence[str], host: str, port: int, workers: int, cpus: int) -> int:
    """Run ``workers`` server processes on one port until a signal or the first one ends."""
    holder = reserve_port(host, port)
    shared_port = holder.getsockname()[1]
    metrics_dir = Path(tempfile.mkdtemp(prefix="aidc-metrics-"))
    env = worker_environment(workers, cpus, metrics_dir)
    processes = [subprocess.Popen(worker_command(argv, shared_port), env=env) for _ in range(workers)]
    log.info(
        "workers started", extra=fields(workers=workers, port=shared_port, pids=[p.pid for p in processes])
    )
    stopping: list[int] = []

    def forward(number: int, _frame: object) -> None:
        stopping.append(number)
        for process in processes:
            if process.poll() is None:
                process.send_signal(number)

    for number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(number, forward)
    try:
        return _wait_for_first_exit(processes, stopping)
    finally:
        _stop_all(processes)
        holder.close()
        shutil.rmtree(metrics_dir, ignore_errors=True)


def _wait_for_first_exit(processes: list[subprocess.Popen[bytes]], stopping: list[int]) -> int:
    """The code to exit with: a worker that ended on its own decides it; after a signal, the worst."""
    while True:
        ended = [process for process in processes if process.poll() is not None]
        if stopping and len(ended) == len(processes):
            return max((process.returncode for process in processes), default=0)
        if ended and not stopping:
            first = ended[0]
            log.error(
                "a worker ended; stopping the others", extra=fields(pid=first.pid, exitCode=first.returncode)
            )
            return first.returncode if first.returncode > 0 else 1
        time.sleep(POLL_SECONDS)


def _stop_all(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_SECONDS
    for process in processes:
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
