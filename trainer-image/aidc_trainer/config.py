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

TASKS: Final = ("classifier", "gan", "language-model", "reinforcement-learning")
SOURCES: Final = ("synthetic", "digits", "npz", "image-folder", "text", "jsonl")
PRECISIONS: Final = ("auto", "fp32", "bf16", "fp16")
STRATEGIES: Final = ("DDP", "FSDP")
# the tasks whose models are sharded by transformer block
SHARDABLE_TASKS: Final = ("language-model",)


@dataclass(frozen=True)
class DatasetConfig:
    """Where the examples come from; ``path`` is relative to the data claim unless absolute."""

    source: str = "digits"
    path: str | None = None
    samples: int = 2048


@dataclass(frozen=True)
class LoraConfig:
    """Low-rank adapters (peft) on a pretrained model: only they train and are exported."""

    rank: int = 8
    alpha: int = 16
    dropout: float = 0.05
    target_modules: tuple[str, ...] | None = None  # None: peft's choice for the architecture


@dataclass(frozen=True)
class PretrainedConfig:
    """A Hugging Face causal LM in a folder (config, safetensors, tokenizer), relative to the data claim."""

    path: str
    lora: LoraConfig | None = None


@dataclass(frozen=True)
class LanguageModelConfig:
    """Shape of the decoder-only transformer of the ``language-model`` task, or the pretrained model
    it starts from (then only ``context_length`` applies: tokens per training sequence)."""

    context_length: int = 128
    layers: int = 4
    heads: int = 4
    embedding: int = 256
    pretrained: PretrainedConfig | None = None

    def to_json(self) -> dict[str, Any]:
        shape: dict[str, Any] = {
            "contextLength": self.context_length,
            "layers": self.layers,
            "heads": self.heads,
            "embedding": self.embedding,
        }
        if self.pretrained is not None:
            lora = self.pretrained.lora
            shape["pretrained"] = {"path": self.pretrained.path}
            if lora is not None:
                shape["pretrained"]["lora"] = {
                    "rank": lora.rank,
                    "alpha": lora.alpha,
                    "dropout": lora.dropout,
                    **({} if lora.target_modules is None else {"targetModules": list(lora.target_modules)}),
                }
        return shape


@dataclass(frozen=True)
class ParallelismConfig:
    """How the model is spread over the gang: DDP replicas or FSDP shards (sharding.py)."""

    strategy: str = "DDP"
    activation_checkpointing: bool = False

    @property
    def sharded(self) -> bool:
        return self.strategy == "FSDP"


@dataclass(frozen=True)
class EnvironmentConfig:
    """The environment to train in: a Gymnasium id or ``module:Class`` (exactly one)."""

    gymnasium_id: str | None = "CartPole-v1"
    entry_point: str | None = None


@dataclass(frozen=True)
class PpoConfig:
    """PPO's hyperparameters; the defaults are CleanRL's ``ppo.py``."""

    clip: float = 0.2
    gae_lambda: float = 0.95
    gamma: float = 0.99
    epochs: int = 4
    minibatches: int = 4
    entropy_coef: float = 0.01
    value_coef: float = 0.5
    max_grad_norm: float = 0.5
    clip_value_loss: bool = True


@dataclass(frozen=True)
class ReinforcementLearningConfig:
    """What the ``reinforcement-learning`` task trains in, for how long, and how."""

    environment: EnvironmentConfig = field(default_factory=EnvironmentConfig)
    total_steps: int = 100_000
    envs_per_rank: int = 4
    rollout_steps: int = 128
    evaluation_episodes: int = 10
    ppo: PpoConfig = field(default_factory=PpoConfig)

    def to_json(self) -> dict[str, Any]:
        """The camelCase form (primitives only)."""
        environment: dict[str, Any] = (
            {"entryPoint": self.environment.entry_point}
            if self.environment.entry_point
            else {"gymnasiumId": self.environment.gymnasium_id}
        )
        ppo = self.ppo
        return {
            "environment": environment,
            "totalSteps": self.total_steps,
            "envsPerRank": self.envs_per_rank,
            "rolloutSteps": self.rollout_steps,
            "evaluationEpisodes": self.evaluation_episodes,
            "ppo": {
                "clip": ppo.clip,
                "gaeLambda": ppo.gae_lambda,
                "gamma": ppo.gamma,
                "epochs": ppo.epochs,
                "minibatches": ppo.minibatches,
                "entropyCoef": ppo.entropy_coef,
                "valueCoef": ppo.value_coef,
                "maxGradNorm": ppo.max_grad_norm,
                "clipValueLoss": ppo.clip_value_loss,
            },
        }


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
    parallelism: ParallelismConfig = field(default_factory=ParallelismConfig)
    # set exactly when task is reinforcement-learning
    reinforcement_learning: ReinforcementLearningConfig | None = None

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
            "languageModel": self.language_model.to_json(),
            "parallelism": {
                "strategy": self.parallelism.strategy,
                "activationCheckpointing": self.parallelism.activation_checkpointing,
            },
            # only the task that has the block carries it, as the operator sends it
            **(
                {}
                if self.reinforcement_learning is None
                else {"reinforcementLearning": self.reinforcement_learning.to_json()}
            ),
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


def _integer_in(minimum: int, maximum: int) -> Reader:
    def read(where: str, value: Any) -> int:
        checked: int = _integer(minimum)(where, value)
        if checked > maximum:
            raise ConfigError(f"{where} must be <= {maximum}, got {checked}")
        return checked

    return read


def _number(
    low: float, high: float | None = None, *, low_inclusive: bool = False, high_inclusive: bool = False
) -> Reader:
    def read(where: str, value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise ConfigError(f"{where} must be a finite number, got {json.dumps(value)}")
        too_low = value < low if low_inclusive else value <= low
        too_high = high is not None and (value > high if high_inclusive else value >= high)
        if too_low or too_high:
            closing = "]" if high_inclusive else ")"
            bounds = f"{'[' if low_inclusive else '('}{low}, {high if high is not None else 'inf'}{closing}"
            raise ConfigError(f"{where} must be in {bounds}, got {value}")
        return float(value)

    return read


def _choice(choices: tuple[str, ...]) -> Reader:
    def read(where: str, value: Any) -> str:
        if value not in choices:
            raise ConfigError(f"{where} must be one of {', '.join(choices)}; got {json.dumps(value)}")
        return str(value)

    return read


def _boolean(where: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{where} must be true or false, got {json.dumps(value)}")
    return value


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


def _string_list(where: str, value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(f"{where} must be a non-empty list of module names")
    return tuple(value)


_LORA: Final[Mapping[str, tuple[str, Reader]]] = {
    "rank": ("rank", _integer_in(1, 1024)),
    "alpha": ("alpha", _integer_in(1, 4096)),
    "dropout": ("dropout", _number(0.0, 1.0, low_inclusive=True)),
    "targetModules": ("target_modules", _string_list),
}


def _lora(where: str, value: Any) -> LoraConfig:
    return LoraConfig(**_read_object(where, value, _LORA))


_PRETRAINED: Final[Mapping[str, tuple[str, Reader]]] = {
    "path": ("path", _string),
    "lora": ("lora", _optional(_lora)),
}


def _pretrained(where: str, value: Any) -> PretrainedConfig:
    read = _read_object(where, value, _PRETRAINED)
    if "path" not in read:
        raise ConfigError(f"{where}.path is required: the folder of the pretrained model")
    return PretrainedConfig(**read)


_LANGUAGE_MODEL: Final[Mapping[str, tuple[str, Reader]]] = {
    "contextLength": ("context_length", _integer(2)),
    "layers": ("layers", _integer(1)),
    "heads": ("heads", _integer(1)),
    "embedding": ("embedding", _integer(8)),
    "pretrained": ("pretrained", _optional(_pretrained)),
}


def _dataset(where: str, value: Any) -> DatasetConfig:
    return DatasetConfig(**_read_object(where, value, _DATASET))


def _language_model(where: str, value: Any) -> LanguageModelConfig:
    read = LanguageModelConfig(**_read_object(where, value, _LANGUAGE_MODEL))
    if read.embedding % read.heads:
        raise ConfigError(f"{where}.embedding ({read.embedding}) must be a multiple of heads ({read.heads})")
    return read


_PARALLELISM: Final[Mapping[str, tuple[str, Reader]]] = {
    "strategy": ("strategy", _choice(STRATEGIES)),
    "activationCheckpointing": ("activation_checkpointing", _boolean),
}


def _parallelism(where: str, value: Any) -> ParallelismConfig:
    return ParallelismConfig(**_read_object(where, value, _PARALLELISM))


_ENVIRONMENT: Final[Mapping[str, tuple[str, Reader]]] = {
    "gymnasiumId": ("gymnasium_id", _string),
    "entryPoint": ("entry_point", _string),
}

_PPO: Final[Mapping[str, tuple[str, Reader]]] = {
    "clip": ("clip", _number(0.0, 1.0, high_inclusive=True)),
    "gaeLambda": ("gae_lambda", _number(0.0, 1.0, low_inclusive=True, high_inclusive=True)),
    "gamma": ("gamma", _number(0.0, 1.0, low_inclusive=True, high_inclusive=True)),
    "epochs": ("epochs", _integer_in(1, 100)),
    "minibatches": ("minibatches", _integer_in(1, 1024)),
    "entropyCoef": ("entropy_coef", _number(0.0, low_inclusive=True)),
    "valueCoef": ("value_coef", _number(0.0, low_inclusive=True)),
    "maxGradNorm": ("max_grad_norm", _number(0.0)),
    "clipValueLoss": ("clip_value_loss", _boolean),
}


def _environment(where: str, value: Any) -> EnvironmentConfig:
    read = _read_object(where, value, _ENVIRONMENT)
    if len(read) != 1:
        raise ConfigError(f"{where} needs exactly one of gymnasiumId and entryPoint")
    entry_point = read.get("entry_point")
    if entry_point is not None:
        module, _, name = entry_point.partition(":")
        if not module or not name:
            raise ConfigError(f"{where}.entryPoint must be module:Class, got {json.dumps(entry_point)}")
    return EnvironmentConfig(gymnasium_id=read.get("gymnasium_id"), entry_point=entry_point)


def _ppo(where: str, value: Any) -> PpoConfig:
    return PpoConfig(**_read_object(where, value, _PPO))


_REINFORCEMENT_LEARNING: Final[Mapping[str, tuple[str, Reader]]] = {
    "environment": ("environment", _environment),
    "totalSteps": ("total_steps", _integer(1)),
    "envsPerRank": ("envs_per_rank", _integer_in(1, 256)),
    "rolloutSteps": ("rollout_steps", _integer_in(1, 8192)),
    "evaluationEpisodes": ("evaluation_episodes", _integer_in(0, 1000)),
    "ppo": ("ppo", _ppo),
}


def _reinforcement_learning(where: str, value: Any) -> ReinforcementLearningConfig:
    read = ReinforcementLearningConfig(**_read_object(where, value, _REINFORCEMENT_LEARNING))
    batch = read.envs_per_rank * read.rollout_steps
    if batch % read.ppo.minibatches:
        raise ConfigError(
            f"{where}.ppo.minibatches ({read.ppo.minibatches}) must divide envsPerRank x rolloutSteps "
            f"({batch})"
        )
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
    "parallelism": ("parallelism", _parallelism),
    "reinforcementLearning": ("reinforcement_learning", _optional(_reinforcement_learning)),
}

# Which dataset sources each task can read; anything else is a config error, caught before any
# data is touched.
_TASK_SOURCES: Final = {
    "classifier": ("synthetic", "digits", "npz", "image-folder"),
    "gan": ("synthetic", "digits", "npz", "image-folder"),
    "language-model": ("synthetic", "text", "jsonl"),
    # the environment is the data: the operator's dataset defaults are accepted and ignored
    "reinforcement-learning": SOURCES,
}


_PATHED: Final = ("npz", "image-folder", "text", "jsonl")


def _check_reinforcement_learning(values: dict[str, Any]) -> None:
    """The block is required by the reinforcement-learning task and refused by every other."""
    if values["task"] == "reinforcement-learning":
        if values.get("reinforcement_learning") is None:
            raise ConfigError("reinforcementLearning is required when task is reinforcement-learning")
    elif values.get("reinforcement_learning") is not None:
        raise ConfigError(
            f"reinforcementLearning is only allowed with task reinforcement-learning, not {values['task']}"
        )


def _check_parallelism(config: TrainerConfig) -> None:
    """FSDP shards transformer blocks: the language model's; fp16 needs a sharded grad scaler."""
    if not config.parallelism.sharded:
        return
    if config.task not in SHARDABLE_TASKS:
        raise ConfigError(
            f"parallelism.strategy FSDP is for task {' or '.join(SHARDABLE_TASKS)}, "
            f"not {config.task} (use DDP)"
        )
    if config.precision == "fp16":
        raise ConfigError(
            "parallelism.strategy FSDP trains in bf16 or fp32, not precision fp16 (use bf16 or auto)"
        )


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
    _check_reinforcement_learning(values)
    config = TrainerConfig(**values)
    _check_parallelism(config)
    if config.dataset.source == "jsonl" and config.language_model.pretrained is None:
        raise ConfigError(
            "dataset source jsonl (prompt/response pairs) needs languageModel.pretrained: its tokenizer"
        )
    source = config.dataset.source
    if source not in _TASK_SOURCES[config.task]:
        allowed = ", ".join(_TASK_SOURCES[config.task])
        raise ConfigError(f"task {config.task} cannot read dataset source {source} (use one of {allowed})")
    if config.task != "reinforcement-learning" and source in _PATHED and not config.dataset.path:
        raise ConfigError(f"dataset.path is required for dataset source {source}")
    return config
