"""The trainer config: the ``AIDC_TRAINER_CONFIG`` JSON, parsed strictly.

The operator copies ``spec.trainer`` of a TrainingJob into that variable (camelCase, like the
custom resource). Parsing is strict on purpose: a misspelt key silently ignored would train the
wrong thing for hours, so unknown keys, wrong types and values out of range raise ``ConfigError``
(exit 78, never retried) with a message naming the offending key.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from aidc_trainer.errors import ConfigError

TASKS: Final = ("classifier", "gan", "language-model")
SOURCES: Final = ("synthetic", "digits", "npz", "image-folder", "text")
PRECISIONS: Final = ("auto", "fp32", "bf16", "fp16")


@dataclass(frozen=True)
class DatasetConfig:
    """Where the examples come from; ``path`` is relative to the data claim unless absolute."""

    source: str = "digits"
    path: str | None = None
    samples: int = 2048


@dataclass(frozen=True)
class LanguageModelConfig:
    """Shape of the decoder-only transformer of the ``language-model`` task."""

    context_length: int = 128
    layers: int = 4
    heads: int = 4
    embedding: int = 256


@dataclass(frozen=True)
class TrainerConfig:
    """A validated trainer config; ``learning_rate`` None means the task's own default.

    The defaults match those of the operator's ``TrainerConfig`` (which fills them in, all but the
    learning rate: unset there too, so each task's own applies), so a run started by hand behaves
    like one started from a TrainingJob; without a dataset the language model trains on synthetic
    text rather than on digits. trainer-image/README.md lists them (a test compares).
    """

    task: str
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    epochs: int = 8
    max_steps: int | None = None
    batch_size: int = 32
    learning_rate: float | None = None
    precision: str = "auto"
    seed: int = 0
    validation_fraction: float = 0.2
    gradient_accumulation_steps: int = 1
    gradient_clip_norm: float | None = None
    language_model: LanguageModelConfig = field(default_factory=LanguageModelConfig)

    def to_json(self) -> dict[str, Any]:
        """The camelCase form, as stored in checkpoints and manifests (primitives only)."""
        return {
            "task": self.task,
            "dataset": {
                "source": self.dataset.source,
                "path": self.dataset.path,
                "samples": self.dataset.samples,
            },
            "epochs": self.epochs,
            "maxSteps": self.max_steps,
            "batchSize": self.batch_size,
            "learningRate": self.learning_rate,
            "precision": self.precision,
            "seed": self.seed,
            "validationFraction": self.validation_fraction,
            "gradientAccumulationSteps": self.gradient_accumulation_steps,
            "gradientClipNorm": self.gradient_clip_norm,
            "languageModel": {
                "contextLength": self.language_model.context_length,
                "layers": self.language_model.layers,
                "heads": self.language_model.heads,
                "embedding": self.language_model.embedding,
            },
        }


# --- value readers: each takes (where, value) and returns the checked value ---------------------

Reader = Callable[[str, Any], Any]


def _integer(minimum: int) -> Reader:
    def read(where: str, value: Any) -> int:
        # bool is an int in Python; `"epochs": true` is a mistake, not 1
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where} must be an integer, got {json.dumps(value)}")
        if value < minimum:
            raise ConfigError(f"{where} must be >= {minimum}, got {value}")
        return value

    return read


def _number(low: float, high: float | None = None, *, low_inclusive: bool = False) -> Reader:
    def read(where: str, value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise ConfigError(f"{where} must be a finite number, got {json.dumps(value)}")
        too_low = value < low if low_inclusive else value <= low
        if too_low or (high is not None and value >= high):
            bounds = f"{'[' if low_inclusive else '('}{low}, {high if high is not None else 'inf'})"
            raise ConfigError(f"{where} must be in {bounds}, got {value}")
        return float(value)

    return read


def _choice(choices: tuple[str, ...]) -> Reader:
    def read(where: str, value: Any) -> str:
        if value not in choices:
            raise ConfigError(f"{where} must be one of {', '.join(choices)}; got {json.dumps(value)}")
        return str(value)

    return read


def _string(where: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where} must be a non-empty string, got {json.dumps(value)}")
    return value


def _optional(reader: Reader) -> Reader:
    def read(where: str, value: Any) -> Any:
        return None if value is None else reader(where, value)

    return read


def _read_object(where: str, value: Any, readers: Mapping[str, tuple[str, Reader]]) -> dict[str, Any]:
    """Check an object against ``{jsonKey: (attribute, reader)}``; unknown keys are errors."""
    if not isinstance(value, dict):
        raise ConfigError(f"{where or 'the trainer config'} must be a JSON object")
    unknown = sorted(set(value) - set(readers))
    if unknown:
        prefix = f"{where}." if where else ""
        raise ConfigError(
            f"unknown key {prefix}{unknown[0]} in the trainer config (known: {', '.join(sorted(readers))})"
        )
    prefix = f"{where}." if where else ""
    return {attr: reader(prefix + key, value[key]) for key, (attr, reader) in readers.items() if key in value}


_DATASET: Final[Mapping[str, tuple[str, Reader]]] = {
    "source": ("source", _choice(SOURCES)),
    "path": ("path", _optional(_string)),
    "samples": ("samples", _integer(1)),
}

_LANGUAGE_MODEL: Final[Mapping[str, tuple[str, Reader]]] = {
    "contextLength": ("context_length", _integer(2)),
    "layers": ("layers", _integer(1)),
    "heads": ("heads", _integer(1)),
    "embedding": ("embedding", _integer(8)),
}


def _dataset(where: str, value: Any) -> DatasetConfig:
    return DatasetConfig(**_read_object(where, value, _DATASET))


def _language_model(where: str, value: Any) -> LanguageModelConfig:
    read = LanguageModelConfig(**_read_object(where, value, _LANGUAGE_MODEL))
    if read.embedding % read.heads:
        raise ConfigError(f"{where}.embedding ({read.embedding}) must be a multiple of heads ({read.heads})")
    return read


_TRAINER: Final[Mapping[str, tuple[str, Reader]]] = {
    "task": ("task", _choice(TASKS)),
    "dataset": ("dataset", _dataset),
    "epochs": ("epochs", _integer(1)),
    "maxSteps": ("max_steps", _optional(_integer(1))),
    "batchSize": ("batch_size", _integer(1)),
    "learningRate": ("learning_rate", _optional(_number(0.0))),
    "precision": ("precision", _choice(PRECISIONS)),
    "seed": ("seed", _integer(0)),
    "validationFraction": ("validation_fraction", _number(0.0, 1.0, low_inclusive=True)),
    "gradientAccumulationSteps": ("gradient_accumulation_steps", _integer(1)),
    "gradientClipNorm": ("gradient_clip_norm", _optional(_number(0.0))),
    "languageModel": ("language_model", _language_model),
}

# Which dataset sources each task can read; anything else is a config error, caught before any
# data is touched.
_TASK_SOURCES: Final = {
    "classifier": ("synthetic", "digits", "npz", "image-folder"),
    "gan": ("synthetic", "digits", "npz", "image-folder"),
    "language-model": ("synthetic", "text"),
}


def parse_config(raw: str | Mapping[str, Any]) -> TrainerConfig:
    """Parse and validate the trainer config (a JSON string or an already decoded object)."""
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError as error:
            raise ConfigError(f"the trainer config is not valid JSON: {error}") from error
    values = _read_object("", raw, _TRAINER)
    if "task" not in values:
        raise ConfigError(f"the trainer config needs a task (one of {', '.join(TASKS)})")
    if "dataset" not in values and values["task"] == "language-model":
        values["dataset"] = DatasetConfig(source="synthetic")  # digits, the default, are images
    config = TrainerConfig(**values)
    source = config.dataset.source
    if source not in _TASK_SOURCES[config.task]:
        allowed = ", ".join(_TASK_SOURCES[config.task])
        raise ConfigError(f"task {config.task} cannot read dataset source {source} (use one of {allowed})")
    if source in ("npz", "image-folder", "text") and not config.dataset.path:
        raise ConfigError(f"dataset.path is required for dataset source {source}")
    return config
