"""The built-in tasks, by the name ``spec.trainer.task`` uses."""

from __future__ import annotations

from aidc_trainer.errors import ConfigError
from aidc_trainer.tasks.base import Exported, Task, TaskContext

__all__ = ["Exported", "Task", "TaskContext", "build_task"]


def build_task(context: TaskContext) -> Task:
    """The task the config names, with its data loaded and its models on the device."""
    name = context.config.task
    if name == "classifier":
        from aidc_trainer.tasks.classifier import ClassifierTask

        return ClassifierTask(context)
    if name == "gan":
        from aidc_trainer.tasks.gan import GanTask

        return GanTask(context)
    if name == "language-model" and context.config.language_model.pretrained is not None:
        from aidc_trainer.tasks.pretrained_language_model import PretrainedLanguageModelTask

        return PretrainedLanguageModelTask(context)
    if name == "language-model":
        from aidc_trainer.tasks.language_model import LanguageModelTask

        return LanguageModelTask(context)
    if name == "reinforcement-learning":
        from aidc_trainer.tasks.reinforcement_learning import ReinforcementLearningTask

        return ReinforcementLearningTask(context)
    raise ConfigError(f"unknown task {name!r}")
