"""The closed-loop load of ``bench_server.py``: wrk (Debian's package) on a core of its own.

wrk is C: one thread drives every connection with an event loop, so the load generator costs the
servers almost nothing, and ``taskset`` keeps it off the servers' core. Each connection is one
client that sends its next request as soon as the answer arrives (closed loop). Bodies rotate
among a few pre-encoded images; a Lua ``done`` hook prints the counts and percentiles as one line.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

SCRIPT = """
local bodies, headers, path, next_body = {}, {}, "/", 0
function init(args)
  path = args[1]
  for i = 1, tonumber(args[3]) do
    local f = assert(io.open(args[2] .. "/" .. i .. ".body", "rb"))
    bodies[i] = f:read("*a")
    f:close()
  end
  headers["Content-Type"] = "application/json"
  if args[4] ~= "-" then
    headers["Content-Type"] = "application/octet-stream"
    headers["Inference-Header-Content-Length"] = args[4]
  end
end
function request()
  next_body = next_body % #bodies + 1
  return wrk.format("POST", path, headers, bodies[next_body])
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT %d %d %d %d %d\\n", summary.requests, summary.duration,
    e.connect + e.read + e.write + e.status + e.timeout, latency:percentile(50), latency:percentile(99)))
end
"""


@dataclass(frozen=True)
class Bodies:
    """Request bodies on disk for wrk, and the binary extension's JSON length (None: plain JSON)."""

    folder: Path
    count: int
    header_length: int | None


@dataclass(frozen=True)
class Point:
    """One measurement: a server at one concurrency."""

    requests: int
    errors: int
    seconds: float
    p50_ms: float
    p99_ms: float

    @property
    def per_second(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def write_bodies(folder: Path, bodies: Sequence[bytes], header_length: int | None) -> Bodies:
    folder.mkdir(parents=True, exist_ok=True)
    for index, body in enumerate(bodies, start=1):
        (folder / f"{index}.body").write_bytes(body)
    return Bodies(folder, len(bodies), header_length)


def wrk_binary() -> str:
    found = shutil.which("wrk")
    if found is None:
        raise SystemExit("wrk is missing: apt-get install wrk (make bench-server installs it)")
    return found


def drive(url: str, path: str, bodies: Bodies, clients: int, seconds: float, core: int, script: Path) -> Point:
    """Run wrk with ``clients`` connections for ``seconds`` on ``core``; parse its RESULT line."""
    if not script.exists():
        script.write_text(SCRIPT)
    length = "-" if bodies.header_length is None else str(bodies.header_length)
    whole_seconds = max(1, round(seconds))  # wrk takes whole seconds
    command = [
        "taskset", "-c", str(core), wrk_binary(), "-t1", f"-c{clients}", f"-d{whole_seconds}s", "--timeout", "10s",
        "-s", str(script), url, "--", path, str(bodies.folder), str(bodies.count), length,
    ]  # fmt: skip
    finished = subprocess.run(command, capture_output=True, text=True, check=True, timeout=seconds + 60)
    line = next((line for line in finished.stdout.splitlines() if line.startswith("RESULT ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no result:\n{finished.stdout}\n{finished.stderr}")
    requests, micros, errors, p50, p99 = (int(field) for field in line.split()[1:])
    return Point(requests, errors, micros / 1e6, p50 / 1000, p99 / 1000)
