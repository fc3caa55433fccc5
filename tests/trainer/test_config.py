"""The trainer config is parsed strictly: defaults for everything but the task, and a clear
ConfigError for anything unknown, mistyped or out of range."""

from __future__ import annotations

from typing import Any

import pytest

from aidc_trainer import contract
from aidc_trainer.config import DatasetConfig, LanguageModelConfig, TrainerConfig, parse_config
from aidc_trainer.environment import read_environment
from aidc_trainer.errors import ConfigError


def test_defaults_for_everything_but_the_task() -> None:
    config = parse_config('{"task": "classifier"}')
    assert config == TrainerConfig(task="classifier")
    assert config.dataset == DatasetConfig(source="digits", path=None, samples=2048)
    assert config.language_model == LanguageModelConfig(context_length=128, layers=4, heads=4, embedding=256)
    assert config.seed == 0
    assert parse_config({"task": "language-model"}).dataset.source == "synthetic"  # digits are images
    assert (config.epochs, config.batch_size, config.precision, config.gradient_accumulation_steps) == (
        8,
        32,
        "auto",
        1,
    )


def test_camel_case_round_trip() -> None:
    raw = {
        "task": "language-model",
        "dataset": {"source": "text", "path": "corpus.txt", "samples": 100},
        "epochs": 2,
        "maxSteps": 50,
        "batchSize": 4,
        "learningRate": 0.01,
        "precision": "bf16",
        "seed": 3,
        "validationFraction": 0.0,
        "gradientAccumulationSteps": 4,
        "gradientClipNorm": 1.0,
        "languageModel": {"contextLength": 64, "layers": 3, "heads": 2, "embedding": 64},
        "parallelism": {"strategy": "FSDP", "activationCheckpointing": True},
    }
    config = parse_config(raw)
    assert config.to_json() == raw
    assert parse_config(config.to_json()) == config


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("not json", "not valid JSON"),
        ("[]", "must be a JSON object"),
        ({}, "needs a task"),
        ({"task": "regression"}, "task must be one of classifier, gan, language-model"),
        ({"task": "classifier", "epoch": 3}, "unknown key epoch"),
        ({"task": "classifier", "dataset": {"source": "digits", "root": "x"}}, "unknown key dataset.root"),
        ({"task": "language-model", "languageModel": {"depth": 2}}, "unknown key languageModel.depth"),
        ({"task": "classifier", "epochs": 0}, "epochs must be >= 1"),
        ({"task": "classifier", "epochs": True}, "epochs must be an integer"),
        ({"task": "classifier", "batchSize": 8.5}, "batchSize must be an integer"),
        ({"task": "classifier", "learningRate": 0}, "learningRate must be in (0.0, inf)"),
        ({"task": "classifier", "learningRate": "0.1"}, "learningRate must be a finite number"),
        ({"task": "classifier", "validationFraction": 1.0}, "validationFraction must be in [0.0, 1.0)"),
        ({"task": "classifier", "precision": "fp8"}, "precision must be one of"),
        ({"task": "classifier", "dataset": {"source": "text", "path": "a.txt"}}, "cannot read dataset source text"),
        ({"task": "language-model", "dataset": {"source": "digits"}}, "cannot read dataset source digits"),
        ({"task": "classifier", "dataset": {"source": "npz"}}, "dataset.path is required"),
        ({"task": "language-model", "languageModel": {"embedding": 30, "heads": 4}}, "multiple of heads"),
        (
            {"task": "language-model", "parallelism": {"strategy": "TP"}},
            "parallelism.strategy must be one of DDP, FSDP",
        ),
        ({"task": "gan", "parallelism": {"strategy": "FSDP"}}, "FSDP is for task language-model, not gan"),
        (
            {"task": "language-model", "precision": "fp16", "parallelism": {"strategy": "FSDP"}},
            "FSDP trains in bf16 or fp32, not precision fp16",
        ),
        ({"task": "language-model", "parallelism": {"activationCheckpointing": 1}}, "activationCheckpointing"),
    ],
)
def test_invalid_configs_are_rejected_with_the_key_named(raw: Any, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(raw)
    assert message in str(caught.value)
    assert caught.value.exit_code == contract.EXIT_CONFIG_ERROR


def test_environment_is_read_with_defaults_and_checked() -> None:
    env = read_environment(
        {
            contract.ENV_CHECKPOINT_DIR: "/mnt/checkpoints/job",
            contract.ENV_CHECKPOINT_EVERY_STEPS: "100",
            contract.ENV_HEARTBEAT_SECONDS: "2.5",
            contract.ENV_POD_NAME: "job-0",
            "KUBERNETES_SERVICE_HOST": "10.0.0.1",
            "KUBERNETES_SERVICE_PORT": "6443",
        }
    )
    assert str(env.checkpoint_dir) == "/mnt/checkpoints/job"
    assert (env.checkpoint_every_steps, env.heartbeat_seconds, env.checkpoint_keep) == (100, 2.5, 3)
    assert env.metrics_port == contract.TRAINER_METRICS_PORT
    assert env.api_server == "https://10.0.0.1:6443"
    assert read_environment({"AIDC_API_SERVER": "http://127.0.0.1:8001/"}).api_server == "http://127.0.0.1:8001"
    assert read_environment({"KUBERNETES_SERVICE_HOST": "fd00::1"}).api_server == "https://[fd00::1]:443"
    with pytest.raises(ConfigError, match="AIDC_CHECKPOINT_KEEP must be >= 1"):
        read_environment({contract.ENV_CHECKPOINT_KEEP: "0"})
    with pytest.raises(ConfigError, match="AIDC_CHECKPOINT_EVERY_STEPS must be an integer"):
        read_environment({contract.ENV_CHECKPOINT_EVERY_STEPS: "often"})
