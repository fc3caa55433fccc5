"""Checkpoint files: the layout of the contract, atomic replacement, keep-K, and loading that
skips what it cannot read."""

from __future__ import annotations

import logging
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from aidc_trainer import contract
from aidc_trainer.checkpoint import (
    checkpoint_name,
    list_checkpoints,
    load_latest,
    read_latest_name,
    remove_stale_temporaries,
    save_checkpoint,
)
from aidc_trainer.rng import capture_rng, restore_rng


def state(step: int) -> dict[str, object]:
    return {"epoch": 1, "position": 3, "task": {"w": torch.full((2,), float(step))}, "config": {"task": "x"}}


def test_layout_latest_and_keep(tmp_path: Path) -> None:
    for step in (10, 20, 30, 40):
        saved = save_checkpoint(tmp_path, state(step), step=step, keep=2)
        assert saved.path.name == checkpoint_name(step) == f"ckpt-{step:09d}.pt"
        assert read_latest_name(tmp_path) == saved.path.name
    assert [step for step, _ in list_checkpoints(tmp_path)] == [40, 30]
    assert (tmp_path / contract.CHECKPOINT_LATEST_FILE).read_text() == "ckpt-000000040.pt\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt-000000030.pt", "ckpt-000000040.pt", "latest"]
    found = load_latest(tmp_path)
    assert found is not None
    assert found[1]["step"] == 40 and torch.equal(found[1]["task"]["w"], torch.full((2,), 40.0))


def test_unreadable_checkpoints_are_skipped_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    for step in (1, 2, 3):
        save_checkpoint(tmp_path, state(step), step=step, keep=5)
    (tmp_path / checkpoint_name(3)).write_bytes(b"not a zip archive")
    torch.save({"not": "a checkpoint"}, tmp_path / checkpoint_name(2))
    with caplog.at_level(logging.WARNING, logger="aidc_trainer"):
        found = load_latest(tmp_path)
    assert found is not None and found[1]["step"] == 1
    skipped = [record for record in caplog.records if "skipping unreadable checkpoint" in record.getMessage()]
    assert [record.fields["step"] for record in skipped] == [3, 2]  # type: ignore[attr-defined]


def test_latest_is_preferred_and_a_missing_latest_falls_back_to_the_newest(tmp_path: Path) -> None:
    save_checkpoint(tmp_path, state(5), step=5, keep=5)
    save_checkpoint(tmp_path, state(6), step=6, keep=5)
    (tmp_path / "latest").write_text("ckpt-000000005.pt\n")  # a crash between the two renames
    found = load_latest(tmp_path)
    assert found is not None and found[1]["step"] == 5
    (tmp_path / "latest").unlink()
    found = load_latest(tmp_path)
    assert found is not None and found[1]["step"] == 6
    assert load_latest(tmp_path / "empty") is None


def test_checkpoints_refuse_pickled_code(tmp_path: Path) -> None:
    torch.save(
        {
            "format": "aidc.checkpoint/v1",
            "step": 1,
            "epoch": 0,
            "position": 0,
            "task": {},
            "payload": Path("/etc/passwd"),
        },
        tmp_path / checkpoint_name(1),
    )
    assert load_latest(tmp_path) is None  # weights_only refuses the Path object


def test_stale_temporaries_are_removed_and_never_loaded(tmp_path: Path) -> None:
    save_checkpoint(tmp_path, state(1), step=1, keep=3)
    (tmp_path / ".ckpt-000000002.pt.tmp-123").write_bytes(b"half")
    assert [step for step, _ in list_checkpoints(tmp_path)] == [1]
    remove_stale_temporaries(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt-000000001.pt", "latest"]


def test_rng_state_survives_a_weights_only_round_trip(tmp_path: Path) -> None:
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    np.random.normal()  # leaves a cached gaussian in numpy's state
    save_checkpoint(tmp_path, {**state(1), "rng": [capture_rng()]}, step=1, keep=1)
    expected = (random.random(), float(np.random.normal()), float(torch.rand(1)))
    random.seed(9)
    np.random.seed(9)
    torch.manual_seed(9)
    found = load_latest(tmp_path)
    assert found is not None
    restore_rng(found[1]["rng"][0])
    assert (random.random(), float(np.random.normal()), float(torch.rand(1))) == expected
