"""The config table of trainer-image/README.md tells the defaults the code has, on both sides.

A user reads the README to learn what an unset key means; the defaults live in the trainer's
dataclasses, the operator's TrainerConfig (filled in by the API server) and each task's own
learning rate. The table is parsed and compared with all three, so an edit to one side fails here.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import pytest

from aidc.api.trainingjob import TrainerConfig as OperatorTrainerConfig
from aidc_trainer.config import ReinforcementLearningConfig, TrainerConfig, parse_config

README = Path(__file__).resolve().parents[2] / "trainer-image" / "README.md"
LITERAL = re.compile(r"`([^`]+)`")


def config_table() -> dict[str, str]:
    """key -> default cell of the README's config table."""
    section = README.read_text().split("## Config", 1)[1].split("\n## ", 1)[0]
    rows = [line.split("|")[1:-1] for line in section.splitlines() if line.startswith("| `")]
    return {LITERAL.fullmatch(key.strip()).group(1): default.strip() for key, default, _ in rows}  # type: ignore[union-attr]


def snake(key: str) -> str:
    return re.sub(r"[A-Z]", lambda m: "_" + m.group(0).lower(), key)


# every block filled in with its defaults, so the walk reaches every key
FULL = TrainerConfig(task="reinforcement-learning", reinforcement_learning=ReinforcementLearningConfig())


def trainer_default(key: str) -> Any:
    """The default of ``key`` (dotted, camelCase) in the trainer's dataclasses; None when unset."""
    if key == "reinforcementLearning":
        return TrainerConfig(task="classifier").reinforcement_learning
    value: Any = FULL
    for part in key.split("."):
        value = getattr(value, snake(part))
    return value


def literal(cell: str) -> Any:
    """The value of a default cell that is one literal (`8`, `auto`), or ``...`` when it is not."""
    if cell == "unset":
        return None
    match = LITERAL.fullmatch(cell)
    if match is None:
        return ...
    text = match.group(1)
    if text in ("true", "false"):
        return text == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def test_the_table_lists_every_key_of_the_config() -> None:
    def keys(obj: Any, prefix: str = "") -> set[str]:
        found = set()
        for f in dataclasses.fields(obj):
            camel = re.sub(r"_([a-z])", lambda m: m.group(1).upper(), f.name)
            value = getattr(obj, f.name)
            found |= keys(value, f"{prefix}{camel}.") if dataclasses.is_dataclass(value) else {prefix + camel}
        return found

    assert set(config_table()) == keys(FULL) | {"reinforcementLearning"}


@pytest.mark.parametrize("key", [k for k, cell in config_table().items() if literal(cell) is not ...])
def test_each_literal_default_is_the_trainers(key: str) -> None:
    assert trainer_default(key) == literal(config_table()[key])


@pytest.mark.parametrize(
    "key",
    [
        k
        for k, cell in config_table().items()
        if literal(cell) is not ... and k not in ("dataset.samples", "reinforcementLearning.environment.gymnasiumId")
    ],
)
def test_each_literal_default_is_what_the_operator_sends(key: str) -> None:
    """The operator fills in its own defaults: they must be the ones the README promises."""
    spec: dict[str, Any] = {"task": "language-model", "languageModel": {}, "parallelism": {}}
    if key.startswith("reinforcementLearning."):
        spec = {
            "task": "reinforcement-learning",
            "reinforcementLearning": {"environment": {"gymnasiumId": "Acrobot-v1"}},
        }
    sent = OperatorTrainerConfig.model_validate(spec).to_wire()
    value: Any = sent
    for part in key.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    assert value == literal(config_table()[key])


def test_the_api_requires_the_environment_the_trainer_alone_defaults() -> None:
    """The README's `CartPole-v1` is the trainer's default; a TrainingJob must name its environment."""
    import pydantic

    with pytest.raises(pydantic.ValidationError, match="environment"):
        OperatorTrainerConfig.model_validate({"task": "reinforcement-learning", "reinforcementLearning": {}})


def _per_task(cell: str) -> dict[str, str]:
    """`1e-3` classifier, `2e-4` gan, ... -> {task: value}; `digits` for classifier and gan -> both."""
    found: dict[str, str] = {}
    for value, tasks in re.findall(r"`([^`]+)`([^`]*)", cell.removeprefix("per task:")):
        for task in re.findall(r"classifier|gan|language-model|reinforcement-learning", tasks):
            found[task] = value
    return found


def test_the_per_task_learning_rates_are_the_tasks() -> None:
    pytest.importorskip("torch")
    from aidc_trainer.tasks.classifier import ClassifierTask
    from aidc_trainer.tasks.gan import GanTask
    from aidc_trainer.tasks.language_model import LanguageModelTask
    from aidc_trainer.tasks.reinforcement_learning import ReinforcementLearningTask

    table = _per_task(config_table()["learningRate"])
    tasks = (ClassifierTask, GanTask, LanguageModelTask, ReinforcementLearningTask)
    code = {t.name: t.default_learning_rate for t in tasks}
    assert {task: float(value) for task, value in table.items()} == code


def test_the_per_task_datasets_are_the_trainers() -> None:
    table = _per_task(config_table()["dataset.source"])
    assert table == {task: parse_config({"task": task}).dataset.source for task in table}
    assert set(table) == {"classifier", "gan", "language-model"}


@pytest.mark.parametrize(
    ("task", "extra", "expected"),
    [
        ("gan", {}, 2e-4),
        ("language-model", {"languageModel": {"contextLength": 8, "layers": 1, "heads": 1, "embedding": 16}}, 3e-4),
        ("gan", {"learningRate": 0.01}, 0.01),
    ],
)
def test_a_training_job_without_learning_rate_trains_at_the_tasks_own(
    task: str, extra: dict[str, Any], expected: float
) -> None:
    """End to end: the operator's AIDC_TRAINER_CONFIG for the spec, parsed by the trainer, builds the
    task's optimizers at its own rate (the GAN's 2e-4 was never used while the operator sent 0.001)."""
    torch = pytest.importorskip("torch")
    from aidc import contract
    from aidc.compute.environment import rank_environment
    from aidc_trainer.distributed import init_gang, leave_gang, read_topology
    from aidc_trainer.precision import resolve_precision
    from aidc_trainer.tasks import TaskContext, build_task
    from tests.factories import training_job

    trainer = {"task": task, "dataset": {"source": "synthetic", "samples": 16}, **extra}
    env = rank_environment(training_job({"trainer": trainer}), 0, 0)
    sent = next(e["value"] for e in env if e["name"] == contract.ENV_TRAINER_CONFIG)
    assert ("learningRate" in sent) == ("learningRate" in extra)
    gang = init_gang(read_topology({}), use_cuda=False)
    try:
        config = parse_config(sent)
        built = build_task(TaskContext(config, gang, resolve_precision("fp32", gang.device)))
        optimizers = [v for v in vars(built).values() if isinstance(v, torch.optim.Optimizer)]
        assert optimizers and {g["lr"] for o in optimizers for g in o.param_groups} == {expected}
    finally:
        leave_gang()
