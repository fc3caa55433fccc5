"""FSDP2 on gloo: the same losses as DDP, and sharded checkpoints that reshard and skip torn ones."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from tests.trainer import sharding_worker
from tests.trainer.gang import free_port


def _curve(tmp_path: Path, strategy: str, checkpointing: bool = False) -> list[float]:
    out = tmp_path / f"{strategy}-{checkpointing}.pt"
    mp.spawn(sharding_worker.losses, args=(2, free_port(), strategy, checkpointing, str(out)), nprocs=2)
    return list(torch.load(out, weights_only=True))


def test_fsdp_and_ddp_give_the_same_losses_with_accumulation_and_clipping(tmp_path: Path) -> None:
    ddp = _curve(tmp_path, "DDP")
    fsdp = _curve(tmp_path, "FSDP")
    assert ddp[-1] < ddp[0]  # it trains, so equal curves are not two flat lines
    assert fsdp == pytest.approx(ddp, rel=1e-5, abs=1e-6)


def test_activation_checkpointing_changes_memory_not_the_losses(tmp_path: Path) -> None:
    assert _curve(tmp_path, "FSDP", checkpointing=True) == pytest.approx(_curve(tmp_path, "FSDP"), abs=1e-6)


def _resume(folder: Path, world: int) -> dict[str, object]:
    out = folder / f"resumed-{world}.pt"
    mp.spawn(sharding_worker.load_newest, args=(world, free_port(), str(folder), str(out)), nprocs=world)
    return dict(torch.load(out, weights_only=True))


@pytest.fixture
def saved_by_four(tmp_path: Path) -> Path:
    mp.spawn(sharding_worker.save_two, args=(4, free_port(), str(tmp_path)), nprocs=4)
    return tmp_path


def test_a_checkpoint_of_four_ranks_reshards_into_two(saved_by_four: Path) -> None:
    names = sorted(p.name for p in (saved_by_four / "ckpt-000000002").iterdir())
    assert names == [".metadata", "__0_0.distcp", "__1_0.distcp", "__2_0.distcp", "__3_0.distcp", "aidc.pt"]
    resumed = _resume(saved_by_four, 2)
    assert resumed["step"] == 2 and resumed["same"] is True
    assert math.isfinite(float(resumed["after"]))  # type: ignore[arg-type]


def test_a_torn_sharded_checkpoint_is_skipped_on_every_rank(saved_by_four: Path) -> None:
    shard = saved_by_four / "ckpt-000000002" / "__1_0.distcp"
    shard.write_bytes(shard.read_bytes()[:100])  # one rank's part cut short
    resumed = _resume(saved_by_four, 2)
    assert resumed["step"] == 1 and resumed["same"] is True


def test_an_unpublished_folder_is_never_used(saved_by_four: Path) -> None:
    (saved_by_four / "ckpt-000000002").rename(saved_by_four / ".ckpt-000000002.tmp-sharded")
    assert _resume(saved_by_four, 2)["step"] == 1
