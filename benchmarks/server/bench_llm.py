"""Language-model serving benchmark: the OpenAI routes (KV cache, continuous batching) against a naive
one-request-at-a-time generator, on the same model and prompts.

Trains the built-in language model (the trainer's defaults: 4 blocks, 4 heads, 256 wide, context 128,
byte tokens) for a few steps with the real trainer, or takes ``--model-dir``. The server is
``python -m aidc_trainer.serving`` as a subprocess, driven over real HTTP by closed-loop streaming
clients (``POST /v1/completions``, ``stream: true``): each of N streams sends its next request as soon
as the previous one ended. The baseline is what serving without an engine does: one request at a
time, each generated greedily by a full forward over the whole sequence per token (the v2 route's
loop), in this process (no HTTP, which favours it), with the same closed-loop streams queueing for it.

Per concurrency: aggregate generated tokens/s, time to first token (p50, p99: queueing included) and
time per output token after the first (p50, p99 over requests). Measures, asserts nothing.

    python benchmarks/server/bench_llm.py [--duration 8] [--concurrency 1 8 32] [--max-tokens 32]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_server import Mode, environment, server

MODEL = "digits"  # bench_server's server() names the model so
PROMPTS = [
    "The data center trains models and ",
    "A gang of pods resumes from its ",
    "Checkpoints are written atomically so ",
    "The operator watches two resources: ",
    "Continuous batching lets a short request ",
    "Every rank steps its own environments ",
    "An InferenceService serves a model ",
    "The scheduler binds the gang when ",
]


@dataclass
class Requests:
    """What the streams saw: one entry per finished request."""

    ttft: list[float] = field(default_factory=list)
    per_token: list[float] = field(default_factory=list)
    tokens: int = 0
    errors: int = 0


@dataclass(frozen=True)
class Point:
    tokens_per_second: float
    ttft_p50: float
    ttft_p99: float
    tpot_p50: float
    tpot_p99: float
    requests: int
    errors: int


def point(seen: Requests, seconds: float) -> Point:
    ttft, tpot = np.array(seen.ttft or [np.nan]), np.array(seen.per_token or [np.nan])
    return Point(
        tokens_per_second=seen.tokens / seconds,
        ttft_p50=float(np.percentile(ttft, 50)),
        ttft_p99=float(np.percentile(ttft, 99)),
        tpot_p50=float(np.percentile(tpot, 50)),
        tpot_p99=float(np.percentile(tpot, 99)),
        requests=len(seen.ttft),
        errors=seen.errors,
    )


def train(directory: Path) -> Path:
    """The built-in language model after a few steps of the real trainer, exported."""
    config = {"task": "language-model", "epochs": 1, "maxSteps": 5}
    env = {**environment(2), "AIDC_TRAINER_CONFIG": json.dumps(config), "AIDC_CHECKPOINT_DIR": str(directory)}
    subprocess.run([sys.executable, "-m", "aidc_trainer"], env=env, check=True, capture_output=True, timeout=900)
    return directory / "export" / "final"


# --- the server ---------------------------------------------------------------------------------


async def _one_stream(session: aiohttp.ClientSession, prompt: str, max_tokens: int, seen: Requests) -> None:
    body = {"model": MODEL, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "stream": True}
    started = time.perf_counter()
    first = last = None
    tokens = 0
    async with session.post("/v1/completions", json=body) as response:
        if response.status != 200:
            await response.read()
            seen.errors += 1
            return
        async for raw in response.content:
            line = raw.decode().strip()
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line.removeprefix("data: "))
            if chunk.get("usage"):
                tokens = int(chunk["usage"]["completion_tokens"])
            elif chunk["choices"] and chunk["choices"][0]["text"]:
                last = time.perf_counter()
                first = first or last
    if first is None or last is None:
        seen.errors += 1
        return
    seen.ttft.append(first - started)
    seen.tokens += tokens
    if tokens > 1:
        seen.per_token.append((last - first) / (tokens - 1))


async def drive_server(url: str, concurrency: int, duration: float, max_tokens: int) -> Point:
    seen = Requests()
    async with aiohttp.ClientSession(url, connector=aiohttp.TCPConnector(limit=0)) as session:

        async def stream(index: int, until: float, record: Requests) -> None:
            sent = index
            while time.perf_counter() < until:
                await _one_stream(session, PROMPTS[sent % len(PROMPTS)], max_tokens, record)
                sent += concurrency

        await asyncio.gather(*(stream(i, time.perf_counter() + 1.0, Requests()) for i in range(concurrency)))
        started = time.perf_counter()
        await asyncio.gather(*(stream(i, started + duration, seen) for i in range(concurrency)))
        elapsed = time.perf_counter() - started
    return point(seen, elapsed)


# --- the baseline -------------------------------------------------------------------------------


def load_module(model_dir: Path) -> torch.nn.Module:
    from aidc_trainer.export import load_exported

    module, _ = load_exported(model_dir, "cpu")
    return module


@torch.no_grad()
def naive_generate(module: torch.nn.Module, prompt: list[int], max_tokens: int) -> list[float]:
    """Greedy, a full forward over the whole sequence per token; the time each token was out."""
    sequence, times = list(prompt), []
    for _ in range(max_tokens):
        logits = module(torch.tensor([sequence]))[0, -1]
        sequence.append(int(logits.argmax()))
        times.append(time.perf_counter())
    return times


def drive_baseline(module: torch.nn.Module, concurrency: int, duration: float, max_tokens: int) -> Point:
    """``concurrency`` closed-loop streams queueing for one generator that serves them in turn."""
    prompts = [list(p.encode()) for p in PROMPTS]
    naive_generate(module, prompts[0], 2)  # warm-up
    queue = collections.deque((i, time.perf_counter()) for i in range(concurrency))
    sent = list(range(concurrency))
    seen = Requests()
    started = time.perf_counter()
    while time.perf_counter() < started + duration:
        client, submitted = queue.popleft()
        times = naive_generate(module, prompts[sent[client] % len(prompts)], max_tokens)
        seen.ttft.append(times[0] - submitted)
        seen.per_token.append((times[-1] - times[0]) / (len(times) - 1))
        seen.tokens += len(times)
        sent[client] += concurrency
        queue.append((client, time.perf_counter()))
    return point(seen, time.perf_counter() - started)


# --- the table ----------------------------------------------------------------------------------


def table(concurrencies: Sequence[int], engine: dict[int, Point], naive: dict[int, Point]) -> str:
    header = (
        f"{'streams':>7} | {'server tok/s':>12} {'TTFT p50':>8} {'p99':>7} {'TPOT p50':>8} {'p99':>7} | "
        f"{'naive tok/s':>11} {'TTFT p50':>8} {'p99':>7} {'TPOT p50':>8} {'p99':>7} | {'tok/s x':>7}"
    )
    lines = [header, "-" * len(header)]
    for c in concurrencies:
        s, n = engine[c], naive[c]
        lines.append(
            f"{c:>7} | {s.tokens_per_second:>12.0f} {s.ttft_p50 * 1000:>6.0f}ms {s.ttft_p99 * 1000:>5.0f}ms "
            f"{s.tpot_p50 * 1000:>6.1f}ms {s.tpot_p99 * 1000:>5.1f}ms | "
            f"{n.tokens_per_second:>11.0f} {n.ttft_p50 * 1000:>6.0f}ms {n.ttft_p99 * 1000:>5.0f}ms "
            f"{n.tpot_p50 * 1000:>6.1f}ms {n.tpot_p99 * 1000:>5.1f}ms | "
            f"{s.tokens_per_second / n.tokens_per_second:>7.2f}"
        )
    requests = sum(p.requests for p in engine.values()), sum(p.requests for p in naive.values())
    errors = sum(p.errors for p in engine.values())
    lines.append(f"requests measured: server {requests[0]}, naive {requests[1]}; server errors: {errors}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--model-dir", type=Path, help="an exported built-in language model (default: train one)")
    parser.add_argument("--duration", type=float, default=8.0, help="seconds measured per point")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads, both sides")
    arguments = parser.parse_args(argv)
    torch.set_num_threads(arguments.threads)
    with tempfile.TemporaryDirectory(prefix="aidc-bench-llm-") as scratch:
        model_dir = arguments.model_dir or train(Path(scratch) / "train")
        with server(model_dir, Mode("engine", 1, 0.0), arguments.threads, Path(scratch) / "server.log") as url:
            engine = {
                c: asyncio.run(drive_server(url, c, arguments.duration, arguments.max_tokens))
                for c in arguments.concurrency
            }
        module = load_module(model_dir)
        naive = {c: drive_baseline(module, c, arguments.duration, arguments.max_tokens) for c in arguments.concurrency}
    print(
        f"aidc model server, OpenAI /v1/completions streaming, built-in language model (4 blocks, 256 wide, "
        f"context 128, byte tokens), greedy, {arguments.max_tokens} tokens per request, CPU, "
        f"{arguments.threads} torch thread(s), {os.cpu_count()} cores, Python {platform.python_version()}"
    )
    print(
        f"server: KV cache + continuous batching (16 slots), real HTTP, closed-loop streams; naive: one request at "
        f"a time, full forward per token, in-process; {arguments.duration:g} s per point; TTFT includes queueing; "
        "TPOT = time per output token after the first; 'x' = server / naive"
    )
    print(table(arguments.concurrency, engine, naive))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
