"""Prometheus metrics of a training run, served by rank 0 on ``AIDC_METRICS_PORT``.

The heartbeat carries a snapshot every few seconds for ``kubectl``; these series are for
dashboards and alerts over time (throughput drops, loss spikes, slow checkpoints). Each
``TrainerMetrics`` owns its registry so several runs in one process (tests) do not collide.
"""

from __future__ import annotations

import logging
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from aidc_trainer.logs import fields

_log = logging.getLogger(__name__)

_CHECKPOINT_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class TrainerMetrics:
    """The trainer's series; update them from the training loop, scrape them over HTTP."""

    def __init__(self, job: str) -> None:
        self.registry = CollectorRegistry()
        labels = {"job_name": job}
        self.step = Gauge(
            "aidc_trainer_step", "Optimizer steps completed.", registry=self.registry, labelnames=list(labels)
        ).labels(**labels)
        self.total_steps = Gauge(
            "aidc_trainer_total_steps",
            "Optimizer steps the run will take.",
            registry=self.registry,
            labelnames=list(labels),
        ).labels(**labels)
        self.epoch = Gauge(
            "aidc_trainer_epoch",
            "Epoch in progress, counted from 1.",
            registry=self.registry,
            labelnames=list(labels),
        ).labels(**labels)
        self.loss = Gauge(
            "aidc_trainer_loss",
            "Mean training loss since the last report (rank 0).",
            registry=self.registry,
            labelnames=list(labels),
        ).labels(**labels)
        self.samples_per_second = Gauge(
            "aidc_trainer_samples_per_second",
            "Training samples per second over the whole gang.",
            registry=self.registry,
            labelnames=list(labels),
        ).labels(**labels)
        self.samples = Counter(
            "aidc_trainer_samples",
            "Training samples processed by the gang.",
            registry=self.registry,
            labelnames=list(labels),
        ).labels(**labels)
        self._validation = Gauge(
            "aidc_trainer_validation_metric",
            "Latest validation metrics.",
            registry=self.registry,
            labelnames=[*labels, "metric"],
        )
        self._training = Gauge(
            "aidc_trainer_training_metric",
            "Latest training metrics besides the loss (reinforcement learning: episodic return, "
            "policy and value loss, entropy, environment steps per second).",
            registry=self.registry,
            labelnames=[*labels, "metric"],
        )
        self._checkpoint_seconds = Histogram(
            "aidc_trainer_checkpoint_seconds",
            "Time to save or load a checkpoint.",
            registry=self.registry,
            labelnames=[*labels, "operation"],
            buckets=_CHECKPOINT_BUCKETS,
        )
        self._labels = labels

    def observe_checkpoint(self, operation: str, seconds: float) -> None:
        """Record a checkpoint ``save`` or ``load`` duration."""
        self._checkpoint_seconds.labels(**self._labels, operation=operation).observe(seconds)

    def set_validation(self, metrics: dict[str, float]) -> None:
        for name, value in metrics.items():
            self._validation.labels(**self._labels, metric=name).set(value)

    def set_training(self, metrics: dict[str, float]) -> None:
        for name, value in metrics.items():
            self._training.labels(**self._labels, metric=name).set(value)

    def serve(self, port: int) -> Any:
        """Start the scrape endpoint on ``port`` (0: disabled); failures are logged, not fatal."""
        if port == 0:
            return None
        try:
            return start_http_server(port, registry=self.registry)
        except OSError as error:
            _log.warning("metrics endpoint not started", extra=fields(port=port, error=str(error)))
            return None
