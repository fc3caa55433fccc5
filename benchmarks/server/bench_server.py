"""Model server benchmark: dynamic batching against the same server without it.

Trains the digits classifier for a few steps with the real trainer (or takes ``--model-dir``),
starts ``python -m aidc_trainer.serving`` twice as subprocesses, one batching (maxBatchSize 32,
maxDelayMs 5) and one not (maxBatchSize 1, maxDelayMs 0), and drives each with a closed-loop
asyncio client at several concurrencies: every virtual client sends its next v2 infer request
(one 28x28 image) as soon as the previous answer arrives. Prints requests/s and p50/p99 latency
side by side with the ratios. Measures, asserts nothing.

    python benchmarks/server/bench_server.py [--duration 4] [--concurrency 1 16 64]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import numpy as np

REPO = Path(__file__).resolve().parents[2]
MODEL = "digits"
INFER = f"/v2/models/{MODEL}/infer"


@dataclass(frozen=True)
class Mode:
    name: str
    max_batch_size: int
    max_delay_ms: float


@dataclass(frozen=True)
class Point:
    """One measurement: a server mode at one concurrency."""

    requests: int
    errors: int
    seconds: float
    p50_ms: float
    p99_ms: float
    mean_batch: float

    @property
    def per_second(self) -> float:
        return self.requests / self.seconds


def environment(threads: int) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO / "trainer-image"), os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": str(threads),
    }


def train(directory: Path) -> Path:
    """The digits classifier after 20 steps, exported by the real trainer."""
    config = {"task": "classifier", "dataset": {"source": "digits"}, "epochs": 1, "maxSteps": 20}
    env = {**environment(2), "AIDC_TRAINER_CONFIG": json.dumps(config), "AIDC_CHECKPOINT_DIR": str(directory)}
    subprocess.run([sys.executable, "-m", "aidc_trainer"], env=env, check=True, capture_output=True, timeout=600)
    return directory / "export" / "final"


@contextlib.contextmanager
def server(model_dir: Path, mode: Mode, threads: int, log: Path) -> Iterator[str]:
    """A server subprocess; yields its URL once ``/v2/health/ready`` answers 200."""
    args = [
        sys.executable,
        "-m",
        "aidc_trainer.serving",
        "--model-dir",
        str(model_dir),
        "--model-name",
        MODEL,
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--max-batch-size",
        str(mode.max_batch_size),
        "--max-delay-ms",
        str(mode.max_delay_ms),
        "--device",
        "cpu",
    ]
    with log.open("wb") as sink:
        process = subprocess.Popen(args, stdout=sink, stderr=sink, env=environment(threads))
    try:
        url = wait_listening(process, log)
        asyncio.run(wait_ready(url, process))
        yield url
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)


def wait_listening(process: subprocess.Popen[bytes], log: Path, timeout: float = 120) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in log.read_text().splitlines():
            record = json.loads(line) if line.startswith("{") else {}
            if record.get("message") == "listening":
                return f"http://127.0.0.1:{record['port']}"
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}: {log.read_text()}")
        time.sleep(0.05)
    raise RuntimeError(f"server not listening after {timeout}s")


async def wait_ready(url: str, process: subprocess.Popen[bytes], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession(url) as session:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"server exited with {process.returncode}")
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get("/v2/health/ready") as response:
                    if response.status == 200:
                        return
            await asyncio.sleep(0.05)
    raise RuntimeError(f"server not ready after {timeout}s")


def request_bodies(count: int = 64) -> list[bytes]:
    """Pre-encoded requests, one image each, so the client spends its CPU on HTTP, not on JSON."""
    rng = np.random.default_rng(0)
    bodies = []
    for _ in range(count):
        image = rng.random((1, 1, 28, 28), dtype=np.float32).round(4)
        tensor = {"name": "input", "shape": [1, 1, 28, 28], "datatype": "FP32", "data": image.reshape(-1).tolist()}
        bodies.append(json.dumps({"inputs": [tensor]}).encode())
    return bodies


async def batch_totals(session: aiohttp.ClientSession) -> tuple[float, float]:
    """(forward passes, rows) from the server's batch-size histogram."""
    async with session.get("/metrics") as response:
        text = await response.text()
    values = {}
    for line in text.splitlines():
        if line.startswith(("aidc_server_batch_size_count ", "aidc_server_batch_size_sum ")):
            name, value = line.split()
            values[name] = float(value)
    return values.get("aidc_server_batch_size_count", 0.0), values.get("aidc_server_batch_size_sum", 0.0)


async def load(url: str, concurrency: int, duration: float, bodies: list[bytes]) -> Point:
    """Closed loop: ``concurrency`` clients, each sending its next request when answered."""
    latencies: list[float] = []
    errors = 0
    headers = {"Content-Type": "application/json"}
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(url, connector=connector) as session:

        async def client(index: int, until: float, record: bool) -> None:
            nonlocal errors
            sent = index
            while time.perf_counter() < until:
                started = time.perf_counter()
                async with session.post(INFER, data=bodies[sent % len(bodies)], headers=headers) as response:
                    await response.read()
                    ok = response.status == 200
                if record:
                    latencies.append(time.perf_counter() - started)
                    errors += 0 if ok else 1
                sent += concurrency

        warm_until = time.perf_counter() + min(1.0, duration / 4)
        await asyncio.gather(*(client(i, warm_until, record=False) for i in range(concurrency)))
        passes_before, rows_before = await batch_totals(session)
        started = time.perf_counter()
        await asyncio.gather(*(client(i, started + duration, record=True) for i in range(concurrency)))
        elapsed = time.perf_counter() - started
        passes_after, rows_after = await batch_totals(session)
    milliseconds = np.array(latencies) * 1000
    passes = passes_after - passes_before
    return Point(
        requests=len(latencies),
        errors=errors,
        seconds=elapsed,
        p50_ms=float(np.percentile(milliseconds, 50)),
        p99_ms=float(np.percentile(milliseconds, 99)),
        mean_batch=(rows_after - rows_before) / passes if passes else 0.0,
    )


def table(concurrencies: Sequence[int], results: dict[str, dict[int, Point]], modes: Sequence[Mode]) -> str:
    batched, unbatched = (results[mode.name] for mode in modes)
    header = (
        f"{'clients':>7} | {'batched req/s':>13} {'p50 ms':>7} {'p99 ms':>7} {'batch':>5} | "
        f"{'unbatched req/s':>15} {'p50 ms':>7} {'p99 ms':>7} | {'req/s x':>7} {'p50 x':>6} {'p99 x':>6}"
    )
    lines = [header, "-" * len(header)]
    for c in concurrencies:
        b, u = batched[c], unbatched[c]
        lines.append(
            f"{c:>7} | {b.per_second:>13.0f} {b.p50_ms:>7.1f} {b.p99_ms:>7.1f} {b.mean_batch:>5.1f} | "
            f"{u.per_second:>15.0f} {u.p50_ms:>7.1f} {u.p99_ms:>7.1f} | "
            f"{b.per_second / u.per_second:>7.2f} {b.p50_ms / u.p50_ms:>6.2f} {b.p99_ms / u.p99_ms:>6.2f}"
        )
    errors = sum(point.errors for points in results.values() for point in points.values())
    lines.append(f"errors: {errors}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--model-dir", type=Path, help="an exported classifier (default: train one now)")
    parser.add_argument("--duration", type=float, default=4.0, help="seconds measured per point")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--threads", type=int, default=1, help="torch threads per server (OMP_NUM_THREADS)")
    parser.add_argument("--max-batch-size", type=int, default=32)
    parser.add_argument("--max-delay-ms", type=float, default=5.0)
    arguments = parser.parse_args(argv)
    modes = (
        Mode("batched", arguments.max_batch_size, arguments.max_delay_ms),
        Mode("unbatched", 1, 0.0),
    )
    with tempfile.TemporaryDirectory(prefix="aidc-bench-server-") as scratch:
        model_dir = arguments.model_dir or train(Path(scratch) / "train")
        bodies = request_bodies()
        results: dict[str, dict[int, Point]] = {}
        for mode in modes:
            with server(model_dir, mode, arguments.threads, Path(scratch) / f"{mode.name}.log") as url:
                results[mode.name] = {
                    c: asyncio.run(load(url, c, arguments.duration, bodies)) for c in arguments.concurrency
                }
    print(
        f"aidc model server, digits classifier (1x28x28 FP32, one image per request), CPU, "
        f"{arguments.threads} torch thread(s) per server, {os.cpu_count()} cores, Python {platform.python_version()}"
    )
    print(
        f"batched: maxBatchSize {arguments.max_batch_size}, maxDelayMs {arguments.max_delay_ms:g}; "
        f"unbatched: maxBatchSize 1; {arguments.duration:g} s per point, closed-loop clients; "
        f"'batch' = mean rows per forward pass; 'x' = batched / unbatched"
    )
    print(table(arguments.concurrency, results, modes))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
