"""Checkpoint files in a job's directory on the checkpoint claim.

Layout (names from ``contract``): ``ckpt-<step:09d>.pt`` files, and a ``latest`` text file that
names the newest complete one. A checkpoint becomes visible only by ``rename`` after its bytes
were fsynced, and ``latest`` is rewritten the same way after that, so a crash at any instant
leaves either the old or the new checkpoint, never half of one under a real name. Only global
rank 0 calls into this module: the claim may be ReadWriteOnce and mounted on rank 0 alone.

Loading trusts nothing: a checkpoint that fails to unpickle or lacks its fields is skipped with a
warning and the next older one is tried. ``torch.load(weights_only=True)`` is used throughout, so
a checkpoint can only hold tensors and plain containers, never code.
"""

from __future__ import annotations

import io
import logging
import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import torch

from aidc_trainer import contract
from aidc_trainer.logs import fields

_log = logging.getLogger(__name__)

FORMAT: Final = "aidc.checkpoint/v1"
_NAME = re.compile(r"^ckpt-(\d{9})\.pt$")
_REQUIRED_KEYS: Final = ("format", "step", "epoch", "position", "task")


def checkpoint_name(step: int) -> str:
    """The file name of the checkpoint taken after ``step`` optimizer steps."""
    return f"ckpt-{step:09d}.pt"


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def _atomic_file(path: Path) -> Iterator[io.BufferedWriter]:
    """Write ``path`` through a temporary sibling: fsync, rename, fsync the directory."""
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with temporary.open("wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        temporary.replace(path)
        _fsync_dir(path.parent)
    finally:
        temporary.unlink(missing_ok=True)


def write_atomically(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` so that readers see the old or the new bytes, never a mix."""
    with _atomic_file(path) as handle:
        handle.write(data)


@dataclass(frozen=True)
class SavedCheckpoint:
    """Where a checkpoint went and how long it took."""

    path: Path
    step: int
    seconds: float


def list_checkpoints(directory: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints in ``directory`` as (step, path), newest first."""
    if not directory.is_dir():
        return []
    found = []
    for entry in directory.iterdir():
        match = _NAME.match(entry.name)
        if match and entry.is_file():
            found.append((int(match.group(1)), entry))
    return sorted(found, reverse=True)


def read_latest_name(directory: Path) -> str | None:
    """The checkpoint name ``latest`` points at, or None when it is missing or unreadable."""
    try:
        name = (directory / contract.CHECKPOINT_LATEST_FILE).read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None
    return name if _NAME.match(name) else None


def save_checkpoint(directory: Path, state: dict[str, Any], *, step: int, keep: int) -> SavedCheckpoint:
    """Write ``state`` as the checkpoint of ``step``, point ``latest`` at it, prune to ``keep``."""
    started = time.monotonic()
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / checkpoint_name(step)
    with _atomic_file(path) as handle:
        torch.save({**state, "format": FORMAT, "step": step}, handle)
    write_atomically(directory / contract.CHECKPOINT_LATEST_FILE, f"{path.name}\n".encode())
    _prune(directory, keep=keep, protect=path)
    return SavedCheckpoint(path=path, step=step, seconds=time.monotonic() - started)


def _prune(directory: Path, *, keep: int, protect: Path) -> None:
    for index, (_, path) in enumerate(list_checkpoints(directory)):
        if index >= keep and path != protect:
            path.unlink(missing_ok=True)


def remove_stale_temporaries(directory: Path) -> None:
    """Delete temporary files a killed writer left behind (they were never renamed, so unused)."""
    if directory.is_dir():
        for entry in directory.glob(".*.tmp-*"):
            if entry.is_file():
                entry.unlink(missing_ok=True)


def _load(path: Path) -> dict[str, Any]:
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ValueError("not a checkpoint dictionary")
    missing = [key for key in _REQUIRED_KEYS if key not in state]
    if missing:
        raise ValueError(f"missing {', '.join(missing)}")
    if state["format"] != FORMAT:
        raise ValueError(f"unknown format {state['format']!r}")
    return state


def load_latest(directory: Path) -> tuple[Path, dict[str, Any]] | None:
    """Load the newest usable checkpoint: the one ``latest`` names, then older ones.

    A checkpoint that cannot be read (truncated, corrupt, wrong format) is skipped with a warning;
    None means there is nothing to resume from (a fresh start).
    """
    candidates = list_checkpoints(directory)
    named = read_latest_name(directory)
    if named is not None:
        # latest first; complete checkpoints newer than latest (a crash between the two renames)
        # are still complete, but latest is what the operator reported, so prefer it
        candidates.sort(key=lambda item: (item[1].name != named, -item[0]))
    for step, path in candidates:
        try:
            return path, _load(path)
        except Exception as error:  # any failure to read means: not usable, try the previous one
            _log.warning(
                "skipping unreadable checkpoint, trying the previous one",
                extra=fields(path=str(path), step=step, error=f"{type(error).__name__}: {error}"),
            )
    return None
