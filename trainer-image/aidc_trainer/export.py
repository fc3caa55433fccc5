"""Exported models: what training leaves behind for serving.

An export is a directory with ``model.pt`` (a plain state dict, loadable with
``weights_only=True``) and ``manifest.json`` (format ``aidc.model/v1``: the task, the architecture
that rebuilds the module, the tensor signature in Open Inference Protocol terms, class names,
metrics, and where it came from). The model server rebuilds the module from the manifest, so no
pickled code travels from training to serving.

A directory is replaced as a whole: the new one is written beside it, fsynced, and swapped in by
rename, so a server that resolves ``export/final`` sees the old model or the new one.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import torch
from torch import nn

from aidc_trainer import contract
from aidc_trainer.heartbeat import rfc3339
from aidc_trainer.models import build_model
from aidc_trainer.tasks import Exported

FORMAT: Final = "aidc.model/v1"


def build_manifest(
    task: str,
    exported: Exported,
    *,
    metrics: dict[str, float],
    step: int,
    epoch: int,
    job: str,
    now: datetime.datetime,
) -> dict[str, Any]:
    """The manifest of an export (pure)."""
    return {
        "format": FORMAT,
        "task": task,
        "architecture": exported.architecture,
        "inputs": exported.inputs,
        "outputs": exported.outputs,
        "classes": exported.classes,
        "metrics": dict(sorted(metrics.items())),
        "step": step,
        "epoch": epoch,
        "createdAt": rfc3339(now),
        "job": job,
    }


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    for path in sorted(root.rglob("*"), reverse=True):
        _fsync(path)


def write_export(
    directory: Path,
    state_dict: dict[str, torch.Tensor],
    manifest: dict[str, Any],
    files: Callable[[Path], None] | None = None,
) -> None:
    """Write (or replace) the export in ``directory``: weights first (``files`` writes them when
    given, else ``state_dict`` goes to model.pt), manifest last."""
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = directory.with_name(f".{directory.name}.tmp-{os.getpid()}")
    retired = directory.with_name(f".{directory.name}.old-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    if files is not None:
        files(staging)
        _fsync_tree(staging)
    else:
        with (staging / contract.MODEL_WEIGHTS).open("wb") as handle:
            torch.save(state_dict, handle)
            handle.flush()
            os.fsync(handle.fileno())
    with (staging / contract.MODEL_MANIFEST).open("w") as handle:
        json.dump(manifest, handle, indent=2)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())
    _fsync(staging)
    if directory.exists():
        directory.rename(retired)
    staging.rename(directory)
    _fsync(directory.parent)
    shutil.rmtree(retired, ignore_errors=True)


def folder_bytes(directory: Path) -> int:
    """The size of the files under ``directory`` (what a server reads to load the export)."""
    return sum(path.stat().st_size for path in directory.rglob("*") if path.is_file())


def read_manifest(directory: Path) -> dict[str, Any]:
    """The manifest of the export in ``directory`` (ValueError when it is not an aidc export)."""
    manifest = json.loads((directory / contract.MODEL_MANIFEST).read_text())
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ValueError(f"{directory} holds no {FORMAT} manifest")
    return manifest


def load_exported(
    directory: str | Path, device: str | torch.device = "cpu"
) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild an exported model for inference: ``(module in eval mode on device, manifest)``."""
    directory = Path(directory)
    manifest = read_manifest(directory)
    if manifest["architecture"].get("format") == "transformers":
        from aidc_trainer.pretrained import load_for_serving

        return load_for_serving(directory).to(device).eval(), manifest
    module = build_model(manifest["task"], manifest["architecture"])
    state = torch.load(directory / contract.MODEL_WEIGHTS, map_location="cpu", weights_only=True)
    module.load_state_dict(state)
    return module.to(device).eval(), manifest
