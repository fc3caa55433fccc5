"""Training steps read nothing back to the host outside checkpoint and report steps.

On a GPU each read of a tensor's value on the host (a loss's ``.item()``, a flag read back from an
all-reduce, an optimizer's step counter) drains the CUDA stream. The real trainer loop runs on two
gloo ranks with every such read counted (``aidc_trainer.step_reads``): the scalar reads, copies
and ``tolist``/``numpy`` reads the CPU makes are the ones a GPU would wait on. Evaluation, reports
and checkpoints may read; the steps between them must not.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.trainer.gang import base_environment, free_port

pytestmark = pytest.mark.trainer

WORKER = Path(__file__).with_name("step_reads_worker.py")


def run_counted(tmp_path: Path, task: str) -> list[dict[str, Any]]:
    out = tmp_path / "reads"
    port = str(free_port())
    processes = []
    for rank in range(2):
        env = base_environment(
            RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT=port, LOCAL_RANK="0"
        )
        command = [sys.executable, str(WORKER), str(out), str(tmp_path / "ckpt"), task]
        processes.append(subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
    outputs = [p.communicate(timeout=240)[0].decode(errors="replace") for p in processes]
    assert [p.returncode for p in processes] == [0, 0], "\n".join(outputs)[-4000:]
    return [json.loads(Path(f"{out}.rank{rank}.json").read_text()) for rank in range(2)]


@pytest.mark.parametrize("task", ["classifier", "language-model"])
def test_no_host_reads_between_checkpoint_and_report_steps(task: str, tmp_path: Path) -> None:
    ranks = run_counted(tmp_path, task)
    for rank, report in enumerate(ranks):
        assert report["steps"] == list(range(1, report["finalStep"] + 1))
        assert report["checkpointSteps"][:2] == [10, 20]
        ordinary = report["ordinary"]
        assert len(ordinary) >= 10, f"rank {rank}: too few ordinary steps to mean anything"
        reading = {step: count for step, count in ordinary.items() if count}
        assert not reading, f"rank {rank} read tensors back to the host at these steps: {reading}"
        # the counter sees reads: validation reads its sums, and the agreed flags are read (from host
        # memory) at each exchange; the exchanges are spaced, so fewer than the steps
        assert report["outsideSteps"] > 0
        assert 0 < report["agreement"] < len(report["steps"])
