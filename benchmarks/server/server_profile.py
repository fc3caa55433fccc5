"""Where a server's CPU goes: py-spy samples of a running server, summed by what the code does.

py-spy reads the process from outside (no instrumentation in the server), only counting samples
where a thread is on the CPU. Each stack is charged to the first category found from its leaf
upwards, so ``np.asarray`` under ``protocol.decode_data`` counts as tensor decoding and the JSON
parser's own frames as JSON.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

# (category, substrings of a frame), tried on each frame from the leaf up; the first match wins
CATEGORIES = (
    ("forward pass (torch)", ("torch/", "classifier.py", "run_batch", "_run_batch")),
    ("JSON read/write", ("json/", "json_codec", "orjson", "json_response", "dumps", "loads")),
    ("tensor decode/encode (protocol)", ("protocol.py", "binary_tensors.py", "numpy/")),
    ("batcher", ("batcher.py",)),
    ("metrics", ("prometheus_client", "metrics.py")),
    ("HTTP (aiohttp)", ("aiohttp/", "multidict", "yarl/")),
    ("event loop (asyncio)", ("asyncio/", "selectors.py", "concurrent/futures", "threading.py")),
)


def _py_spy() -> str:
    found = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(found).exists():
        raise SystemExit("py-spy is missing: pip install py-spy")
    return found


@contextlib.contextmanager
def profiled(pid: int, raw: Path, seconds: float, core: int, rate: int = 200) -> Iterator[None]:
    """Sample ``pid`` and its threads for ``seconds`` into ``raw`` (collapsed stacks) while the body runs."""
    command = [
        "taskset", "-c", str(core), _py_spy(), "record", "--pid", str(pid), "--rate", str(rate),
        "--duration", str(max(1, int(seconds))), "--format", "raw", "--output", str(raw), "--nonblocking",
    ]  # fmt: skip
    sampler = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield
    finally:
        sampler.wait(timeout=seconds + 60)


def _category(frames: list[str]) -> str:
    for frame in reversed(frames):
        for category, needles in CATEGORIES:
            if any(needle in frame for needle in needles):
                return category
    return "other"


def summarize(raw: Path) -> dict[str, float]:
    """Share of on-CPU samples per category, largest first."""
    counts: Counter[str] = Counter()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            counts[_category(stack.split(";"))] += int(count)
    total = sum(counts.values()) or 1
    return {category: count / total for category, count in counts.most_common()}
