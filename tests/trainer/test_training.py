"""The trainer end to end: accuracy on digits with two ranks, and bad input that must end with a
permanent exit code and one clear line (real processes, gloo on CPU)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from aidc_trainer import contract
from tests.trainer.gang import run

pytestmark = pytest.mark.trainer


def manifest(checkpoint_dir: Path, where: str = contract.EXPORT_FINAL) -> dict[str, Any]:
    return json.loads((checkpoint_dir / where / contract.MODEL_MANIFEST).read_text())  # type: ignore[no-any-return]


def test_digits_classifier_reaches_95_percent_on_two_ranks(tmp_path: Path) -> None:
    """The original design's CNN on scikit-learn digits, two ranks started by torchrun inside one pod."""
    config = {"task": "classifier", "dataset": {"source": "digits"}, "epochs": 8, "batchSize": 16}
    started = time.monotonic()
    codes, gang = run(tmp_path, config, world_size=2, checkpoint_dir=tmp_path / "ckpt", torchrun_in_pod=True)
    elapsed = time.monotonic() - started
    assert codes == [0], gang.report()
    final = manifest(tmp_path / "ckpt")
    accuracy = final["metrics"]["validationAccuracy"]
    print(f"digits: validation accuracy {accuracy:.4f} in {elapsed:.1f}s (2 gloo ranks, wall clock with start-up)")
    assert accuracy >= 0.95
    assert final["step"] == 360  # 1438 examples / 2 ranks / 16 per batch = 45 steps x 8 epochs
    assert manifest(tmp_path / "ckpt", contract.EXPORT_BEST)["metrics"]["validationAccuracy"] >= accuracy
    summary = gang.leader.termination()
    assert summary["exitCode"] == 0
    assert summary["model"] == contract.EXPORT_FINAL


@pytest.mark.parametrize(
    ("config", "code", "message"),
    [
        ({"task": "regression"}, contract.EXIT_CONFIG_ERROR, "task must be one of"),
        ({"task": "classifier", "batchsize": 8}, contract.EXIT_CONFIG_ERROR, "unknown key batchsize"),
        (
            {"task": "classifier", "dataset": {"source": "npz", "path": "missing.npz"}},
            contract.EXIT_DATA_ERROR,
            "missing.npz does not exist",
        ),
    ],
    ids=["unknown-task", "unknown-key", "missing-dataset"],
)
def test_bad_input_exits_with_a_permanent_code_and_one_line(
    config: dict[str, Any], code: int, message: str, tmp_path: Path
) -> None:
    codes, gang = run(tmp_path, config, env={"AIDC_DATA_DIR": str(tmp_path)})
    assert codes == [code]
    errors = [json.loads(line) for line in gang.leader.stderr.splitlines() if line.startswith("{")]
    errors = [entry for entry in errors if entry["level"] == "error"]
    assert len(errors) == 1 and message in errors[0]["message"] and "\n" not in errors[0]["message"]
    summary = gang.leader.termination()
    assert summary["exitCode"] == code and message in summary["message"]
    assert "Traceback" not in gang.leader.stderr


def test_wrong_data_shape_exits_65(tmp_path: Path) -> None:
    import numpy as np

    np.savez(tmp_path / "flat.npz", x=np.zeros((40, 784), dtype=np.uint8), y=np.zeros(40, dtype=np.int64))
    config = {"task": "classifier", "dataset": {"source": "npz", "path": "flat.npz"}}
    codes, gang = run(tmp_path, config, env={"AIDC_DATA_DIR": str(tmp_path)})
    assert codes == [contract.EXIT_DATA_ERROR]
    assert "must have shape" in gang.leader.termination()["message"]
