"""Model server benchmark: aidc's server against KServe's ModelServer, side by side in one run.

Trains the digits classifier for a few steps with the real trainer (or takes ``--model-dir``) and
serves the same export four ways, one process and one torch thread each, all pinned to the same
core: aidc batching (maxBatchSize 32, maxDelayMs 5) over JSON and over the binary tensor data
extension, aidc unbatched (maxBatchSize 1), and KServe 0.21's ModelServer (PyPI, in its own
environment, see ``kserve_env.py``). ``--before REF`` adds aidc's server as it was at a git
revision. wrk drives each with closed-loop clients (one 28x28 FP32 image per OIP v2 request) from
another core, in 1 s slices taken in turn, for ``--rounds`` rounds. The bare forward pass (softmax
and argmax included) at batch 1, 8 and 32 on the servers' core, measured in each round, is the limit.
Measures and prints; asserts nothing.

    python benchmarks/server/bench_server.py [--slices 5] [--rounds 2] [--before 19ab1db]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from kserve_env import KSERVE_VERSION, kserve_python
from server_profile import profiled, summarize
from wrk_load import Bodies, Point, drive, write_bodies

REPO = Path(__file__).resolve().parents[2]
MODEL = "digits"
INFER = f"/v2/models/{MODEL}/infer"
READY = f"/v2/models/{MODEL}/ready"


@dataclass(frozen=True)
class Mode:
    name: str
    max_batch_size: int
    max_delay_ms: float


@dataclass(frozen=True)
class Target:
    """A server under load and the bodies it gets."""

    name: str
    url: str
    bodies: Bodies
    pid: int


def environment(threads: int, source: Path = REPO / "trainer-image") -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(source), os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": str(threads),
    }


def train(directory: Path) -> Path:
    """The digits classifier after 20 steps, exported by the real trainer."""
    config = {"task": "classifier", "dataset": {"source": "digits"}, "epochs": 1, "maxSteps": 20}
    env = {**environment(2), "AIDC_TRAINER_CONFIG": json.dumps(config), "AIDC_CHECKPOINT_DIR": str(directory)}
    subprocess.run([sys.executable, "-m", "aidc_trainer"], env=env, check=True, capture_output=True, timeout=600)
    return directory / "export" / "final"


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def pinned(core: int | None, command: list[str]) -> list[str]:
    return command if core is None else ["taskset", "-c", str(core), *command]


@contextlib.contextmanager
def running(command: list[str], env: Mapping[str, str], log: Path, url: str) -> Iterator[subprocess.Popen[bytes]]:
    """A server subprocess, once ``READY`` answers 200; stopped with SIGTERM afterwards."""
    with log.open("wb") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=sink, env=dict(env))
    try:
        wait_ready(url, process, log)
        yield process
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()


def wait_ready(url: str, process: subprocess.Popen[bytes], log: Path, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}: {log.read_text()[-3000:]}")
        with contextlib.suppress(OSError), urllib.request.urlopen(url + READY, timeout=5) as response:
            if response.status == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"server not ready after {timeout}s: {log.read_text()[-3000:]}")


@contextlib.contextmanager
def aidc_server(
    model_dir: Path,
    mode: Mode,
    threads: int,
    log: Path,
    *,
    source: Path = REPO / "trainer-image",
    core: int | None = None,
    workers: int | None = 1,
) -> Iterator[tuple[str, int]]:
    """``python -m aidc_trainer.serving`` from ``source``; yields its URL and pid once ready.

    ``workers`` None leaves the flag out, for revisions that predate it.
    """
    port = free_port()
    command = [
        sys.executable, "-m", "aidc_trainer.serving", "--model-dir", str(model_dir), "--model-name", MODEL,
        "--host", "127.0.0.1", "--port", str(port), "--max-batch-size", str(mode.max_batch_size),
        "--max-delay-ms", str(mode.max_delay_ms), "--device", "cpu",
    ]  # fmt: skip
    if workers is not None:
        command += ["--workers", str(workers)]
    url = f"http://127.0.0.1:{port}"
    with running(pinned(core, command), environment(threads, source), log, url) as process:
        yield url, process.pid


@contextlib.contextmanager
def server(model_dir: Path, mode: Mode, threads: int, log: Path) -> Iterator[str]:
    """One aidc server process; yields its URL (``bench_llm.py`` uses it)."""
    with aidc_server(model_dir, mode, threads, log) as (url, _):
        yield url


@contextlib.contextmanager
def kserve_server(model_dir: Path, log: Path, core: int | None, venv: Path) -> Iterator[tuple[str, int]]:
    """KServe's ModelServer (one worker) serving the same export; yields its URL and pid."""
    port = free_port()
    script = Path(__file__).resolve().parent / "kserve_digits.py"
    command = [
        str(kserve_python(venv)), str(script), "--model_dir", str(model_dir), "--model_name", MODEL,
        "--http_port", str(port), "--workers", "1", "--enable_grpc", "false",
    ]  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    with running(pinned(core, command), environment(1), log, url) as process:
        yield url, process.pid


def before_source(ref: str, cache: Path) -> Path:
    """The trainer image's code at ``ref``, unpacked once under ``cache``."""
    sha = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", ref], capture_output=True, text=True, check=True
    )
    folder = cache / sha.stdout.strip()
    if not (folder / "trainer-image").exists():
        folder.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(
            ["git", "-C", str(REPO), "archive", ref, "trainer-image"], capture_output=True, check=True
        )
        subprocess.run(["tar", "-x", "-C", str(folder)], input=archive.stdout, check=True)
    return folder / "trainer-image"


def images(count: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.random((1, 1, 28, 28), dtype=np.float32).round(4) for _ in range(count)]


def json_body(image: np.ndarray) -> bytes:
    tensor = {"name": "input", "shape": [1, 1, 28, 28], "datatype": "FP32", "data": image.reshape(-1).tolist()}
    return json.dumps({"inputs": [tensor]}).encode()


def binary_header() -> bytes:
    tensor = {"name": "input", "shape": [1, 1, 28, 28], "datatype": "FP32", "parameters": {"binary_data_size": 3136}}
    return json.dumps({"inputs": [tensor], "parameters": {"binary_data_output": True}}).encode()


def forward_rates(model_dir: Path, core: int | None, slices: int = 5, seconds: float = 0.4) -> dict[int, float]:
    """Images/s of the bare forward pass (softmax and argmax included), one thread, on ``core``:
    the median of ``slices`` short runs per batch size, interleaved, as the servers are measured.

    malloc keeps freed memory here as it does in aidc's server (``serving/allocator.py``): with
    glibc's defaults each batch of 32 faulted its activations in again, and batch 32 measured
    slower than batch 8 (3,000-3,500 images/s against 4,400-4,500), a limit too low to mean much.
    """
    import torch

    from aidc_trainer.allocator import keep_freed_memory
    from aidc_trainer.export import load_exported

    keep_freed_memory()

    previous = os.sched_getaffinity(0)
    if core is not None:
        os.sched_setaffinity(0, {core})
    torch.set_num_threads(1)
    module = load_exported(model_dir, torch.device("cpu"))[0].eval()
    samples: dict[int, list[float]] = {1: [], 8: [], 32: []}
    try:
        with torch.inference_mode():
            for _ in range(slices):
                for batch, rates in samples.items():
                    x = torch.rand(batch, 1, 28, 28)
                    torch.softmax(module(x), dim=-1).argmax(dim=-1)
                    runs, started = 0, time.perf_counter()
                    while time.perf_counter() - started < seconds:
                        torch.softmax(module(x), dim=-1).argmax(dim=-1)
                        runs += 1
                    rates.append(runs * batch / (time.perf_counter() - started))
    finally:
        os.sched_setaffinity(0, previous)
    return {batch: float(np.median(rates)) for batch, rates in samples.items()}


def median_point(points: Sequence[Point]) -> Point:
    """One point from slices: all requests over all seconds, and the median slice's percentiles."""
    return Point(
        requests=sum(p.requests for p in points),
        errors=sum(p.errors for p in points),
        seconds=sum(p.seconds for p in points),
        p50_ms=float(np.median([p.p50_ms for p in points])),
        p99_ms=float(np.median([p.p99_ms for p in points])),
    )


def cpu_ticks(pid: int) -> int:
    """The process's user and system CPU time so far, in clock ticks (``/proc/<pid>/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime and stime, the 14th and 15th fields


def settle(pid: int, window: float = 0.05, limit: float = 5.0) -> None:
    """Wait until the server that was just driven has stopped working on the core the servers share.

    When wrk's slice ends, the clients' last requests are still queued in the server: about 100 ms
    of work for KServe at 64 clients, which used to run during the next server's slice, costing
    it about a sixth of its requests and doubling its p99 (the same code measured 0.82x in the
    slot after KServe's). Idle: no whole clock tick (10 ms) of CPU within a ``window``.
    """
    deadline = time.monotonic() + limit
    before = cpu_ticks(pid)
    while time.monotonic() < deadline:
        time.sleep(window)
        now = cpu_ticks(pid)
        if now == before:
            return
        before = now


def measure(
    targets: Sequence[Target],
    concurrency: Sequence[int],
    slices: int,
    model_dir: Path,
    cores: tuple[int, int],
    script: Path,
) -> tuple[dict[int, float], dict[str, dict[int, Point]]]:
    """One round: the forward limit, then every target at every concurrency in 1 s slices taken in
    turn (so a burst of the machine's other load hits all servers alike, not one point)."""
    load_core, server_core = cores
    rates = forward_rates(model_dir, server_core)
    results: dict[str, dict[int, Point]] = {target.name: {} for target in targets}
    for clients in concurrency:
        for target in targets:  # warm-up at this concurrency, not kept
            drive(target.url, INFER, target.bodies, clients, 1.0, load_core, script)
            settle(target.pid)
        taken: dict[str, list[Point]] = {target.name: [] for target in targets}
        for _ in range(slices):
            for target in targets:
                taken[target.name].append(drive(target.url, INFER, target.bodies, clients, 1.0, load_core, script))
                settle(target.pid)
        for target in targets:
            point = results[target.name][clients] = median_point(taken[target.name])
            print(f"  {target.name:<22} {clients:>3} clients: {point.per_second:>6.0f} req/s "
                  f"p50 {point.p50_ms:6.2f} ms p99 {point.p99_ms:7.2f} ms errors {point.errors}",
                  file=sys.stderr, flush=True)  # fmt: skip
    return rates, results


def table(results: dict[str, dict[int, Point]], concurrency: Sequence[int]) -> str:
    names = list(results)
    header = f"{'clients':>7} | " + " | ".join(f"{name:>30}" for name in names)
    sub = f"{'':>7} | " + " | ".join(f"{'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'err':>4}" for _ in names)
    lines = [header, sub, "-" * len(header)]
    for clients in concurrency:
        cells = [results[name][clients] for name in names]
        lines.append(
            f"{clients:>7} | "
            + " | ".join(f"{p.per_second:>8.0f} {p.p50_ms:>7.2f} {p.p99_ms:>7.2f} {p.errors:>4}" for p in cells)
        )
    return "\n".join(lines)


def targets_met(results: dict[str, dict[int, Point]], forward_32: float) -> list[str]:
    """The issue's targets for one round, each with its numbers and whether it was met."""
    b, u, k, binary = (results[n] for n in ("aidc batched", "aidc unbatched", "KServe", "aidc batched binary"))
    checks = [
        ("1 client: batched p50 <= 1.2x unbatched p50", b[1].p50_ms / u[1].p50_ms, b[1].p50_ms <= 1.2 * u[1].p50_ms),
        ("1 client: batched req/s >= KServe req/s", b[1].per_second / k[1].per_second,
         b[1].per_second >= k[1].per_second),
        ("64 clients: batched req/s >= 3x KServe", b[64].per_second / k[64].per_second,
         b[64].per_second >= 3 * k[64].per_second),
        ("64 clients: batched p99 <= 0.5x KServe p99", b[64].p99_ms / k[64].p99_ms, b[64].p99_ms <= 0.5 * k[64].p99_ms),
        ("64 clients: JSON req/s >= 0.5x forward@32", b[64].per_second / forward_32,
         b[64].per_second >= 0.5 * forward_32),
        ("64 clients: binary req/s > JSON req/s", binary[64].per_second / b[64].per_second,
         binary[64].per_second > b[64].per_second),
    ]  # fmt: skip
    return [f"  {'met' if ok else 'MISSED':<6} {name} (ratio {ratio:.2f})" for name, ratio, ok in checks]


def parse_arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--model-dir", type=Path, help="an exported classifier (default: train one now)")
    parser.add_argument("--slices", type=int, default=5, help="1 s slices per point, taken in turn with the others")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--before", help="also measure aidc's server at this git revision (batched, JSON)")
    parser.add_argument("--profile", type=Path, help="py-spy the aidc servers at 64 clients into this folder")
    parser.add_argument("--kserve-venv", type=Path, default=REPO / ".cache" / "bench-kserve-venv")
    arguments = parser.parse_args(argv)
    if 1 not in arguments.concurrency or 64 not in arguments.concurrency:
        parser.error("--concurrency must include 1 and 64 (the targets are read there)")
    return arguments


def knows_workers(source: Path) -> bool:
    """Whether the server at ``source`` has ``--workers``: where it has, leaving the flag out runs
    one process per CPU, two on this machine, sharing the one pinned core (a handicap that read as
    10-15 % fewer requests and about twice the p99 at 64 clients before it was passed)."""
    settings = source / "aidc_trainer" / "serving" / "settings.py"
    return settings.exists() and '"--workers"' in settings.read_text()


def main(argv: Sequence[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    cpus = sorted(os.sched_getaffinity(0))
    load_core, server_core = cpus[0], cpus[-1]  # wrk on the first core, every server on the last
    batched, unbatched = Mode("batched", 32, 5.0), Mode("unbatched", 1, 0.0)
    with tempfile.TemporaryDirectory(prefix="aidc-bench-server-") as scratch_name, contextlib.ExitStack() as stack:
        scratch = Path(scratch_name)
        model_dir = arguments.model_dir or train(scratch / "train")
        pictures = images(16)
        plain = write_bodies(scratch / "json", [json_body(p) for p in pictures], None)
        header = binary_header()
        binary = write_bodies(scratch / "binary", [header + p.astype("<f4").tobytes() for p in pictures], len(header))
        targets = []
        for mode in (batched, unbatched):
            log = scratch / f"{mode.name}.log"
            url, pid = stack.enter_context(aidc_server(model_dir, mode, 1, log, core=server_core))
            targets.append(Target(f"aidc {mode.name}", url, plain, pid))
            if mode is batched:
                targets.append(Target("aidc batched binary", url, binary, pid))
        kserve_log = scratch / "kserve.log"
        url, pid = stack.enter_context(kserve_server(model_dir, kserve_log, server_core, arguments.kserve_venv))
        targets.append(Target("KServe", url, plain, pid))
        if arguments.before:
            source = before_source(arguments.before, REPO / ".cache" / "bench-before")
            log = scratch / "before.log"
            workers = 1 if knows_workers(source) else None
            context = aidc_server(model_dir, batched, 1, log, source=source, core=server_core, workers=workers)
            url, pid = stack.enter_context(context)
            targets.append(Target(f"aidc {arguments.before} batched", url, plain, pid))
        script = scratch / "load.lua"
        cores = (load_core, server_core)
        rounds = [
            measure(targets, arguments.concurrency, arguments.slices, model_dir, cores, script)
            for _ in range(arguments.rounds)
        ]
        if arguments.profile:
            profile_servers(targets, arguments.profile, 5.0, load_core, script)
    report(arguments, rounds, server_core, load_core)
    return 0


def profile_servers(targets: Sequence[Target], folder: Path, duration: float, core: int, script: Path) -> None:
    """Where each aidc server's CPU goes at 64 clients (py-spy on the load's core), after the measuring."""
    folder.mkdir(parents=True, exist_ok=True)
    for target in targets:
        if not target.name.startswith("aidc") or "unbatched" in target.name:
            continue
        raw = folder / (target.name.replace(" ", "-") + ".txt")
        with profiled(target.pid, raw, duration, core):
            drive(target.url, INFER, target.bodies, 64, duration, core, script)
        shares = summarize(raw)
        print(f"profile of {target.name} at 64 clients ({raw}):")
        for category, share in shares.items():
            print(f"  {share:6.1%} {category}")


def report(
    arguments: argparse.Namespace,
    rounds: Sequence[tuple[dict[int, float], dict[str, dict[int, Point]]]],
    server_core: int,
    load_core: int,
) -> None:
    print(
        f"digits classifier (1x28x28 FP32, one image per OIP v2 request); {os.cpu_count()} cores, "
        f"Python {platform.python_version()}; every server 1 process, 1 torch thread, pinned to core {server_core}; "
        f"wrk (1 thread, closed loop) pinned to core {load_core}; a point = {arguments.slices} slices of 1 s taken in "
        f"turn with the other servers (req/s over all slices, p50/p99 the median slice's); KServe {KSERVE_VERSION} "
        f"ModelServer (FastAPI/uvicorn, 1 worker); aidc batched: maxBatchSize 32, maxDelayMs 5; binary: the binary "
        f"tensor data extension both ways"
    )
    for index, (rates, results) in enumerate(rounds, start=1):
        print(f"\nround {index}; bare forward pass on the servers' core, 1 thread: " + ", ".join(
            f"batch {batch}: {rate:,.0f} images/s" for batch, rate in rates.items()))  # fmt: skip
        print(table(results, arguments.concurrency))
        print("targets:")
        print("\n".join(targets_met(results, rates[32])))


if __name__ == "__main__":
    raise SystemExit(main())
