"""The server process: listen first, then load and warm up the model, then report ready.

Listening before the model is loaded lets the liveness probe pass during a long load (a large
model from network storage) while readiness keeps traffic away. Readiness needs a warm-up that
went through the same inference thread and servable as real requests: the first CUDA forward
pass compiles kernels and allocates memory, and a model that cannot run at all must never be
reported ready. A model that fails to load or warm up ends the process with a code the operator
can act on (65: the export is bad) rather than idling unready forever.

SIGTERM marks the server unready, stops accepting connections, lets the requests in flight
finish (they still need the batcher), then stops the batcher.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import ssl
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from pathlib import Path

from aidc_trainer import contract
from aidc_trainer.allocator import keep_freed_memory
from aidc_trainer.errors import ConfigError, TrainerError
from aidc_trainer.logs import configure_logging, fields
from aidc_trainer.serving.access_review import AccessReviews, api_server_address
from aidc_trainer.serving.app import create_runner
from aidc_trainer.serving.auth import ApiKeyGate, Gate, KubernetesGate
from aidc_trainer.serving.batcher import DynamicBatcher, split_rows
from aidc_trainer.serving.listening import FrontDoorSite
from aidc_trainer.serving.metrics import ServerMetrics
from aidc_trainer.serving.model import LoadedModel, load_model
from aidc_trainer.serving.openai_api import language_endpoint, warm_up
from aidc_trainer.serving.settings import ServerSettings, parse_settings
from aidc_trainer.serving.state import ServingState
from aidc_trainer.serving.workers import default_workers, supervise, usable_cpus

log = logging.getLogger(__name__)

Loader = Callable[[], LoadedModel]
SHUTDOWN_SECONDS = 20.0


async def start_serving(
    state: ServingState, load: Loader, *, max_batch_size: int, max_delay: float, require_openai: bool = False
) -> None:
    """Load the model off the event loop, warm it up, and only then mark the server ready.

    The warm-up runs one row and a full batch in the inference thread, outside the metrics, so
    the batch-size histogram only ever shows what clients caused.
    """
    loaded = await asyncio.to_thread(load)
    state.metrics.model_load_seconds.set(loaded.load_seconds)
    servable = loaded.servable
    batcher = DynamicBatcher(
        servable.run, max_batch_size=max_batch_size, max_delay=max_delay, metrics=state.metrics
    )
    started = time.perf_counter()
    for rows in sorted({1, max_batch_size}):
        work = servable.example(rows)
        outputs = await batcher.warm_up(work)
        missing = {spec.name for spec in servable.outputs} - outputs.keys()
        if missing:
            raise TrainerError(f"warm-up of {rows} rows returned no {', '.join(sorted(missing))}")
        split_rows(outputs, [rows])  # raises unless every output has one row per input row
    state.metrics.warmup_seconds.set(time.perf_counter() - started)
    state.servable, state.batcher = servable, batcher
    batcher.start()
    endpoint = language_endpoint(loaded.module, state.model_name)
    if endpoint is None and require_openai:
        raise ConfigError(
            f"the {servable.task} model cannot be served on the OpenAI routes: they serve the built-in "
            "language model over bytes (vocabSize 256) or a Hugging Face causal LM with its tokenizer"
        )
    if endpoint is not None and state.openai is not None:
        await warm_up(endpoint)  # outside the metrics, as the batcher's warm-up
        endpoint.engine.observe(state.metrics.generation)
        state.metrics.generation.watch(endpoint.engine)
        state.openai.endpoint = endpoint
    state.set_ready(True)
    log.info(
        "ready",
        extra=fields(
            task=servable.task,
            device=str(loaded.device),
            loadSeconds=round(loaded.load_seconds, 3),
            job=loaded.manifest.get("job"),
            step=loaded.manifest.get("step"),
        ),
    )


def access_gate(settings: ServerSettings, environ: Mapping[str, str]) -> Gate | None:
    """What the model routes require (settings.auth), or None when they are open."""
    if settings.auth == contract.AUTH_API_KEY and settings.api_key:
        return ApiKeyGate(settings.api_key)
    if settings.auth == contract.AUTH_KUBERNETES and settings.auth_namespace and settings.auth_name:
        reviews = AccessReviews(api_server_address(environ))
        return KubernetesGate(
            reviews, settings.auth_namespace, settings.auth_name, audiences=settings.auth_audiences
        )
    return None


def tls_context(settings: ServerSettings) -> ssl.SSLContext | None:
    """The server side of HTTPS from the PEM certificate and key; a bad pair is a config error (78)."""
    if settings.tls_cert_file is None or settings.tls_key_file is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(settings.tls_cert_file, settings.tls_key_file)
    except (OSError, ssl.SSLError) as error:
        pair = f"{settings.tls_cert_file} and {settings.tls_key_file}"
        raise ConfigError(f"cannot load the TLS certificate and key {pair}: {error}") from error
    return context


async def serve(
    settings: ServerSettings, load: Loader | None = None, environ: Mapping[str, str] | None = None
) -> int:
    """Run until SIGTERM or SIGINT; the exit code says why the process ended."""
    state = ServingState(settings.model_name, settings.max_request_bytes, ServerMetrics())
    context = tls_context(settings)
    gate = access_gate(settings, os.environ if environ is None else environ)
    runner = create_runner(state, gate, shutdown_timeout=SHUTDOWN_SECONDS)
    await runner.setup()
    site = FrontDoorSite(
        runner,
        state,
        gate,
        settings.host,
        settings.port,
        ssl_context=context,
        reuse_port=settings.reuse_port or None,
        drain_seconds=SHUTDOWN_SECONDS,
    )
    await site.start()
    port = runner.addresses[0][1] if runner.addresses else settings.port
    scheme = "https" if context else "http"
    log.info(
        "listening",
        extra=fields(
            host=settings.host,
            port=port,
            scheme=scheme,
            auth=settings.auth,
            model=settings.model_name,
            pid=os.getpid(),  # one line per worker with --workers
        ),
    )

    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    for number in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(number, stopping.set)
    loader = load or partial(load_model, settings.model_dir, settings.device)
    loading = asyncio.create_task(
        start_serving(
            state,
            loader,
            max_batch_size=settings.max_batch_size,
            max_delay=settings.max_delay_ms / 1000.0,
            require_openai=settings.openai == contract.OPENAI_REQUIRED,
        )
    )
    stop = asyncio.create_task(stopping.wait())
    code = 0
    try:
        await asyncio.wait({loading, stop}, return_when=asyncio.FIRST_COMPLETED)
        if loading.done() and loading.exception() is not None:
            error = loading.exception()
            code = error.exit_code if isinstance(error, TrainerError) else 1
            log.error("the model could not be served", extra=fields(error=str(error), exitCode=code))
        else:
            await stop
    finally:
        state.set_ready(False)
        loading.cancel()
        stop.cancel()
        await runner.cleanup()
        if state.batcher is not None:
            await state.batcher.close()
        if state.openai is not None and state.openai.endpoint is not None:
            await state.openai.endpoint.engine.stop()
    log.info("stopped", extra=fields(exitCode=code))
    return code


def event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop where it is installed (the image has it): its sockets, transports and callbacks cost
    a fraction of asyncio's, and on a small model they are most of a request; else asyncio's own."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def worker_count(settings: ServerSettings, cpus: int) -> int:
    """``--workers``, or one per usable CPU (one on a GPU: each worker holds the model)."""
    if settings.workers:
        return settings.workers
    gpu_visible = any(Path("/dev").glob("nvidia[0-9]*"))  # without importing torch in the supervisor
    return default_workers(settings.device, cpus, gpu_visible)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m aidc_trainer.serving``: one server, or a supervisor of ``--workers`` servers."""
    configure_logging(rank=0)
    arguments = list(sys.argv[1:] if argv is None else argv)
    try:
        settings = parse_settings(arguments, os.environ)
    except TrainerError as error:
        log.error("invalid server settings", extra=fields(error=str(error)))
        return error.exit_code
    cpus = usable_cpus()
    workers = 1 if settings.reuse_port else worker_count(settings, cpus)
    if workers > 1:
        return supervise(arguments, settings.host, settings.port, workers, cpus)
    keep_freed_memory()
    try:
        with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
            return runner.run(serve(settings))
    except ConfigError as error:
        log.error("invalid server settings", extra=fields(error=str(error)))
        return error.exit_code
