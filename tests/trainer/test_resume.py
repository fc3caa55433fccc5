"""Checkpoints that resume exactly: real gangs of two gloo ranks, real files, real signals.

Each task trains once undisturbed (a module-scoped reference run that keeps every checkpoint and
logs every step's loss). The tests then resume from one of its mid-epoch checkpoints, from behind
a torn checkpoint, and after SIGTERM, and compare the steps after the resume with the reference
to the last bit: same model, optimizer, schedule, sampler position and every rank's RNG.
"""

from __future__ import annotations

import json
import shutil
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

from aidc_trainer import contract
from aidc_trainer.checkpoint import checkpoint_name, list_checkpoints, read_latest_name
from aidc_trainer.export import load_exported
from tests.trainer.gang import launch, read_losses, run, wait_until

pytestmark = pytest.mark.trainer

# 2 ranks: 409 synthetic training examples -> 205 per rank -> 13 batches of 16 -> 13 steps per epoch
SMALL_CLASSIFIER: dict[str, Any] = {
    "task": "classifier",
    "dataset": {"source": "synthetic", "samples": 512},
    "epochs": 3,
    "batchSize": 16,
    "seed": 7,
}
# the GAN draws its noise from each rank's own generator: exactness needs every rank's RNG state
SMALL_GAN: dict[str, Any] = {**SMALL_CLASSIFIER, "task": "gan", "epochs": 2}
# 205 windows -> 103 per rank -> 13 batches of 8 -> 6 steps of 2 micro-batches per epoch; warm-up
# and cosine schedule, clipping: 72 steps, long enough for a signal to land mid-run
TINY_LM: dict[str, Any] = {
    "task": "language-model",
    "dataset": {"source": "synthetic", "samples": 256},
    "epochs": 12,
    "batchSize": 8,
    "gradientAccumulationSteps": 2,
    "gradientClipNorm": 1.0,
    "languageModel": {"contextLength": 32, "layers": 1, "heads": 2, "embedding": 32},
}
EVERY_STEPS = {"AIDC_CHECKPOINT_EVERY_STEPS": "5", "AIDC_CHECKPOINT_KEEP": "1000"}


@dataclass(frozen=True)
class Reference:
    config: dict[str, Any]
    directory: Path
    losses: dict[int, dict[str, str]]

    def copy_until(self, step: int, destination: Path) -> Path:
        """A checkpoint directory as an attempt that last saved at ``step`` would have left it."""
        destination.mkdir(parents=True)
        for saved, path in list_checkpoints(self.directory):
            if saved <= step:
                shutil.copy2(path, destination / path.name)
        (destination / contract.CHECKPOINT_LATEST_FILE).write_text(checkpoint_name(step) + "\n")
        return destination


def reference_run(factory: pytest.TempPathFactory, config: dict[str, Any], env: dict[str, str]) -> Reference:
    workdir = factory.mktemp(config["task"])
    codes, gang = run(
        workdir,
        config,
        world_size=2,
        checkpoint_dir=workdir / "ckpt",
        loss_log=workdir / "losses.jsonl",
        env=env,
        name="reference",
    )
    assert codes == [0, 0], gang.report()
    return Reference(config, workdir / "ckpt", read_losses(workdir / "losses.jsonl"))


@pytest.fixture(scope="module")
def classifier_reference(tmp_path_factory: pytest.TempPathFactory) -> Reference:
    return reference_run(tmp_path_factory, SMALL_CLASSIFIER, EVERY_STEPS)


@pytest.fixture(scope="module")
def gan_reference(tmp_path_factory: pytest.TempPathFactory) -> Reference:
    return reference_run(tmp_path_factory, SMALL_GAN, EVERY_STEPS)


@pytest.fixture(scope="module")
def lm_reference(tmp_path_factory: pytest.TempPathFactory) -> Reference:
    return reference_run(tmp_path_factory, TINY_LM, {})


def manifest(directory: Path) -> dict[str, Any]:
    return json.loads((directory / contract.EXPORT_FINAL / contract.MODEL_MANIFEST).read_text())  # type: ignore[no-any-return]


@pytest.mark.parametrize("task", ["classifier", "gan"])
def test_resume_mid_epoch_repeats_the_reference_bit_for_bit(
    task: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    reference: Reference = request.getfixturevalue(f"{task}_reference")
    assert sorted(reference.losses) == list(range(1, max(reference.losses) + 1))
    resume_at = 20  # 13 steps per epoch: 7 batches into the second epoch
    directory = reference.copy_until(resume_at, tmp_path / "ckpt")
    codes, gang = run(
        tmp_path,
        reference.config,
        world_size=2,
        checkpoint_dir=directory,
        loss_log=tmp_path / "losses.jsonl",
        env=EVERY_STEPS,
    )
    assert codes == [0, 0], gang.report()
    resumed_line = next(json.loads(line) for line in gang.leader.stderr.splitlines() if "resumed from" in line)
    assert (resumed_line["step"], resumed_line["epoch"], resumed_line["consumed"]) == (resume_at, 1, 7)
    resumed = read_losses(tmp_path / "losses.jsonl")
    assert sorted(resumed) == list(range(resume_at + 1, max(reference.losses) + 1))
    assert resumed == {step: reference.losses[step] for step in resumed}
    assert manifest(directory)["metrics"] == manifest(reference.directory)["metrics"]


def test_torn_latest_checkpoint_falls_back_to_the_previous_one(classifier_reference: Reference, tmp_path: Path) -> None:
    directory = classifier_reference.copy_until(25, tmp_path / "ckpt")
    torn = directory / checkpoint_name(25)
    torn.write_bytes(torn.read_bytes()[:1000])  # a torn write under the final name
    codes, gang = run(
        tmp_path,
        SMALL_CLASSIFIER,
        world_size=2,
        checkpoint_dir=directory,
        loss_log=tmp_path / "losses.jsonl",
        env=EVERY_STEPS,
    )
    assert codes == [0, 0], gang.report()
    warnings = [json.loads(line) for line in gang.leader.stderr.splitlines() if '"skipping unreadable' in line]
    assert len(warnings) == 1
    assert (warnings[0]["level"], warnings[0]["path"], warnings[0]["step"]) == ("warning", str(torn), 25)
    resumed = read_losses(tmp_path / "losses.jsonl")
    assert min(resumed) == 21  # from ckpt-20, the previous one
    assert resumed == {step: classifier_reference.losses[step] for step in resumed}
    assert torch.load(torn, weights_only=True)["step"] == 25  # rewritten whole on the way


def test_sigterm_on_one_rank_stops_the_gang_with_a_checkpoint(lm_reference: Reference, tmp_path: Path) -> None:
    """Evict rank 1 mid-epoch: both ranks stop at the same step, rank 0 saves, both exit 143,
    and the next attempt resumes there and continues exactly as the undisturbed run did."""
    directory = tmp_path / "ckpt"
    gang = launch(
        tmp_path, TINY_LM, world_size=2, checkpoint_dir=directory, loss_log=tmp_path / "evicted.jsonl", name="evicted"
    )
    wait_until(lambda: len(read_losses(tmp_path / "evicted.jsonl")) >= 8 or gang.leader.process.poll() is not None)
    gang.signal(1, signal.SIGTERM)
    codes = gang.wait()
    assert codes == [contract.EXIT_PREEMPTED, contract.EXIT_PREEMPTED], gang.report()
    stopped_at = max(read_losses(tmp_path / "evicted.jsonl"))
    assert 8 <= stopped_at < max(lm_reference.losses)
    assert read_latest_name(directory) == checkpoint_name(stopped_at)
    summary = gang.leader.termination()
    assert (summary["exitCode"], summary["reason"], summary["step"]) == (143, "Preempted", stopped_at)
    assert not (directory / contract.EXPORT_FINAL).exists()

    codes, gang = run(
        tmp_path,
        TINY_LM,
        world_size=2,
        checkpoint_dir=directory,
        loss_log=tmp_path / "restarted.jsonl",
        name="restarted",
    )
    assert codes == [0, 0], gang.report()
    resumed = read_losses(tmp_path / "restarted.jsonl")
    assert min(resumed) == stopped_at + 1 and max(resumed) == max(lm_reference.losses)
    assert resumed == {step: lm_reference.losses[step] for step in resumed}


def test_sigterm_to_the_pod_reaches_torchrun_workers_and_exits_143(tmp_path: Path) -> None:
    """procsPerReplica > 1: the pod's process is the torchrun launcher; SIGTERM to it must still
    end in a checkpoint and the retryable exit code."""
    config = {**SMALL_CLASSIFIER, "epochs": 200}
    directory = tmp_path / "ckpt"
    gang = launch(
        tmp_path,
        config,
        world_size=2,
        checkpoint_dir=directory,
        loss_log=tmp_path / "losses.jsonl",
        torchrun_in_pod=True,
    )
    wait_until(lambda: len(read_losses(tmp_path / "losses.jsonl")) >= 3 or gang.leader.process.poll() is not None)
    gang.signal(0, signal.SIGTERM)
    assert gang.wait() == [contract.EXIT_PREEMPTED], gang.report()
    stopped_at = max(read_losses(tmp_path / "losses.jsonl"))
    assert read_latest_name(directory) == checkpoint_name(stopped_at)
    assert stopped_at < 13 * 200
    assert gang.leader.termination()["reason"] == "Preempted"


def test_gan_and_language_model_export_servable_models(gan_reference: Reference, lm_reference: Reference) -> None:
    module, found = load_exported(gan_reference.directory / contract.EXPORT_FINAL)
    assert (found["format"], found["task"], found["step"]) == ("aidc.model/v1", "gan", 26)
    assert found["metrics"]["frechetDistance"] > 0
    assert (gan_reference.directory / contract.EXPORT_BEST / contract.MODEL_WEIGHTS).exists()
    with torch.no_grad():
        images = module(torch.randn(3, found["inputs"][0]["shape"][1]))
    assert images.shape == (3, *found["outputs"][0]["shape"][1:])
    assert float(images.min()) >= 0 and float(images.max()) <= 1

    module, found = load_exported(lm_reference.directory / contract.EXPORT_FINAL)
    assert (found["task"], found["step"]) == ("language-model", 72)
    assert found["metrics"]["validationLoss"] < 5.545  # below ln(256): it learned something
    with torch.no_grad():
        assert module(torch.randint(0, 256, (2, 10))).shape == (2, 10, 256)
