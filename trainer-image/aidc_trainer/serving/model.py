"""Loading the exported model a serving pod mounts, and choosing its servable by task.

The folder is mounted read-only and may come from any TrainingJob, so nothing here writes to it
and the weights are read with ``weights_only=True`` (inside ``aidc_trainer.export``): a state
dict cannot run code, a pickled module could. The manifest says which task rebuilt the module,
and the task decides what the server accepts and returns.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from aidc_trainer.errors import ConfigError, DataError
from aidc_trainer.export import load_exported
from aidc_trainer.serving.classifier import ClassifierServable
from aidc_trainer.serving.gan import GeneratorServable
from aidc_trainer.serving.language_model import LanguageModelServable
from aidc_trainer.serving.policy import PolicyServable
from aidc_trainer.serving.protocol import TensorSpec
from aidc_trainer.serving.servable import Servable

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadedModel:
    """A servable with where it came from and what loading it cost."""

    servable: Servable
    manifest: Mapping[str, Any]
    device: torch.device
    load_seconds: float
    module: torch.nn.Module | None = None  # the model itself (the language routes decode it incrementally)


def resolve_device(name: str) -> torch.device:
    """``auto`` picks the GPU when the pod has one; asking for ``cuda`` without one is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for but no CUDA device is visible to this pod")
    return torch.device(name)


def _spec(entry: Any, where: str) -> TensorSpec:
    if not isinstance(entry, dict) or not isinstance(entry.get("shape"), list):
        raise DataError(f"manifest {where} must be an object with name, datatype and shape, got {entry!r}")
    return TensorSpec(str(entry["name"]), str(entry["datatype"]), tuple(int(d) for d in entry["shape"]))


def build_servable(module: torch.nn.Module, manifest: Mapping[str, Any], device: torch.device) -> Servable:
    """The servable of the manifest's task, wrapped around an already loaded module."""
    task = manifest.get("task")
    inputs, outputs = manifest.get("inputs") or [], manifest.get("outputs") or []
    if not inputs or not outputs:
        raise DataError("the manifest declares no inputs or no outputs")
    first_input, first_output = _spec(inputs[0], "inputs[0]"), _spec(outputs[0], "outputs[0]")
    architecture = manifest.get("architecture") or {}
    if task == "classifier":
        return ClassifierServable(module, first_input, int(architecture["numClasses"]), device)
    if task == "gan":
        return GeneratorServable(module, first_input, first_output, device)
    if task == "language-model":
        return LanguageModelServable(
            module, first_input, int(architecture["vocabSize"]), int(architecture["contextLength"]), device
        )
    if task == "reinforcement-learning":
        return PolicyServable(module, architecture, device)
    raise DataError(
        f"the manifest's task {task!r} cannot be served "
        "(classifier, gan, language-model, reinforcement-learning)"
    )


def load_model(directory: Path, device_name: str) -> LoadedModel:
    """Read the export in ``directory`` onto the chosen device (blocking: call it off the loop)."""
    device = resolve_device(device_name)
    started = time.perf_counter()
    try:
        module, manifest = load_exported(directory, device)
        servable = build_servable(module, manifest, device)
    except (ConfigError, DataError):
        raise
    except FileNotFoundError as error:
        raise DataError(f"no exported model in {directory}: {error.strerror}: {error.filename}") from error
    except Exception as error:  # a torn or foreign export: the message says which
        raise DataError(
            f"cannot load the exported model in {directory}: {type(error).__name__}: {error}"
        ) from error
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return LoadedModel(servable, manifest, device, time.perf_counter() - started, module)
