"""Prometheus metrics of the model server, on a registry of its own.

A registry per server (rather than the process-global default) lets tests run several servers in
one process without "duplicated timeseries" errors, and keeps the trainer's metrics out of a
serving pod's scrape. Endpoints are labelled by route template (``/v2/models/{model}/infer``),
never by raw path, so a client probing random URLs cannot blow up the series count.

With ``--workers`` each worker process counts what it served, and a scrape reaches whichever worker
the kernel hands the connection to. So the supervisor names a shared folder in
``PROMETHEUS_MULTIPROC_DIR`` and every worker's values live in files there (prometheus_client's
multiprocess mode): a scrape sums the counters and histograms of all workers, and shows each
worker's gauges with its ``pid``.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Final

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector

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
# a token takes milliseconds on a GPU and tens of them on a CPU; a whole generation up to minutes
TOKEN_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
GENERATION_BUCKETS: Final = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0, 160.0, 320.0)
BATCH_BUCKETS: Final = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
CONTENT_TYPE: Final = CONTENT_TYPE_LATEST
# read by prometheus_client when it is imported: set by the supervisor for its workers only
ENV_SHARED_METRICS: Final = "PROMETHEUS_MULTIPROC_DIR"

if TYPE_CHECKING:
    from aidc_trainer.serving.engine import Engine, Generation


class GenerationMetrics:
    """The language model's: what a person waits for (first token, each next one, the whole answer),
    the tokens in and out, and the engine's load. The engine reports to it as an ``EngineObserver``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.time_to_first_token = Histogram(
            "aidc_server_time_to_first_token_seconds",
            "Time from a generation's arrival (queueing included) to its first generated token.",
            buckets=TOKEN_BUCKETS,
            registry=registry,
        )
        self.inter_token = Histogram(
            "aidc_server_inter_token_seconds",
            "Time between two consecutive tokens of one generation.",
            buckets=TOKEN_BUCKETS,
            registry=registry,
        )
        self.generation_seconds = Histogram(
            "aidc_server_generation_duration_seconds",
            "Time from a generation's arrival to its end (finished, stopped or cancelled).",
            buckets=GENERATION_BUCKETS,
            registry=registry,
        )
        self.prompt_tokens = Counter(
            "aidc_server_prompt_tokens", "Prompt tokens of the generations admitted.", registry=registry
        )
        self.generated_tokens = Counter(
            "aidc_server_generated_tokens", "Tokens generated, over every generation.", registry=registry
        )
        self.running = Gauge(
            "aidc_server_running_generations", "Generations in the running batch.", registry=registry
        )
        self.waiting = Gauge(
            "aidc_server_waiting_generations", "Generations queued for a free slot.", registry=registry
        )

    def watch(self, engine: Engine) -> None:
        """The gauges read ``engine``'s running and waiting counts at every scrape, or, with shared
        metrics (a scrape cannot call into another worker), whenever a generation comes or goes."""
        self._engine = engine
        if os.environ.get(ENV_SHARED_METRICS) is None:
            self.running.set_function(lambda: engine.running)
            self.waiting.set_function(lambda: engine.waiting)

    def _count_generations(self) -> None:
        engine = getattr(self, "_engine", None)
        if engine is not None and os.environ.get(ENV_SHARED_METRICS) is not None:
            self.running.set(engine.running)
            self.waiting.set(engine.waiting)

    def admitted(self, generation: Generation) -> None:
        self.prompt_tokens.inc(len(generation.prompt))
        self._count_generations()

    def token(self, generation: Generation, seconds: float) -> None:
        self.generated_tokens.inc()
        first = generation.first_token_at is None
        (self.time_to_first_token if first else self.inter_token).observe(seconds)

    def finished(self, generation: Generation) -> None:
        end = generation.last_token_at or generation.submitted_at
        self.generation_seconds.observe(end - generation.submitted_at)
        self._count_generations()


class ServerMetrics:
    """The server's instruments; ``render`` is the body of ``GET /metrics``."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._shared = os.environ.get(ENV_SHARED_METRICS)
        if self._shared is None:  # a worker's process metrics would describe only the one scraped
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
        self._answers: dict[tuple[str, str], tuple[Counter, Histogram]] = {}
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
        self.generation = GenerationMetrics(self.registry)
        self.ready = Gauge(
            "aidc_server_ready",
            "1 once the model is loaded and warmed up, else 0.",
            registry=self.registry,
        )

    def answered(self, endpoint: str, code: str, seconds: float) -> None:
        """Count one answer by route template and status code, and its latency.

        The labelled series are looked up once per pair and kept: ``labels()`` takes a lock and
        builds its key on every call, which a request then paid twice.
        """
        series = self._answers.get((endpoint, code))
        if series is None:
            series = (self.requests.labels(endpoint, code), self.request_seconds.labels(endpoint, code))
            self._answers[(endpoint, code)] = series
        series[0].inc()
        series[1].observe(seconds)

    def render(self) -> bytes:
        """The text exposition format of every metric: this server's, or all workers' when shared."""
        if self._shared is None:
            return generate_latest(self.registry)
        everyone = CollectorRegistry()
        MultiProcessCollector(everyone, path=self._shared)
        return generate_latest(everyone)
