"""The operator's Prometheus metrics: one ``OperatorMetrics`` per process, built at start-up.

Its registry holds the operator's families and the process's and Python's own (memory, CPU,
garbage collection), and is what the metrics port serves; the parts that count take it when
they are constructed.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from aidc.management.fleet_metrics import PREFIX, FleetCollector

KINDS = ("TrainingJob", "InferenceService")
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)
# a GPU fleet's queue: seconds when it is idle, hours when it is full
WAIT_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400, 28800, 57600, 86400)


class OperatorMetrics:
    """Every metric the operator exports, in a registry of their own."""

    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry()
        for collector in (ProcessCollector, PlatformCollector, GCCollector):
            collector(registry=registry)
        self._job_families(registry)
        self._pass_families(registry)
        # jobs and services by namespace and phase, per resource, GPU-seconds: counted when scraped
        self.fleet = FleetCollector()
        registry.register(self.fleet)
        self.leader = Gauge(
            f"{PREFIX}_leader",
            "1 while this replica runs the handlers (it holds the lease, or leader election is off); 0 on standby",
            registry=registry,
        )

    def _job_families(self, registry: CollectorRegistry) -> None:
        """TrainingJobs: their transitions and restarts, how long they wait (the counts: ``fleet``)."""
        self.transitions = Counter(
            f"{PREFIX}_trainingjob_transitions_total",
            "Phase transitions",
            ["from_phase", "to_phase"],
            registry=registry,
        )
        self.restarts = Counter(
            f"{PREFIX}_trainingjob_restarts_total",
            "Whole-gang restarts, by namespace and reason",
            ["namespace", "reason"],
            registry=registry,
        )
        self.time_to_running = Histogram(
            f"{PREFIX}_trainingjob_time_to_running_seconds",
            "From the job's creation to all ranks running (its first gang), by namespace",
            ["namespace"],
            buckets=WAIT_BUCKETS,
            registry=registry,
        )
        self.scheduling_wait = Histogram(
            f"{PREFIX}_trainingjob_scheduling_wait_seconds",
            "From the gang's creation to all ranks running (queueing and scheduling), by namespace",
            ["namespace"],
            buckets=WAIT_BUCKETS,
            registry=registry,
        )

    def _pass_families(self, registry: CollectorRegistry) -> None:
        """The passes, and what they and the pod watch ask of the API server."""
        self.reconcile_seconds = Histogram(
            f"{PREFIX}_reconcile_duration_seconds",
            "One reconcile pass",
            ["kind"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.reconcile_errors = Counter(
            f"{PREFIX}_reconcile_errors_total", "Reconcile passes that raised", ["kind"], registry=registry
        )
        for kind in KINDS:  # 0 from the start: a rate over them is 0, not nothing, until the first error
            self.reconcile_errors.labels(kind)
        self.api_requests = Counter(
            f"{PREFIX}_api_requests_total",
            "Kubernetes API requests (writes, and lists of overdue pods)",
            ["verb", "resource", "code"],
            registry=registry,
        )
        self.invalid_specs = Counter(
            f"{PREFIX}_invalid_specs_total",
            "Resources failed with InvalidSpec (unparseable, or pods the API server refuses)",
            ["kind"],
            registry=registry,
        )
        self.pod_lists = Counter(
            f"{PREFIX}_pod_lists_total",
            "Lists of the rank pods: one at the start of each watch, more after an expired watch or an error",
            ["reason"],
            registry=registry,
        )
        self.pod_events = Counter(
            f"{PREFIX}_pod_events_total", "Watch events of rank pods", ["type"], registry=registry
        )
        self.overdue_pods = Counter(
            f"{PREFIX}_overdue_pods_total",
            "Pods the operator created that its watch had not delivered after expectationSeconds, "
            "by what the API server said",
            ["outcome"],
            registry=registry,
        )

    def record_phase_change(
        self, metadata: dict[str, Any], old: dict[str, Any], new: dict[str, Any], now: datetime
    ) -> None:
        """A TrainingJob's status moved from ``old`` to ``new``; ``metadata``: the job's."""
        before, after = old.get("phase"), new.get("phase")
        if before == after:
            return
        namespace = str(metadata.get("namespace", ""))
        self.transitions.labels(before or "New", after or "Pending").inc()
        if before is None:  # a new job: its namespace's waits start at 0, so its first wait is an increase
            self.time_to_running.labels(namespace)
            self.scheduling_wait.labels(namespace)
        if after == "Restarting":
            reason = next((c["reason"] for c in new.get("conditions", []) if c["type"] == "Restarting"), "Unknown")
            self.restarts.labels(namespace, reason).inc()
        if after != "Running":
            return
        created = metadata.get("creationTimestamp")
        if created and new.get("restarts", 0) == 0:
            self.time_to_running.labels(namespace).observe((now - _parse_time(created)).total_seconds())
        gang = new.get("gangCreatedTime")
        if gang:
            self.scheduling_wait.labels(namespace).observe((now - _parse_time(gang)).total_seconds())


def _parse_time(value: str) -> datetime:
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
