"""Prometheus metrics of the model server, on a registry of its own.

A registry per server (rather than the process-global default) lets tests run several servers in
one process without "duplicated timeseries" errors, and keeps the trainer's metrics out of a
serving pod's scrape. Endpoints are labelled by route template (``/v2/models/{model}/infer``),
never by raw path, so a client probing random URLs cannot blow up the series count.
"""

from __future__ import annotations

from typing import Final

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)

LATENCY_BUCKETS: Final = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
BATCH_BUCKETS: Final = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
CONTENT_TYPE: Final = CONTENT_TYPE_LATEST


class ServerMetrics:
    """The server's instruments; ``render`` is the body of ``GET /metrics``."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        self.requests = Counter(
            "aidc_server_requests",
            "HTTP requests handled, by route template and status code.",
            ["endpoint", "code"],
            registry=self.registry,
        )
        self.request_seconds = Histogram(
            "aidc_server_request_duration_seconds",
            "Time from a request's arrival to its response, by route template and status code.",
            ["endpoint", "code"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "aidc_server_batch_size",
            "Rows per forward pass: above 1 when dynamic batching gathered concurrent requests.",
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        self.queue_seconds = Histogram(
            "aidc_server_queue_seconds",
            "Time a request waited in the batcher before its forward pass began.",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.inference_seconds = Histogram(
            "aidc_server_inference_seconds",
            "Time of one batched forward pass, including moving tensors to and from the device.",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.model_load_seconds = Gauge(
            "aidc_server_model_load_seconds",
            "Time it took to read the exported model and place it on the device.",
            registry=self.registry,
        )
        self.warmup_seconds = Gauge(
            "aidc_server_warmup_seconds",
            "Time the warm-up inferences took; the server is ready only after they passed.",
            registry=self.registry,
        )
        self.ready = Gauge(
            "aidc_server_ready",
            "1 once the model is loaded and warmed up, else 0.",
            registry=self.registry,
        )

    def render(self) -> bytes:
        """The text exposition format of every metric in this server's registry."""
        return generate_latest(self.registry)
