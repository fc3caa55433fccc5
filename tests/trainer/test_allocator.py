"""Freed memory stays with the process: repeated forward passes do not fault their pages in again.

Page faults are counted by the kernel (``getrusage``, ``/proc/<pid>/stat``), so these tests see
what the server pays, not what the code says it does.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from aidc_trainer import cli, contract
from aidc_trainer.environment import ENV_TERMINATION_LOG
from aidc_trainer.serving import server

pytestmark = pytest.mark.trainer

REPO = Path(__file__).resolve().parents[2]
# Like a forward pass in the inference thread: a few blocks of a few MB, all freed at the end.
PASSES = textwrap.dedent(
    """
    import resource, sys, threading
    import numpy as np
    if sys.argv[1] == "keep":
        from aidc_trainer.allocator import keep_freed_memory
        assert keep_freed_memory()
    def passes(result):
        for _ in range(3):  # glibc adjusts its own thresholds on the first frees
            [np.ones(3 << 20, dtype=np.uint8) for _ in range(4)]
        before = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
        for _ in range(20):
            [np.ones(3 << 20, dtype=np.uint8) for _ in range(4)]
        result.append((resource.getrusage(resource.RUSAGE_THREAD).ru_minflt - before) / 20)
    out = []
    thread = threading.Thread(target=passes, args=(out,))
    thread.start()
    thread.join()
    print(out[0])
    """
)


def faults_per_pass(mode: str) -> float:
    env = {**os.environ, "PYTHONPATH": str(REPO / "trainer-image")}
    result = subprocess.run(
        [sys.executable, "-c", PASSES, mode], env=env, capture_output=True, text=True, timeout=120, check=True
    )
    return float(result.stdout.strip())


def test_kept_memory_is_reused_without_page_faults() -> None:
    pages = (4 * (3 << 20)) // os.sysconf("SC_PAGE_SIZE")
    assert faults_per_pass("plain") > pages / 2  # glibc's defaults give the pages back every pass
    assert faults_per_pass("keep") < pages / 100


def test_a_server_process_keeps_freed_memory_before_it_serves(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker sets malloc up before the model loads (the supervisor of workers loads nothing)."""
    calls: list[str] = []

    async def serve(settings: object) -> int:
        calls.append("serve")
        return 0

    monkeypatch.setattr(server, "keep_freed_memory", lambda: calls.append("keep") or True)
    monkeypatch.setattr(server, "serve", serve)
    assert server.main(["--model-dir", str(tmp_path), "--port", "0", "--workers", "1"]) == 0
    assert calls == ["keep", "serve"]


def test_a_trainer_process_keeps_freed_memory_before_anything_else(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Even a run that ends at once on a missing config has set malloc up first."""
    calls: list[str] = []
    monkeypatch.setattr(cli, "keep_freed_memory", lambda: calls.append("keep") or True)
    monkeypatch.delenv(contract.ENV_TRAINER_CONFIG, raising=False)
    monkeypatch.setenv(ENV_TERMINATION_LOG, str(tmp_path / "termination-log"))
    assert cli.main([]) == contract.EXIT_CONFIG_ERROR
    assert calls == ["keep"]
