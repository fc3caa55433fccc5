"""The fleet's series, counted from what the workers hold when Prometheus scrapes."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from aidc.management.fleet_metrics import FleetCollector, running_gpus
from aidc.management.metrics import OperatorMetrics
from aidc.management.workers import Held


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def job(name: str, phase: str, namespace: str = "ml", gpus: int = 0, running: int = 0, **status: Any) -> Held:
    spec = {"replicas": 2, "resources": {"gpus": gpus}}
    return Held(namespace, name, spec, {"phase": phase, "replicaCounts": {"running": running}, **status})


def samples(collector: FleetCollector) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    registry = CollectorRegistry()
    registry.register(collector)
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for family in registry.collect() for s in family.samples}


def test_jobs_are_counted_by_namespace_and_phase_with_zeros_for_the_other_phases() -> None:
    fleet = FleetCollector()
    jobs = [job("a", "Running"), job("b", "Running"), job("c", "Failed", reason="BackoffLimitExceeded")]
    fleet.watch(lambda: [*jobs, job("d", "Pending", namespace="vision")], lambda: [])
    found = samples(fleet)
    assert found["aidc_operator_trainingjobs", (("namespace", "ml"), ("phase", "Running"))] == 2
    assert found["aidc_operator_trainingjobs", (("namespace", "ml"), ("phase", "Queued"))] == 0
    assert found["aidc_operator_trainingjobs", (("namespace", "vision"), ("phase", "Pending"))] == 1
    failed = (("namespace", "ml"), ("phase", "Failed"), ("reason", "BackoffLimitExceeded"), ("trainingjob", "c"))
    assert found["aidc_operator_trainingjob_phase", failed] == 1


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ({}, None),  # no heartbeat yet: no series, so an alert on its age stays quiet
        ({"progress": {"lastHeartbeatTime": "2026-12-06T10:00:00Z"}}, 1796551200.0),
        ({"progress": {"lastHeartbeatTime": "not a time"}}, None),
    ],
)
def test_the_last_heartbeat_is_a_unix_timestamp(status: dict[str, Any], expected: float | None) -> None:
    fleet = FleetCollector()
    fleet.watch(lambda: [job("a", "Running", **status)], lambda: [])
    key = ("aidc_operator_trainingjob_last_heartbeat_timestamp_seconds", (("namespace", "ml"), ("trainingjob", "a")))
    assert samples(fleet).get(key) == expected


def test_gpu_seconds_integrate_the_running_ranks_gpus_between_scrapes() -> None:
    clock = Clock()
    fleet = FleetCollector(clock)
    jobs = [job("a", "Running", gpus=8, running=2), job("b", "Pending", gpus=8, running=0)]
    fleet.watch(lambda: jobs, lambda: [])
    clock.now += 30
    key = ("aidc_operator_gpu_seconds_total", (("namespace", "ml"),))
    assert samples(fleet)[key] == 16 * 30
    jobs[0] = job("a", "Succeeded", gpus=8, running=0)
    clock.now += 60
    assert samples(fleet)[key] == 16 * 30  # nothing runs: the counter stays
    gpus = ("aidc_operator_trainingjob_gpus", (("namespace", "ml"), ("trainingjob", "a")))
    assert samples(fleet)[gpus] == 0
    fleet.watch(lambda: [job("c", "Running", namespace="cpu-only", running=2)], lambda: [])
    clock.now += 60
    assert samples(fleet)["aidc_operator_gpu_seconds_total", (("namespace", "cpu-only"),)] == 0


@pytest.mark.parametrize(
    ("spec", "running", "gpus"),
    [({"resources": {"gpus": 4}}, 3, 12), ({}, 3, 0), ({"resources": {"gpus": "many"}}, 1, 0)],
)
def test_running_gpus(spec: dict[str, Any], running: int, gpus: int) -> None:
    assert running_gpus(Held("ml", "a", spec, {"replicaCounts": {"running": running}})) == gpus


def test_inference_services_by_phase_and_each_ones_phase() -> None:
    fleet = FleetCollector()
    services = [Held("web", "digits", {}, {"phase": "Ready"}), Held("web", "chat", {}, {"phase": "Deploying"})]
    fleet.watch(lambda: [], lambda: services)
    found = samples(fleet)
    assert found["aidc_operator_inferenceservices", (("namespace", "web"), ("phase", "Ready"))] == 1
    deploying = (("inferenceservice", "chat"), ("namespace", "web"), ("phase", "Deploying"), ("reason", ""))
    assert found["aidc_operator_inferenceservice_phase", deploying] == 1


def test_the_operators_registry_serves_the_fleet_before_and_after_it_leads() -> None:
    metrics = OperatorMetrics()
    assert b"# TYPE aidc_operator_trainingjobs gauge" in generate_latest(metrics.registry)
    metrics.fleet.watch(lambda: [job("a", "Running")], lambda: [])
    assert b'aidc_operator_trainingjobs{namespace="ml",phase="Running"} 1.0' in generate_latest(metrics.registry)


def test_a_phase_change_to_running_observes_the_wait_by_namespace() -> None:
    metrics = OperatorMetrics()
    meta = {"namespace": "ml", "creationTimestamp": "2026-12-06T10:00:00Z"}
    new = {"phase": "Running", "gangCreatedTime": "2026-12-06T10:00:30Z"}
    metrics.record_phase_change(meta, {"phase": "Pending"}, new, datetime(2026, 12, 6, 12, 0, tzinfo=UTC))
    text = generate_latest(metrics.registry).decode()
    # two hours of queueing land in a bucket of their own, not in +Inf
    assert 'aidc_operator_trainingjob_time_to_running_seconds_bucket{le="3600.0",namespace="ml"} 0.0' in text
    assert 'aidc_operator_trainingjob_time_to_running_seconds_bucket{le="7200.0",namespace="ml"} 1.0' in text
    assert 'aidc_operator_trainingjob_scheduling_wait_seconds_count{namespace="ml"} 1.0' in text


def test_a_new_jobs_namespace_has_its_wait_series_at_zero_before_any_wait_ends() -> None:
    """A series born at its first observation has no increase a rate() can see: the first wait would be lost."""
    metrics = OperatorMetrics()
    metrics.record_phase_change({"namespace": "vision"}, {}, {"phase": "Pending"}, datetime(2026, 12, 6, tzinfo=UTC))
    text = generate_latest(metrics.registry).decode()
    assert 'aidc_operator_trainingjob_time_to_running_seconds_count{namespace="vision"} 0.0' in text
    assert 'aidc_operator_trainingjob_scheduling_wait_seconds_count{namespace="vision"} 0.0' in text
