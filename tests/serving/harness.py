"""Ways to run the model server in tests: in-process (fake or real servables) and as a process.

In-process servers start on port 0 with the real app and the real lifecycle (``start_serving``),
so a test can hold the warm-up and watch readiness. The process helper runs
``python -m aidc_trainer.serving`` exactly as a pod does and polls, never sleeps blindly.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from aidc_trainer import contract
from aidc_trainer.serving.app import create_runner
from aidc_trainer.serving.auth import Gate
from aidc_trainer.serving.listening import FrontDoorSite
from aidc_trainer.serving.metrics import ServerMetrics
from aidc_trainer.serving.model import LoadedModel
from aidc_trainer.serving.protocol import Array, ProtocolError, TensorSpec
from aidc_trainer.serving.servable import Servable, Work
from aidc_trainer.serving.server import start_serving
from aidc_trainer.serving.state import ServingState

REPO = Path(__file__).resolve().parents[2]


class ScaleServable(Servable):
    """A numpy stand-in model: ``x`` (FP32 [n, 3]) -> ``scaled`` (x * factor) and ``total`` (row sums).

    It records the rows of each forward pass; ``gate``, when given, holds every run until set,
    which lets a test keep the warm-up from finishing. With ``poison`` a pass holding a negative
    value fails, as a model fails on an input it cannot take.
    """

    task = "scale"
    platform = "numpy"

    def __init__(
        self, factor: float = 2.0, gate: threading.Event | None = None, fail: bool = False, poison: bool = False
    ) -> None:
        self.factor = factor
        self.gate = gate
        self.fail = fail
        self.poison = poison
        self.batches: list[int] = []
        self.running = threading.Event()  # set once a run has started (and maybe waits on the gate)

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        return (TensorSpec("x", "FP32", (-1, 3)),)

    @property
    def outputs(self) -> tuple[TensorSpec, ...]:
        return (TensorSpec("scaled", "FP32", (-1, 3)), TensorSpec("total", "FP32", (-1,)))

    def prepare(self, inputs: Mapping[str, Array], parameters: Mapping[str, Any]) -> Work:
        x = inputs["x"]
        if not np.isfinite(x).all():
            raise ProtocolError("input 'x' must be finite")
        return Work(arrays={"x": x}, rows=len(x))

    def run(self, arrays: Mapping[str, Array], options: Mapping[str, Any]) -> dict[str, Array]:
        self.running.set()
        if self.gate is not None and not self.gate.wait(timeout=30):
            raise TimeoutError("the test never opened the gate")
        if self.fail:
            raise RuntimeError("this model cannot run")
        x = arrays["x"]
        self.batches.append(len(x))
        if self.poison and (x < 0).any():
            raise ValueError("this model cannot take negative values")
        return {"scaled": x * self.factor, "total": x.sum(axis=1)}

    def example(self, rows: int) -> Work:
        return Work(arrays={"x": np.zeros((rows, 3), dtype=np.float32)}, rows=rows)


def loaded(servable: Servable) -> Callable[[], LoadedModel]:
    """A loader that hands back ``servable`` as if read from disk."""
    import torch

    return lambda: LoadedModel(servable, {"task": servable.task}, torch.device("cpu"), 0.001)


@dataclass
class InProcessServer:
    url: str
    state: ServingState
    loading: Any  # the start_serving task
    site: FrontDoorSite


@contextlib.asynccontextmanager
async def in_process_server(
    load: Callable[[], LoadedModel],
    *,
    model_name: str = "m",
    max_batch_size: int = 32,
    max_delay: float = 0.005,
    max_request_bytes: int = 1 << 20,
    gate: Gate | None = None,
    ssl_context: ssl.SSLContext | None = None,
    keepalive_seconds: float = 75.0,
) -> AsyncIterator[InProcessServer]:
    """The real app and lifecycle on a free loopback port; loading starts in the background.

    ``gate`` requires credentials as in a pod with ``spec.auth``; ``ssl_context`` serves HTTPS
    (the URL then names ``localhost``, which the tests' certificates are made out to).
    """
    import asyncio

    state = ServingState(model_name, max_request_bytes, ServerMetrics())
    runner = create_runner(state, gate)
    await runner.setup()
    site = FrontDoorSite(
        runner, state, gate, "127.0.0.1", 0, ssl_context=ssl_context, keepalive_seconds=keepalive_seconds
    )
    await site.start()
    port = runner.addresses[0][1]
    loading = asyncio.create_task(start_serving(state, load, max_batch_size=max_batch_size, max_delay=max_delay))
    base = f"https://localhost:{port}" if ssl_context else f"http://127.0.0.1:{port}"
    try:
        yield InProcessServer(base, state, loading, site)
    finally:
        loading.cancel()
        with contextlib.suppress(BaseException):
            await loading
        await runner.cleanup()
        if state.batcher is not None:
            await state.batcher.close()


# --- a served process ------------------------------------------------------------------------


@dataclass
class Response:
    status: int
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def request(url: str, method: str, path: str, body: Any = None, raw: bytes | None = None) -> Response:
    """One HTTP request on a fresh connection (``raw`` bytes sent as they are)."""
    host, port = url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        payload = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        headers = {"Content-Type": "application/json"} if payload is not None else {}
        connection.request(method, path, body=payload, headers=headers)
        response = connection.getresponse()
        return Response(response.status, response.read())
    finally:
        connection.close()


def metric_samples(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of ``GET /metrics`` keyed by (name, sorted labels)."""
    text = request(url, "GET", "/metrics").body.decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


@dataclass
class ServerProcess:
    """``python -m aidc_trainer.serving`` with its log file; ``url`` once it is listening."""

    process: subprocess.Popen[bytes]
    log: Path
    url: str = ""
    records: list[dict[str, Any]] = field(default_factory=list)

    def read_log(self) -> list[dict[str, Any]]:
        lines = self.log.read_text().splitlines()
        self.records = [json.loads(line) for line in lines if line.startswith("{")]
        return self.records

    def wait_listening(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for record in self.read_log():
                if record.get("message") == "listening":
                    host = "localhost" if record.get("scheme") == "https" else "127.0.0.1"
                    self.url = f"{record.get('scheme', 'http')}://{host}:{record['port']}"
                    return
            if self.process.poll() is not None:
                raise AssertionError(f"server exited with {self.process.returncode}:\n{self.log.read_text()}")
            time.sleep(0.05)
        raise AssertionError(f"server not listening after {timeout}s:\n{self.log.read_text()}")

    def wait_ready(self, timeout: float = 60) -> None:
        self.wait_listening(timeout)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"server exited with {self.process.returncode}:\n{self.log.read_text()}")
            with contextlib.suppress(OSError):
                if request(self.url, "GET", "/v2/health/ready").status == 200:
                    return
            time.sleep(0.05)
        raise AssertionError(f"server not ready after {timeout}s:\n{self.log.read_text()}")

    def stop(self, timeout: float = 30) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)


@contextlib.contextmanager
def ready_process(args: Sequence[str], log: Path, env: Mapping[str, str] | None = None) -> Iterator[ServerProcess]:
    """A started server once it is ready; stopped afterwards."""
    process = start_process(args, log, env)
    try:
        process.wait_ready()
        yield process
    finally:
        process.stop()


def start_process(args: Sequence[str], log: Path, env: Mapping[str, str] | None = None) -> ServerProcess:
    """Start the server as a pod would; stderr (the JSON log) goes to ``log``."""
    environment = {
        **os.environ,
        "PYTHONPATH": str(REPO / "trainer-image"),
        "OMP_NUM_THREADS": "1",
        contract.ENV_SERVER_WORKERS: "1",  # one process unless a test asks for more: its metrics are one view
        **(env or {}),
    }
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "aidc_trainer.serving", "--host", "127.0.0.1", *args],
            stdout=sink,
            stderr=sink,
            env=environment,
        )
    return ServerProcess(process, log)


def train(task: str, directory: Path, config: Mapping[str, Any], env: Mapping[str, str] | None = None) -> Path:
    """Train with the real trainer (one process, CPU) and return its ``export/final`` folder."""
    environment = {
        **os.environ,
        **(env or {}),
        "PYTHONPATH": str(REPO / "trainer-image"),
        "AIDC_TRAINER_CONFIG": json.dumps({"task": task, **config}),
        "AIDC_CHECKPOINT_DIR": str(directory),
        "OMP_NUM_THREADS": "1",
    }
    result = subprocess.run(
        [sys.executable, "-m", "aidc_trainer"], env=environment, capture_output=True, timeout=600, check=False
    )
    assert result.returncode == 0, result.stderr.decode()[-4000:]
    return directory / "export" / "final"
