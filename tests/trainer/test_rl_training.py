"""The reinforcement-learning task trained by real gloo gangs: it learns, it resumes exactly.

The reference run keeps a checkpoint every two PPO iterations and logs every iteration's losses
and episodic return (``AIDC_LOSS_LOG``); a run resumed from one of its checkpoints, and one
stopped by SIGTERM and restarted, must log the same numbers to the last bit (CPU): same policy,
optimizer, schedule, every rank's RNG, every environment mid-episode and the returns window.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import pytest

from aidc_trainer import contract
from aidc_trainer.checkpoint import checkpoint_name, read_latest_name
from tests.trainer.gang import launch, read_losses, run, wait_until
from tests.trainer.test_resume import Reference, reference_run

pytestmark = pytest.mark.trainer

# 2 ranks x 2 envs x 32 steps = 128 environment steps per iteration; 30 iterations (long enough
# for a SIGTERM to land mid-run)
SMALL_PPO: dict[str, Any] = {
    "task": "reinforcement-learning",
    "seed": 5,
    "reinforcementLearning": {
        "environment": {"gymnasiumId": "CartPole-v1"},
        "totalSteps": 3840,
        "envsPerRank": 2,
        "rolloutSteps": 32,
        "evaluationEpisodes": 2,
        "ppo": {"minibatches": 2, "epochs": 2},
    },
}
PER_ITERATION = 128
EVERY_TWO = {"AIDC_CHECKPOINT_EVERY_STEPS": str(2 * PER_ITERATION), "AIDC_CHECKPOINT_KEEP": "1000"}


@pytest.fixture(scope="module")
def ppo_reference(tmp_path_factory: pytest.TempPathFactory) -> Reference:
    return reference_run(tmp_path_factory, SMALL_PPO, EVERY_TWO)


def _manifest(directory: Path) -> dict[str, Any]:
    return json.loads((directory / contract.EXPORT_FINAL / contract.MODEL_MANIFEST).read_text())  # type: ignore[no-any-return]


def test_resume_repeats_losses_and_returns_bit_for_bit(ppo_reference: Reference, tmp_path: Path) -> None:
    steps = sorted(ppo_reference.losses)
    assert steps == [PER_ITERATION * i for i in range(1, 31)]
    assert {"loss", "policyLoss", "valueLoss", "entropy", "episodicReturn"} <= set(ppo_reference.losses[steps[-1]])
    resume_at = 6 * PER_ITERATION
    directory = ppo_reference.copy_until(resume_at, tmp_path / "ckpt")
    codes, gang = run(
        tmp_path, SMALL_PPO, world_size=2, checkpoint_dir=directory, loss_log=tmp_path / "losses.jsonl", env=EVERY_TWO
    )
    assert codes == [0, 0], gang.report()
    resumed = read_losses(tmp_path / "losses.jsonl")
    assert sorted(resumed) == steps[6:]
    assert resumed == {step: ppo_reference.losses[step] for step in resumed}
    # the evaluation and the last iteration's metrics are the same too (all but the clock's)
    resumed_metrics, reference_metrics = (_manifest(d)["metrics"] for d in (directory, ppo_reference.directory))
    assert resumed_metrics.pop("stepsPerSecond") > 0 and reference_metrics.pop("stepsPerSecond") > 0
    assert resumed_metrics == reference_metrics


def test_sigterm_checkpoints_and_the_restart_continues_exactly(ppo_reference: Reference, tmp_path: Path) -> None:
    directory = tmp_path / "ckpt"
    gang = launch(
        tmp_path, SMALL_PPO, world_size=2, checkpoint_dir=directory, loss_log=tmp_path / "evicted.jsonl", name="evicted"
    )
    wait_until(lambda: len(read_losses(tmp_path / "evicted.jsonl")) >= 2 or gang.leader.process.poll() is not None)
    gang.signal(1, signal.SIGTERM)
    codes = gang.wait()
    assert codes == [contract.EXIT_PREEMPTED, contract.EXIT_PREEMPTED], gang.report()
    stopped_at = max(read_losses(tmp_path / "evicted.jsonl"))
    assert stopped_at < max(ppo_reference.losses)
    assert read_latest_name(directory) == checkpoint_name(stopped_at)
    summary = gang.leader.termination()
    assert (summary["exitCode"], summary["reason"], summary["step"]) == (143, "Preempted", stopped_at)

    codes, gang = run(
        tmp_path,
        SMALL_PPO,
        world_size=2,
        checkpoint_dir=directory,
        loss_log=tmp_path / "restarted.jsonl",
        name="restarted",
    )
    assert codes == [0, 0], gang.report()
    resumed = read_losses(tmp_path / "restarted.jsonl")
    assert min(resumed) == stopped_at + PER_ITERATION and max(resumed) == max(ppo_reference.losses)
    assert resumed == {step: ppo_reference.losses[step] for step in resumed}


def test_two_ranks_learn_cartpole(tmp_path: Path) -> None:
    """A few thousand steps: a random policy's episodes last ~22 steps; learning lengthens them."""
    config = {
        "task": "reinforcement-learning",
        "seed": 1,
        "learningRate": 1e-3,
        "reinforcementLearning": {"totalSteps": 8192, "envsPerRank": 4, "rolloutSteps": 128, "evaluationEpisodes": 4},
    }
    codes, gang = run(
        tmp_path, config, world_size=2, checkpoint_dir=tmp_path / "ckpt", loss_log=tmp_path / "losses.jsonl"
    )
    assert codes == [0, 0], gang.report()
    losses = read_losses(tmp_path / "losses.jsonl")
    assert sorted(losses) == [1024 * i for i in range(1, 9)]
    first, last = float(losses[1024]["episodicReturn"]), float(losses[8192]["episodicReturn"])
    metrics = _manifest(tmp_path / "ckpt")["metrics"]
    assert last > 1.5 * first, (first, last)
    assert metrics["evaluationReturn"] > 2 * first, metrics
    summary = gang.leader.termination()
    assert (summary["step"], summary["totalSteps"]) == (8192, 8192)
    assert summary["metrics"]["evaluationReturn"] == metrics["evaluationReturn"]
