"""Server workers: how many by default (the container's CPU limit), and N processes on one port."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest

from aidc_trainer import contract
from aidc_trainer.serving.workers import cgroup_cpu_limit, default_workers, usable_cpus
from tests.serving.harness import ServerProcess, metric_samples, request, start_process


def _cgroup(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text + "\n")
    return root


@pytest.mark.parametrize(
    ("files", "limit"),
    [
        ({}, None),  # no cgroup files: unknown
        ({"cpu.max": "max 100000"}, None),  # v2, unlimited
        ({"cpu.max": "200000 100000"}, 2.0),
        ({"cpu.max": "150000 100000"}, 1.5),
        ({"cpu/cpu.cfs_quota_us": "-1", "cpu/cpu.cfs_period_us": "100000"}, None),  # v1, unlimited
        ({"cpu/cpu.cfs_quota_us": "50000", "cpu/cpu.cfs_period_us": "100000"}, 0.5),
        ({"cpu.cfs_quota_us": "400000", "cpu.cfs_period_us": "100000"}, 4.0),  # v1 mounted flat
    ],
)
def test_the_cpu_limit_is_read_from_cgroup_v2_or_v1(tmp_path: Path, files: dict[str, str], limit: float | None) -> None:
    assert cgroup_cpu_limit(_cgroup(tmp_path, files), tmp_path / "no-proc-cgroup") == limit


def test_with_the_hosts_cgroup_namespace_v1_reads_the_containers_own_cgroup(tmp_path: Path) -> None:
    """runc on cgroup v1 shares the node's cgroup namespace: the mount's root is the node's, unlimited,
    and the container's limit sits under the path /proc/self/cgroup names (a 500m pod ran 2 workers)."""
    own = "kubepods/burstable/pod1234/abcd"
    files = {"cpu/cpu.cfs_quota_us": "-1", "cpu/cpu.cfs_period_us": "100000"}
    files |= {f"cpu/{own}/cpu.cfs_quota_us": "50000", f"cpu/{own}/cpu.cfs_period_us": "100000"}
    root = _cgroup(tmp_path, files)
    proc = tmp_path / "proc-cgroup"
    proc.write_text(f"12:memory:/{own}\n4:cpu,cpuacct:/{own}\n0::/\n")
    assert cgroup_cpu_limit(root, proc) == 0.5
    assert usable_cpus(root, affinity=2, proc_cgroup=proc) == 1


@pytest.mark.parametrize(
    ("files", "affinity", "cpus"),
    [
        ({"cpu.max": "200000 100000"}, 16, 2),
        ({"cpu.max": "150000 100000"}, 16, 2),  # a fraction of a CPU still gets a worker
        ({"cpu.max": "50000 100000"}, 16, 1),
        ({"cpu.max": "800000 100000"}, 2, 2),  # never more than the CPUs it may run on
        ({"cpu.max": "max 100000"}, 2, 1),  # no limit: one, whatever the node has
        ({"cpu.max": "max 100000"}, 96, 1),
        ({}, 96, 1),
    ],
)
def test_usable_cpus_round_the_limit_up_within_the_affinity(
    tmp_path: Path, files: dict[str, str], affinity: int, cpus: int
) -> None:
    assert usable_cpus(_cgroup(tmp_path, files), affinity=affinity, proc_cgroup=tmp_path / "none") == cpus


@pytest.mark.parametrize(
    ("device", "cpus", "gpu_visible", "workers"),
    [("cpu", 4, False, 4), ("auto", 4, False, 4), ("auto", 4, True, 1), ("cuda", 4, True, 1), ("cpu", 4, True, 4)],
)
def test_one_worker_per_cpu_but_one_on_a_gpu(device: str, cpus: int, gpu_visible: bool, workers: int) -> None:
    assert default_workers(device, cpus, gpu_visible) == workers


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _worker_pids(records: list[dict[str, object]]) -> set[int]:
    return {int(str(r["pid"])) for r in records if r.get("message") == "listening" and "pid" in r}


def _wait_for_workers(server: ServerProcess, count: int) -> set[int]:
    """The workers' pids once ``count`` of them logged that they listen and that they are ready."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        records = server.read_log()
        pids = _worker_pids(records)
        if len(pids) >= count and sum(r.get("message") == "ready" for r in records) >= count:
            return pids
        time.sleep(0.05)
    raise AssertionError(f"fewer than {count} workers ready:\n{server.log.read_text()}")


def _infer(url: str) -> int:
    image = np.random.default_rng(0).random((1, 1, 28, 28), dtype=np.float32)
    body = {"inputs": [{"name": "input", "shape": [1, 1, 28, 28], "datatype": "FP32", "data": image.ravel().tolist()}]}
    return request(url, "POST", "/v2/models/digits/infer", body).status


@pytest.mark.trainer
def test_two_workers_share_one_port_and_stop_together(classifier_export: Path, tmp_path: Path) -> None:
    args = ["--model-dir", str(classifier_export), "--model-name", "digits", "--port", "0", "--device", "cpu"]
    server = start_process(args, tmp_path / "server.log", {contract.ENV_SERVER_WORKERS: "2"})
    try:
        server.wait_ready()
        pids = _wait_for_workers(server, 2)
        assert all(_infer(server.url) == 200 for _ in range(16))  # fresh connections, spread by the kernel
        samples = metric_samples(server.url)  # whichever worker answers, it counts all of them
        infer = ("aidc_server_requests_total", (("code", "200"), ("endpoint", "/v2/models/{model}/infer")))
        assert samples[infer] == 16
        assert {labels for name, labels in samples if name == "aidc_server_ready"} == {
            (("pid", str(pid)),) for pid in pids
        }
        assert len(pids) == 2 and server.process.pid not in pids
        ports = {r["port"] for r in server.records if r.get("message") == "listening"}
        assert ports == {int(server.url.rsplit(":", 1)[1])}
    finally:
        code = server.stop()
    assert code == 0
    assert not any(_alive(pid) for pid in pids)


@pytest.mark.trainer
def test_a_worker_that_dies_ends_the_pod_so_the_kubelet_restarts_it(classifier_export: Path, tmp_path: Path) -> None:
    args = ["--model-dir", str(classifier_export), "--model-name", "digits", "--port", "0", "--device", "cpu"]
    server = start_process(args, tmp_path / "server.log", {contract.ENV_SERVER_WORKERS: "2"})
    try:
        server.wait_ready()
        victim, survivor = sorted(_wait_for_workers(server, 2))
        os.kill(victim, signal.SIGKILL)
        code = server.process.wait(timeout=60)
    finally:
        server.stop()
    assert code != 0
    assert not _alive(survivor)
