"""The operator's Prometheus metrics (served on the metrics port)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

PREFIX = "aidc_operator"
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)

JOBS = Gauge(f"{PREFIX}_trainingjobs", "TrainingJobs by phase", ["phase"])
TRANSITIONS = Counter(f"{PREFIX}_trainingjob_transitions_total", "Phase transitions", ["from_phase", "to_phase"])
RESTARTS = Counter(f"{PREFIX}_trainingjob_restarts_total", "Whole-gang restarts", ["reason"])
TIME_TO_RUNNING = Histogram(
    f"{PREFIX}_trainingjob_time_to_running_seconds",
    "From the job's creation to all ranks running",
    buckets=LATENCY_BUCKETS,
)
SCHEDULING_WAIT = Histogram(
    f"{PREFIX}_trainingjob_scheduling_wait_seconds",
    "From the gang's creation to all ranks running (queueing and scheduling)",
    buckets=LATENCY_BUCKETS,
)
RECONCILE_SECONDS = Histogram(
    f"{PREFIX}_reconcile_duration_seconds", "One reconcile pass", ["kind"], buckets=LATENCY_BUCKETS
)
RECONCILE_ERRORS = Counter(f"{PREFIX}_reconcile_errors_total", "Reconcile passes that raised", ["kind"])
API_REQUESTS = Counter(
    f"{PREFIX}_api_requests_total",
    "Kubernetes API requests (writes, and lists of overdue pods)",
    ["verb", "resource", "code"],
)
INVALID_SPECS = Counter(f"{PREFIX}_invalid_specs_total", "Resources whose spec could not be parsed", ["kind"])
POD_LISTS = Counter(
    f"{PREFIX}_pod_lists_total",
    "Lists of the rank pods: one at the start of each watch, more after an expired watch or an error",
    ["reason"],
)
POD_EVENTS = Counter(f"{PREFIX}_pod_events_total", "Watch events of rank pods", ["type"])
OVERDUE_PODS = Counter(
    f"{PREFIX}_overdue_pods_total",
    "Pods the operator created that its watch had not delivered after expectationSeconds, by what the API server said",
    ["outcome"],
)


def record_phase_change(created: str | None, old: dict[str, Any], new: dict[str, Any], now: datetime) -> None:
    """A TrainingJob's status moved from ``old`` to ``new``; ``created``: its creationTimestamp."""
    before, after = old.get("phase"), new.get("phase")
    if before == after:
        return
    TRANSITIONS.labels(before or "New", after or "Pending").inc()
    if after == "Restarting":
        reason = next((c["reason"] for c in new.get("conditions", []) if c["type"] == "Restarting"), "Unknown")
        RESTARTS.labels(reason).inc()
    if after != "Running":
        return
    if created and new.get("restarts", 0) == 0:
        TIME_TO_RUNNING.observe((now - _parse_time(created)).total_seconds())
    gang = new.get("gangCreatedTime")
    if gang:
        SCHEDULING_WAIT.observe((now - _parse_time(gang)).total_seconds())


def _parse_time(value: str) -> datetime:
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
