"""Operator processes (`aidc run` with AIDC_LEADER_ELECTION) on one Lease: one leads, the others wait
alive, one takes over when the leader is SIGKILLed, and the jobs finish with no pod made twice."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.cluster.resources import condition_is, create, exit_pod, get, pods
from tests.factories import training_job_body

pytestmark = pytest.mark.cluster
LEASE = "aidc-operator"
LEASE_LOST_EXIT_CODE = 3  # aidc.runtime.leadership
# short timings, so a take-over is seconds; the chart's defaults are 15 / 10 / 2
FAST = {"AIDC_LEASE_DURATION_SECONDS": "4", "AIDC_LEASE_RENEW_DEADLINE_SECONDS": "3",
        "AIDC_LEASE_RETRY_PERIOD_SECONDS": "0.5"}  # fmt: skip


@dataclass
class Candidate:
    name: str
    process: subprocess.Popen[bytes]
    metrics: int
    health: int
    log: Path

    def get(self, path: str) -> tuple[int, str]:
        port = self.metrics if path == "/metrics" else self.health
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()

    def leads(self) -> str | None:
        """The leader gauge this replica reports: '1.0', '0.0', or None before it serves."""
        line = next((ln for ln in self.get("/metrics")[1].splitlines() if ln.startswith("aidc_operator_leader ")), "")
        return line.split()[-1] if line else None

    def tail(self) -> str:
        return self.log.read_text()[-3000:]


@pytest.fixture
def start_candidate(testbed: Any, namespace: str, tmp_path: Path) -> Iterator[Callable[..., Candidate]]:
    """``start_candidate(name, **env)``: an operator process of identity ``name`` watching ``namespace``,
    with its Lease in ``namespace`` too; the ones still running are stopped with SIGTERM afterwards."""
    from aidc_testbed.ports import free_ports

    started: list[Candidate] = []

    def start(name: str, **extra: str) -> Candidate:
        metrics, health = free_ports(2)
        env = {**os.environ, "KUBECONFIG": str(testbed.kubeconfig), "AIDC_METRICS_PORT": str(metrics),
               "AIDC_HEALTH_PORT": str(health), "AIDC_NAMESPACES": namespace, "AIDC_LEADER_ELECTION": "true",
               "AIDC_LEASE_NAMESPACE": namespace, "POD_NAME": name, **FAST, **extra}  # fmt: skip
        log = tmp_path / f"{name}.log"
        aidc = Path(sys.executable).with_name("aidc")
        with log.open("wb") as out:
            process = subprocess.Popen([str(aidc), "run", "--standalone"], env=env, stdout=out, stderr=out)
        started.append(candidate := Candidate(name, process, metrics, health, log))
        return candidate

    yield start
    for candidate in started:
        if candidate.process.poll() is None:
            candidate.process.terminate()
            assert candidate.process.wait(timeout=30) == 0, candidate.tail()


def _holder(kube: client.ApiClient, namespace: str) -> str | None:
    try:
        lease = client.CoordinationV1Api(kube).read_namespaced_lease(LEASE, namespace)
    except ApiException as error:
        if error.status == 404:
            return None
        raise
    return str(lease.spec.holder_identity or "") or None


def _pods_by_job(kube: client.ApiClient, namespace: str, jobs: list[str]) -> dict[str, list[str]]:
    return {job: [p.metadata.name for p in pods(kube, namespace, job)] for job in jobs}


def _all_in(kube: client.ApiClient, namespace: str, jobs: list[str], condition: str) -> bool:
    return all(condition_is(get(kube, namespace, "trainingjobs", job), condition) for job in jobs)


def _elect(
    start: Callable[..., Candidate], kube: client.ApiClient, namespace: str, wait_for: Callable[..., Any], count: int
) -> tuple[Candidate, list[Candidate]]:
    """``count`` candidates, once one holds the lease and all answer: the leader, the standbys."""
    candidates = [start(f"replica-{letter}") for letter in "abc"[:count]]
    holder = wait_for(lambda: _holder(kube, namespace), timeout=30, message="a holder of the lease")
    (leader,) = [c for c in candidates if c.name == holder]
    for candidate in candidates:
        wait_for(lambda c=candidate: c.get("/healthz")[0] == 200, ignore=(OSError,), timeout=30)
    wait_for(lambda: leader.leads() == "1.0", ignore=(OSError,), timeout=30, message="the leader's gauge")
    return leader, [c for c in candidates if c is not leader]


def _wrote_nothing(candidate: Candidate) -> bool:
    return candidate.leads() == "0.0" and "aidc_operator_api_requests_total{" not in candidate.get("/metrics")[1]


def test_a_standby_takes_over_from_a_killed_leader_and_no_job_is_lost_or_doubled(
    kube: client.ApiClient,
    crds_applied: list[str],
    namespace: str,
    start_candidate: Callable[..., Candidate],
    wait_for: Callable[..., Any],
) -> None:
    """Three replicas: after the kill, the two standbys race for the lease and exactly one wins it."""
    leader, standbys = _elect(start_candidate, kube, namespace, wait_for, count=3)
    before = [f"before-{i}" for i in range(4)]
    for job in before:
        create(kube, namespace, "trainingjobs", training_job_body(job, {"replicas": 2}))
    # the leader is killed mid-work: some gangs created, maybe not all
    wait_for(lambda: sum(map(len, _pods_by_job(kube, namespace, before).values())), timeout=60)
    assert all(_wrote_nothing(s) for s in standbys)
    leader.process.send_signal(signal.SIGKILL)
    killed = time.monotonic()
    leader.process.wait(timeout=10)
    create(kube, namespace, "trainingjobs", training_job_body("meanwhile", {"replicas": 2}))  # while no one leads
    holder = wait_for(
        lambda: _holder(kube, namespace),
        until=lambda name: name in {s.name for s in standbys},
        timeout=20,
        message="a standby holds the lease",
    )
    took_over = time.monotonic() - killed
    assert took_over <= int(FAST["AIDC_LEASE_DURATION_SECONDS"]) + 4, took_over  # lease duration + margin
    (standby,) = [s for s in standbys if s.name == holder]
    (loser,) = [s for s in standbys if s is not standby]
    wait_for(lambda: standby.leads() == "1.0", timeout=30, message="the new leader's gauge", ignore=(OSError,))
    jobs = [*before, "meanwhile"]
    wait_for(lambda: _all_in(kube, namespace, jobs, "Running"), timeout=90, message="every job Running")
    for job in jobs:
        for pod in pods(kube, namespace, job):
            exit_pod(kube, namespace, pod.metadata.name, 0)
    wait_for(lambda: _all_in(kube, namespace, jobs, "Succeeded"), timeout=90, message="every job Succeeded")
    assert _pods_by_job(kube, namespace, jobs) == {job: [f"{job}-0", f"{job}-1"] for job in jobs}
    assert all(get(kube, namespace, "trainingjobs", job)["status"].get("restarts", 0) == 0 for job in jobs)
    assert standby.process.poll() is None, standby.tail()
    assert _wrote_nothing(loser) and _holder(kube, namespace) == standby.name


def test_a_leader_whose_lease_is_taken_exits_at_once(
    kube: client.ApiClient,
    crds_applied: list[str],
    namespace: str,
    start_candidate: Callable[..., Candidate],
    wait_for: Callable[..., Any],
) -> None:
    """Another holder in the lease (what a partitioned leader finds when it comes back) ends the
    process with its own exit code within a renewal, so the kubelet restarts it as a standby."""
    only = start_candidate("replica-a")
    wait_for(lambda: _holder(kube, namespace) == only.name, timeout=30, message="replica-a leads")
    coordination = client.CoordinationV1Api(kube)
    lease = coordination.read_namespaced_lease(LEASE, namespace)
    lease.spec.holder_identity = "someone-else"
    coordination.replace_namespaced_lease(LEASE, namespace, lease)
    taken = time.monotonic()
    assert only.process.wait(timeout=10) == LEASE_LOST_EXIT_CODE, only.tail()
    assert time.monotonic() - taken < float(FAST["AIDC_LEASE_RENEW_DEADLINE_SECONDS"]), only.tail()
    assert "leadership lost" in only.tail()


def test_a_leader_stopped_gracefully_hands_the_lease_over_without_waiting_for_it_to_expire(
    kube: client.ApiClient,
    crds_applied: list[str],
    namespace: str,
    start_candidate: Callable[..., Candidate],
    wait_for: Callable[..., Any],
) -> None:
    """SIGTERM (a rolling update, a drain): the leader frees the lease, the standby leads at its next try.
    The lease lasts 30 s here, so a hand-over within a few seconds can only come from the release."""
    slow = {"AIDC_LEASE_DURATION_SECONDS": "30", "AIDC_LEASE_RENEW_DEADLINE_SECONDS": "20"}
    first, second = start_candidate("replica-a", **slow), start_candidate("replica-b", **slow)
    holder = wait_for(lambda: _holder(kube, namespace), timeout=30, message="a holder of the lease")
    leader, standby = (first, second) if holder == first.name else (second, first)
    wait_for(lambda: leader.leads() == "1.0", ignore=(OSError,), timeout=30, message="the leader's gauge")
    leader.process.terminate()
    assert leader.process.wait(timeout=30) == 0, leader.tail()
    stopped = time.monotonic()
    wait_for(lambda: _holder(kube, namespace) == standby.name, timeout=10, message="the standby holds the lease")
    assert time.monotonic() - stopped < 5
    lease = client.CoordinationV1Api(kube).read_namespaced_lease(LEASE, namespace)
    assert lease.spec.lease_transitions == 1
    # a replica that never led stops at once too, and leaves the lease to its holder
    third = start_candidate("replica-c", **slow)
    wait_for(lambda: third.get("/healthz")[1], ignore=(OSError,), until=lambda body: standby.name in body, timeout=30)
    assert third.leads() == "0.0"
    third.process.terminate()
    assert third.process.wait(timeout=10) == 0, third.tail()
    assert _holder(kube, namespace) == standby.name
