"""Two real processes over gloo: DDP keeps every rank's weights identical, and the collective
helpers (checkpoint broadcast, stop agreement) deliver the same answer to every rank."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.trainer.gang import base_environment, free_port

pytestmark = pytest.mark.trainer

WORKER = Path(__file__).with_name("ddp_worker.py")


@pytest.fixture(scope="module")
def gang_results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Run ``ddp_worker.py`` as a gang of two and return what rank 0 gathered."""
    out = tmp_path_factory.mktemp("ddp") / "results.json"
    port = str(free_port())
    processes = []
    for rank in range(2):
        env = base_environment(
            RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT=port, LOCAL_RANK="0"
        )
        processes.append(
            subprocess.Popen(
                [sys.executable, str(WORKER), str(out)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
            )
        )
    outputs = [p.communicate(timeout=240)[0].decode(errors="replace") for p in processes]
    assert [p.returncode for p in processes] == [0, 0], "\n".join(outputs)[-4000:]
    return json.loads(out.read_text())  # type: ignore[no-any-return]


@pytest.mark.parametrize("task", ["classifier", "gan", "language-model"])
def test_weights_stay_identical_across_ranks(task: str, gang_results: dict[str, Any]) -> None:
    digests = gang_results[task]
    assert len(digests) == 2
    assert digests[0]["after"] != digests[0]["before"], "training changed nothing"
    assert digests[0]["before"] == digests[1]["before"], "ranks started from different weights"
    assert digests[0]["after"] == digests[1]["after"], "ranks drifted apart"


def test_ranks_drift_without_gradient_sync(gang_results: dict[str, Any]) -> None:
    """The control for the test above: the digest comparison does see a difference."""
    digests = gang_results["classifier-unsynced"]
    assert digests[0]["before"] == digests[1]["before"]
    assert digests[0]["after"] != digests[1]["after"]


def test_broadcast_state_and_step_agreement(gang_results: dict[str, Any]) -> None:
    result = gang_results["collectives"]
    summaries = [rank["summary"] for rank in result["ranks"]]
    assert summaries[0] == summaries[1]
    received = summaries[1]
    assert received["weights"] == [[0.0, 1.0, 2.0, 3.0], [4.0, 5.0, 6.0, 7.0], [8.0, 9.0, 10.0, 11.0]]
    assert received["half"] == [1.5, -2.25]
    assert received["halfDtype"] == "torch.bfloat16"
    assert received["mask"] == [True, False, True]
    assert (received["count"], received["countShape"]) == (7, [])
    assert received["nestedTuple"] == ["text", 3, None, 2.5]
    assert received["rngDigest"] == result["leaderRngDigest"]
    # flags offered at step 3 by rank 1 only are read by both ranks at the same step, and only then:
    # step 4 when exchanging every step; step 10 when exchanges are 4 steps apart (at 1, 2, 6, 10)
    every_step = [[0, 0]] * 3 + [[1, 0]] + [[0, 0]] * 3
    spaced = [[0, 0]] * 9 + [[1, 0]] + [[0, 0]] * 3
    assert [rank["flags"]["everyStep"] for rank in result["ranks"]] == [every_step, every_step]
    assert [rank["flags"]["spaced"] for rank in result["ranks"]] == [spaced, spaced]
