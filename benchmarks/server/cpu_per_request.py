"""CPU time per answered request: aidc's server now against itself at a git revision, same load.

Throughput on a shared core moves with whatever else the machine does; the CPU a server spends per
request, counted by the kernel (``/proc/<pid>/stat``: utime + stime), moves much less. Both servers
run batched (32 rows, 5 ms), one process and one torch thread each on the last core, with wrk on
the first; they take turns in 3 s drives at one concurrency, each followed by ``settle``.

    python benchmarks/server/cpu_per_request.py --before 2f5c168 [--clients 64] [--drives 5]

Prints both servers' req/s, CPU us per request and p99 per drive, and the medians. Asserts nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
from pathlib import Path

from bench_server import INFER, REPO, Mode, aidc_server, before_source, cpu_ticks, images, json_body, settle, train
from wrk_load import drive, write_bodies

TICK_US = 10_000  # USER_HZ is 100 on Linux


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--before", required=True, help="the git revision to compare with")
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--drives", type=int, default=5)
    parser.add_argument("--model-dir", type=Path, help="an exported classifier (default: train one now)")
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="aidc-cpu-per-request-") as name, contextlib.ExitStack() as stack:
        scratch = Path(name)
        model_dir = arguments.model_dir or train(scratch / "train")
        bodies = write_bodies(scratch / "json", [json_body(p) for p in images(16)], None)
        script, mode = scratch / "load.lua", Mode("batched", 32, 5.0)
        sources = {
            "now": REPO / "trainer-image",
            arguments.before: before_source(arguments.before, REPO / ".cache" / "bench-before"),
        }
        servers = {
            label: stack.enter_context(aidc_server(model_dir, mode, 1, scratch / f"{i}.log", source=source, core=1))
            for i, (label, source) in enumerate(sources.items())
        }
        for url, pid in servers.values():  # warm-up, not kept
            drive(url, INFER, bodies, arguments.clients, 3.0, 0, script)
            settle(pid)
        seen: dict[str, list[tuple[float, float, float]]] = {label: [] for label in servers}
        for _ in range(arguments.drives):
            for label, (url, pid) in servers.items():
                before = cpu_ticks(pid)
                point = drive(url, INFER, bodies, arguments.clients, 3.0, 0, script)
                settle(pid)
                cpu = (cpu_ticks(pid) - before) * TICK_US / max(point.requests, 1)
                seen[label].append((point.per_second, cpu, point.p99_ms))
        for label, drives in seen.items():
            median = statistics.median(d[1] for d in drives)
            print(
                f"{label:>10} at {arguments.clients} clients: req/s {[round(d[0]) for d in drives]}, "
                f"CPU us/request {[round(d[1]) for d in drives]} (median {median:.0f}), "
                f"p99 ms {[round(d[2], 1) for d in drives]}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
