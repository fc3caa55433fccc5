"""The trainer with ``parallelism.strategy: FSDP``: real gangs of gloo ranks, real sharded checkpoints.

FSDP trains the same losses as DDP, writes a checkpoint from every rank that resumes bit for bit,
stops on SIGTERM with one, reshards a checkpoint of 4 ranks into 2, skips a torn one, and exports
one consolidated model the server loads.
"""

from __future__ import annotations

import json
import shutil
import signal
from pathlib import Path
from typing import Any

import pytest
import torch

from aidc_trainer import contract
from aidc_trainer.export import load_exported
from aidc_trainer.sharded_checkpoint import list_sharded, read_latest_name_sharded, sharded_name
from tests.trainer.gang import launch, read_losses, run, wait_until

pytestmark = pytest.mark.trainer

# 205 training windows: 2 ranks -> 103 each -> 13 batches of 8 -> 6 steps of 2 micro-batches per epoch
TINY_LM: dict[str, Any] = {
    "task": "language-model",
    "dataset": {"source": "synthetic", "samples": 256},
    "epochs": 4,
    "batchSize": 8,
    "gradientAccumulationSteps": 2,
    "gradientClipNorm": 1.0,
    "languageModel": {"contextLength": 32, "layers": 2, "heads": 2, "embedding": 32},
}
FSDP: dict[str, Any] = {**TINY_LM, "parallelism": {"strategy": "FSDP"}}
EVERY_STEPS = {"AIDC_CHECKPOINT_EVERY_STEPS": "5", "AIDC_CHECKPOINT_KEEP": "1000"}


def _train(workdir: Path, config: dict[str, Any], world_size: int = 2, **options: Any) -> dict[int, dict[str, str]]:
    options.setdefault("checkpoint_dir", workdir / "ckpt")
    codes, gang = run(workdir, config, world_size=world_size, loss_log=workdir / "losses.jsonl", **options)
    assert codes == [0] * world_size, gang.report()
    return read_losses(workdir / "losses.jsonl")


def _floats(losses: dict[int, dict[str, str]]) -> list[float]:
    return [float(losses[step]["loss"]) for step in sorted(losses)]


def _copy_until(source: Path, step: int, destination: Path) -> Path:
    """A checkpoint directory as an attempt that last saved at ``step`` would have left it."""
    destination.mkdir(parents=True)
    for saved, path in list_sharded(source):
        if saved <= step:
            shutil.copytree(path, destination / path.name)
    (destination / contract.CHECKPOINT_LATEST_FILE).write_text(sharded_name(step) + "\n")
    return destination


@pytest.fixture(scope="module")
def fsdp_reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[int, dict[str, str]]]:
    workdir = tmp_path_factory.mktemp("fsdp")
    return workdir / "ckpt", _train(workdir, FSDP, env=EVERY_STEPS)


def test_fsdp_trains_the_losses_of_ddp_and_exports_one_servable_model(
    fsdp_reference: tuple[Path, dict[int, dict[str, str]]], tmp_path: Path
) -> None:
    directory, fsdp = fsdp_reference
    ddp = _train(tmp_path, TINY_LM)
    assert sorted(fsdp) == sorted(ddp) == list(range(1, 25))
    assert _floats(ddp)[-1] < _floats(ddp)[0]  # it learns, so equal curves are not two flat lines
    assert _floats(fsdp) == pytest.approx(_floats(ddp), rel=1e-4)
    # every rank wrote its shard of every checkpoint, rank 0 the plain part
    names = sorted(p.name for p in (directory / sharded_name(20)).iterdir())
    assert names == [".metadata", "__0_0.distcp", "__1_0.distcp", "aidc.pt"]
    fsdp_model, manifest = load_exported(directory / contract.EXPORT_FINAL)
    ddp_model, _ = load_exported(tmp_path / "ckpt" / contract.EXPORT_FINAL)
    assert manifest["step"] == 24  # one consolidated file, gathered from the shards
    assert sorted(p.name for p in (directory / contract.EXPORT_FINAL).iterdir()) == sorted(
        [contract.MODEL_WEIGHTS, contract.MODEL_MANIFEST]
    )
    windows = torch.randint(0, 256, (2, 16))
    with torch.no_grad():
        assert torch.allclose(fsdp_model(windows), ddp_model(windows), atol=1e-3)


def test_sigterm_checkpoints_every_shard_and_the_gang_resumes_bit_for_bit(
    fsdp_reference: tuple[Path, dict[int, dict[str, str]]], tmp_path: Path
) -> None:
    _, reference = fsdp_reference
    directory = tmp_path / "ckpt"
    gang = launch(tmp_path, FSDP, world_size=2, checkpoint_dir=directory, loss_log=tmp_path / "stopped.jsonl")
    wait_until(lambda: len(read_losses(tmp_path / "stopped.jsonl")) >= 8 or gang.leader.process.poll() is not None)
    gang.signal(1, signal.SIGTERM)
    assert gang.wait() == [contract.EXIT_PREEMPTED] * 2, gang.report()
    stopped_at = max(read_losses(tmp_path / "stopped.jsonl"))
    assert 8 <= stopped_at < 24
    assert read_latest_name_sharded(directory) == sharded_name(stopped_at)
    assert gang.leader.termination()["checkpoint"] == sharded_name(stopped_at)

    resumed = _train(tmp_path / "again", FSDP, checkpoint_dir=directory)
    assert min(resumed) == stopped_at + 1 and max(resumed) == 24
    assert resumed == {step: reference[step] for step in resumed}


def test_a_torn_sharded_checkpoint_is_skipped_and_the_previous_one_resumes_exactly(
    fsdp_reference: tuple[Path, dict[int, dict[str, str]]], tmp_path: Path
) -> None:
    source, reference = fsdp_reference
    directory = _copy_until(source, 15, tmp_path / "ckpt")
    shard = directory / sharded_name(15) / "__1_0.distcp"
    shard.write_bytes(shard.read_bytes()[:100])  # rank 1's part of the newest one cut short
    resumed = _train(tmp_path, FSDP, checkpoint_dir=directory)
    assert min(resumed) == 11
    assert resumed == {step: reference[step] for step in resumed}


def test_a_checkpoint_of_four_ranks_resumes_on_two_and_continues_the_curve(tmp_path: Path) -> None:
    # 4 ranks: 52 windows each -> 3 steps per epoch, 12 in all; 2 ranks: 6 per epoch
    four = _train(tmp_path / "four", FSDP, world_size=4, env=EVERY_STEPS)
    assert sorted(four) == list(range(1, 13))
    directory = _copy_until(tmp_path / "four" / "ckpt", 10, tmp_path / "ckpt")
    assert sorted(p.name for p in (directory / sharded_name(10)).iterdir() if p.suffix == ".distcp") == [
        f"__{rank}_0.distcp" for rank in range(4)
    ]
    codes, gang = run(tmp_path / "two", FSDP, world_size=2, checkpoint_dir=directory, loss_log=tmp_path / "two.jsonl")
    assert codes == [0, 0], gang.report()
    assert any("world size changed" in line for line in gang.leader.stderr.splitlines())
    two = read_losses(tmp_path / "two.jsonl")
    assert min(two) == 11 and max(two) == 24
    # the same model went on learning: the first loss after the reshard is near where four ranks were
    assert float(two[11]["loss"]) == pytest.approx(float(four[10]["loss"]), rel=0.15)
    assert _floats(two)[-1] < _floats(four)[0]


def test_fsdp_with_a_task_that_has_no_blocks_is_a_config_error(tmp_path: Path) -> None:
    config = {"task": "classifier", "dataset": {"source": "synthetic"}, "parallelism": {"strategy": "FSDP"}}
    codes, gang = run(tmp_path, config, world_size=1)
    assert codes == [contract.EXIT_CONFIG_ERROR]
    summary = gang.leader.termination()
    assert "parallelism.strategy FSDP is for task language-model, not classifier" in summary["message"]
    assert json.dumps(summary)  # the summary is one JSON line the operator reads
