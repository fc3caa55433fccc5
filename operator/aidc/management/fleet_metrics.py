"""The fleet as Prometheus sees it: series computed from what the workers hold, when Prometheus scrapes.

Counting on scrape rather than on every event keeps a burst of a thousand jobs linear. The series per
TrainingJob and per InferenceService (kube-state-metrics' way) let an alert name what it is about;
their number is bounded by the resources, never by pods. GPU-seconds integrate the GPUs of running
ranks between two scrapes: a counter, so ``increase()`` over any range gives GPU-hours.

The collector runs in prometheus_client's HTTP thread while the workers change on the event loop, so
it reads copies the workers hand out (:meth:`aidc.management.workers.Workers.held`).
"""

from __future__ import annotations

import threading
import time
from collections import Counter as Tally
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from typing import Any, get_args

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from aidc.api.inferenceservice import ServingPhase
from aidc.api.trainingjob import TrainingPhase
from aidc.management.workers import Held

PREFIX = "aidc_operator"
TRAINING_PHASES: tuple[str, ...] = get_args(TrainingPhase)  # the API's phases, so a new one is counted too
SERVING_PHASES: tuple[str, ...] = get_args(ServingPhase)


Source = Callable[[], Iterable[Held]]


def _nothing() -> Iterable[Held]:
    return ()


class FleetCollector(Collector):
    """TrainingJobs and InferenceServices by namespace and phase, one series of each per resource, and
    the GPU-seconds of every namespace."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._training: Source = _nothing
        self._serving: Source = _nothing
        self._clock = clock
        self._lock = threading.Lock()  # two scrapers at once must not integrate the same interval twice
        self._integrated_until = clock()
        self._gpu_seconds: dict[str, float] = {}

    def watch(self, training: Source, serving: Source) -> None:
        """What to read from now on: the workers of this replica, once it leads."""
        self._training, self._serving = training, serving
        self._integrated_until = self._clock()

    def describe(self) -> Iterator[Metric]:
        return self._families([], [])

    def collect(self) -> Iterator[Metric]:
        jobs, services = list(self._training()), list(self._serving())
        with self._lock:
            self._integrate_gpus(jobs)
        return self._families(jobs, services)

    def _integrate_gpus(self, jobs: list[Held]) -> None:
        now = self._clock()
        elapsed, self._integrated_until = now - self._integrated_until, now
        for job in jobs:  # a namespace with jobs but no GPUs shows 0, not nothing
            self._gpu_seconds[job.namespace] = self._gpu_seconds.get(job.namespace, 0.0) + running_gpus(job) * elapsed

    def _families(self, jobs: list[Held], services: list[Held]) -> Iterator[Metric]:
        yield _by_phase(f"{PREFIX}_trainingjobs", "TrainingJobs by namespace and phase", jobs, TRAINING_PHASES)
        yield from _job_families(jobs)
        gpu_seconds = CounterMetricFamily(
            f"{PREFIX}_gpu_seconds",
            "GPU-seconds held by running ranks (GPUs per pod x running pods), by namespace",
            labels=["namespace"],
        )
        for namespace, seconds in sorted(self._gpu_seconds.items()):
            gpu_seconds.add_metric([namespace], seconds)
        yield gpu_seconds
        yield _by_phase(
            f"{PREFIX}_inferenceservices", "InferenceServices by namespace and phase", services, SERVING_PHASES
        )
        yield _phase_family(
            f"{PREFIX}_inferenceservice_phase",
            "1 for each InferenceService, labelled with its phase and reason",
            "inferenceservice",
            services,
        )


def _job_families(jobs: list[Held]) -> Iterator[Metric]:
    yield _phase_family(
        f"{PREFIX}_trainingjob_phase", "1 for each TrainingJob, labelled with its phase and reason", "trainingjob", jobs
    )
    labels = ["namespace", "trainingjob"]
    restarts = GaugeMetricFamily(
        f"{PREFIX}_trainingjob_status_restarts",
        "Whole-gang restarts of the job so far (its status.restarts)",
        labels=labels,
    )
    heartbeat = GaugeMetricFamily(
        f"{PREFIX}_trainingjob_last_heartbeat_timestamp_seconds",
        "When rank 0 last reported progress (Unix time); absent before the first heartbeat",
        labels=labels,
    )
    gpus = GaugeMetricFamily(f"{PREFIX}_trainingjob_gpus", "GPUs held by the job's running ranks", labels=labels)
    for job in jobs:
        key = [job.namespace, job.name]
        restarts.add_metric(key, float(job.status.get("restarts") or 0))
        gpus.add_metric(key, float(running_gpus(job)))
        beat = _timestamp((job.status.get("progress") or {}).get("lastHeartbeatTime"))
        if beat is not None:
            heartbeat.add_metric(key, beat)
    yield from (restarts, heartbeat, gpus)


def _by_phase(name: str, documentation: str, held: list[Held], phases: tuple[str, ...]) -> GaugeMetricFamily:
    """A count for every phase of every namespace that has any, zeros included (a panel shows them)."""
    family = GaugeMetricFamily(name, documentation, labels=["namespace", "phase"])
    counts = Tally((h.namespace, phase_of(h)) for h in held)
    for namespace in sorted({h.namespace for h in held}):
        for phase in phases:
            family.add_metric([namespace, phase], float(counts[namespace, phase]))
    return family


def _phase_family(name: str, documentation: str, kind_label: str, held: list[Held]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, documentation, labels=["namespace", kind_label, "phase", "reason"])
    for h in held:
        family.add_metric([h.namespace, h.name, phase_of(h), str(h.status.get("reason") or "")], 1.0)
    return family


def phase_of(held: Held) -> str:
    return str(held.status.get("phase") or "Pending")


def running_gpus(job: Held) -> int:
    """GPUs per pod times the ranks running now."""
    resources = job.spec.get("resources") or {}
    running = (job.status.get("replicaCounts") or {}).get("running") or 0
    try:
        return int(resources.get("gpus") or 0) * int(running)
    except (TypeError, ValueError):  # a spec the operator failed as invalid
        return 0


def _timestamp(value: Any) -> float | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
