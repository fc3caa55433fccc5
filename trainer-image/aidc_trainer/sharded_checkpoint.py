"""Sharded checkpoints of an FSDP run: every rank writes its own shards (torch.distributed.checkpoint).

Layout, beside the ``ckpt-<step>.pt`` files of DDP runs: a folder ``ckpt-<step:09d>/`` holding
DCP's ``.metadata`` and one ``__<rank>_0.distcp`` per rank, plus ``aidc.pt``, rank 0's
weights-only file of what is not sharded (step, epoch, position, every rank's RNG, schedule, config).

Atomic like the single-file kind: every rank writes into ``.ckpt-<step>.tmp-sharded/``; DCP's
coordinator (rank 0) writes ``.metadata`` only after every rank reported its files written and
fsynced; rank 0 then writes ``aidc.pt``, renames the folder to its real name, fsyncs the parent and
points ``latest`` at it. A folder without its real name, ``.metadata`` or ``aidc.pt`` is never used.

Loading is collective and reshards: each rank asks for the shards of its own (new) layout, so a
checkpoint of 4 ranks loads into 2 and the other way round. A torn checkpoint (a shard missing or
truncated) fails on every rank at once (DCP gathers the ranks' read errors), and the next older one
is tried, as for single-file checkpoints.

Every rank must see the checkpoint folder: with FSDP the operator mounts the claim on every rank.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import torch
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.state_dict_loader import load as dcp_load
from torch.distributed.checkpoint.state_dict_saver import save as dcp_save

from aidc_trainer import contract
from aidc_trainer.checkpoint import SavedCheckpoint, read_latest_name, write_atomically
from aidc_trainer.distributed import Gang, barrier, broadcast_object
from aidc_trainer.logs import fields

_log = logging.getLogger(__name__)

FORMAT: Final = "aidc.sharded-checkpoint/v1"
PLAIN_FILE: Final = "aidc.pt"
_NAME = re.compile(r"^ckpt-(\d{9})$")


def sharded_name(step: int) -> str:
    return f"ckpt-{step:09d}"


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def list_sharded(directory: Path) -> list[tuple[int, Path]]:
    """Complete-named sharded checkpoints in ``directory`` as (step, path), newest first."""
    if not directory.is_dir():
        return []
    found = [
        (int(match.group(1)), entry)
        for entry in directory.iterdir()
        if (match := _NAME.match(entry.name)) and entry.is_dir()
    ]
    return sorted(found, reverse=True)


def save_sharded(
    directory: Path, shards: dict[str, Any], plain: dict[str, Any] | None, *, step: int, keep: int, gang: Gang
) -> SavedCheckpoint:
    """Collective: write this rank's ``shards``; rank 0 adds ``plain`` and publishes the folder."""
    started = time.monotonic()
    staging = directory / f".{sharded_name(step)}.tmp-sharded"
    if gang.is_leader:
        directory.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(staging, ignore_errors=True)  # a killed writer's leftovers, never published
    barrier(gang)
    dcp_save(shards, checkpoint_id=str(staging))
    final = directory / sharded_name(step)
    if gang.is_leader:
        with (staging / PLAIN_FILE).open("wb") as handle:
            torch.save({**(plain or {}), "format": FORMAT, "step": step}, handle)
            handle.flush()
            os.fsync(handle.fileno())
        _fsync_dir(staging)
        shutil.rmtree(final, ignore_errors=True)  # the same step saved again (a resumed stop)
        staging.rename(final)
        _fsync_dir(directory)
        write_atomically(directory / contract.CHECKPOINT_LATEST_FILE, f"{final.name}\n".encode())
        for index, (_, path) in enumerate(list_sharded(directory)):
            if index >= keep and path != final:
                shutil.rmtree(path, ignore_errors=True)
    barrier(gang)
    return SavedCheckpoint(path=final, step=step, seconds=time.monotonic() - started)


def _candidates(directory: Path) -> list[str]:
    """Rank 0's order of trial: what ``latest`` names first, then newest first."""
    found = list_sharded(directory)
    named = read_latest_name_sharded(directory)
    found.sort(key=lambda item: (item[1].name != named, -item[0]))
    return [
        str(path) for _, path in found if (path / ".metadata").is_file() and (path / PLAIN_FILE).is_file()
    ]


def read_latest_name_sharded(directory: Path) -> str | None:
    try:
        name = (directory / contract.CHECKPOINT_LATEST_FILE).read_text().strip()
    except (OSError, UnicodeDecodeError):
        return read_latest_name(directory)
    return name if _NAME.match(name) else None


def _read_plain(path: Path) -> dict[str, Any]:
    plain = torch.load(path / PLAIN_FILE, map_location="cpu", weights_only=True)
    if not isinstance(plain, dict) or plain.get("format") != FORMAT:
        raise ValueError(f"{path / PLAIN_FILE} is no {FORMAT} file")
    return plain


def newest_plain(directory: Path) -> dict[str, Any] | None:
    """The plain part of the checkpoint a load would try first (rank 0: checks before the collective)."""
    for candidate in _candidates(directory):
        try:
            return _read_plain(Path(candidate))
        except (OSError, ValueError, RuntimeError):
            continue
    return None


def remove_stale_staging(directory: Path) -> None:
    """Drop the staging folders of writers that died before publishing (rank 0, before a load)."""
    if directory.is_dir():
        for entry in directory.glob(".ckpt-*.tmp-sharded"):
            shutil.rmtree(entry, ignore_errors=True)


@dataclass(frozen=True)
class LoadedShards:
    """A sharded checkpoint read back: where, its plain part (rank 0's file) and this rank's shards."""

    path: Path
    plain: dict[str, Any]
    shards: dict[str, Any]


def load_latest_sharded(
    directory: Path, template: Callable[[], dict[str, Any]], gang: Gang
) -> LoadedShards | None:
    """Collective: the newest usable checkpoint, its shards read into ``template()``'s tensors.

    None when there is none (a fresh start); ``template`` is called only when there is a candidate
    (building it initialises an optimizer's state, which a fresh run must not have). Every rank
    tries the same candidates in the same order, and a failure on any rank moves every rank on.
    """
    candidates: list[str] = broadcast_object(_candidates(directory) if gang.is_leader else None, gang)
    shards = template() if candidates else {}
    for candidate in candidates:
        path = Path(candidate)
        try:
            plain = _read_plain(path)
            dcp_load(shards, checkpoint_id=str(path))
        # torn, truncated, foreign: try the previous one (every rank; DCP gathers the ranks' read
        # errors into a CheckpointException, which is a BaseException)
        except (Exception, CheckpointException) as error:
            if gang.is_leader:
                _log.warning(
                    "skipping unreadable sharded checkpoint, trying the previous one",
                    extra=fields(path=str(path), error=f"{type(error).__name__}: {str(error)[:300]}"),
                )
            continue
        return LoadedShards(path, plain, shards)
    return None
