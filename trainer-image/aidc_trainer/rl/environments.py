"""The environments one rank steps: built from a Gymnasium id or a user's ``module:Class``.

Each rank owns ``envsPerRank`` environments, seeded ``seed + rank * envsPerRank + index`` on the
first reset, so no two environments of a gang share a trajectory. They are stepped in a plain
loop (what ``SyncVectorEnv`` does too) and reset on the step an episode ends, so the observation
handed back is always the next episode's first one and the state to checkpoint is this module's
own: the current observations, the episode accumulators, and each environment's internals.

Checkpoints are loaded with ``weights_only=True``, so environments are never pickled. For
Gymnasium's built-in environments (classic control keeps everything in plain attributes) every
wrapper's and the unwrapped environment's numeric attributes (``state``, TimeLimit's
``_elapsed_steps``, ...) and the bit-generator state of ``np_random`` are saved as arrays and
numbers. A user's environment may offer ``get_state()``/``set_state(state)`` (plain containers and
tensors); without them it resumes freshly reset.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from aidc_trainer.config import EnvironmentConfig
from aidc_trainer.errors import ConfigError

_log = logging.getLogger(__name__)

_PLAIN = (bool, int, float, str, type(None))
_SKIPPED = frozenset({"_np_random", "_np_random_seed", "render_mode", "screen", "clock", "isopen"})


def environment_factory(config: EnvironmentConfig) -> Callable[[], gym.Env[Any, Any]]:
    """A function that builds one environment (ConfigError for an unknown id or class)."""
    if config.entry_point is not None:
        module_name, _, class_name = config.entry_point.partition(":")
        try:
            cls = getattr(importlib.import_module(module_name), class_name)
        except (ImportError, AttributeError) as error:
            raise ConfigError(
                f"reinforcementLearning.environment.entryPoint {config.entry_point!r} cannot be "
                f"imported: {error}"
            ) from error
        if not (isinstance(cls, type) and issubclass(cls, gym.Env)):
            raise ConfigError(
                f"reinforcementLearning.environment.entryPoint {config.entry_point!r} is not a "
                "gymnasium.Env subclass"
            )
        return cls  # episodes end when the user's environment says so
    gymnasium_id = str(config.gymnasium_id)
    try:
        gym.spec(gymnasium_id)
    except gym.error.Error as error:
        raise ConfigError(
            f"reinforcementLearning.environment.gymnasiumId {gymnasium_id!r} is not a registered "
            f"Gymnasium environment ({error})"
        ) from error
    return lambda: gym.make(gymnasium_id)


def _chain(env: gym.Env[Any, Any]) -> list[Any]:
    """The wrappers from outermost to the unwrapped environment."""
    chain: list[Any] = [env]
    while isinstance(chain[-1], gym.Wrapper):
        chain.append(chain[-1].env)
    return chain


def _plain_attributes(layer: Any) -> dict[str, Any]:
    """The numbers, flags and arrays of one wrapper or environment (what classic control uses)."""
    saved: dict[str, Any] = {}
    for name, value in vars(layer).items():
        if name in _SKIPPED:
            continue
        if isinstance(value, np.ndarray) and value.dtype.kind in "biuf":
            saved[name] = {"array": torch.from_numpy(value.copy()), "dtype": str(value.dtype)}
        elif isinstance(value, np.generic) and value.dtype.kind in "biuf":
            saved[name] = {"scalar": value.item(), "dtype": str(value.dtype)}
        elif isinstance(value, _PLAIN):
            saved[name] = {"value": value}
    return saved


def _restore_attributes(layer: Any, saved: dict[str, Any]) -> None:
    for name, entry in saved.items():
        if "array" in entry:
            setattr(layer, name, entry["array"].numpy().astype(entry["dtype"]))
        elif "scalar" in entry:
            setattr(layer, name, np.dtype(entry["dtype"]).type(entry["scalar"]))
        else:
            setattr(layer, name, entry["value"])


def capture_environment(env: gym.Env[Any, Any], custom: bool) -> dict[str, Any] | None:
    """One environment's state in weights-only form; None when it cannot be captured."""
    if custom:
        get_state = getattr(env.unwrapped, "get_state", None)
        return {"custom": get_state()} if callable(get_state) else None
    return {
        "layers": [_plain_attributes(layer) for layer in _chain(env)],
        "npRandom": env.unwrapped.np_random.bit_generator.state,
    }


def restore_environment(env: gym.Env[Any, Any], state: dict[str, Any]) -> None:
    """Put an environment built by the same factory back into a captured state."""
    if "custom" in state:
        env.unwrapped.set_state(state["custom"])  # type: ignore[attr-defined]
        return
    layers = _chain(env)
    if len(layers) != len(state["layers"]):
        raise ValueError("the checkpointed environment has a different wrapper chain")
    for layer, saved in zip(layers, state["layers"], strict=True):
        _restore_attributes(layer, saved)
    env.unwrapped.np_random.bit_generator.state = state["npRandom"]


@dataclass
class StepResult:
    """One step of every environment; ``finished`` lists the returns of the episodes that ended."""

    observations: np.ndarray
    rewards: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    finished: list[tuple[float, int]]


class EnvironmentSet:
    """The environments of one rank, stepped together and reset as their episodes end."""

    def __init__(self, config: EnvironmentConfig, count: int, seed: int) -> None:
        factory = environment_factory(config)
        self.custom = config.entry_point is not None
        try:
            self.envs = [factory() for _ in range(count)]
        except gym.error.DependencyNotInstalled as error:  # e.g. Box2D ids without their extra
            raise ConfigError(
                f"reinforcementLearning.environment cannot be built in this image: {error}"
            ) from error
        self.observation_space = self.envs[0].observation_space
        self.action_space = self.envs[0].action_space
        self.observations = np.stack(
            [
                np.asarray(env.reset(seed=seed + index)[0], dtype=np.float32)
                for index, env in enumerate(self.envs)
            ]
        )
        self.returns = np.zeros(count, dtype=np.float64)
        self.lengths = np.zeros(count, dtype=np.int64)

    def step(self, actions: np.ndarray) -> StepResult:
        """Step every environment with its action; an ended episode resets in the same step."""
        count = len(self.envs)
        rewards = np.zeros(count, dtype=np.float32)
        terminated = np.zeros(count, dtype=bool)
        truncated = np.zeros(count, dtype=bool)
        finished: list[tuple[float, int]] = []
        for index, env in enumerate(self.envs):
            observation, reward, term, trunc, _ = env.step(actions[index])
            rewards[index], terminated[index], truncated[index] = reward, term, trunc
            self.returns[index] += float(reward)
            self.lengths[index] += 1
            if term or trunc:
                finished.append((float(self.returns[index]), int(self.lengths[index])))
                self.returns[index], self.lengths[index] = 0.0, 0
                observation, _ = env.reset()
            self.observations[index] = np.asarray(observation, dtype=np.float32)
        return StepResult(self.observations.copy(), rewards, terminated, truncated, finished)

    def state_dict(self) -> dict[str, Any]:
        """Observations, episode accumulators and every environment's internals (weights-only)."""
        captured = [capture_environment(env, self.custom) for env in self.envs]
        return {
            "observations": torch.from_numpy(self.observations.copy()),
            "returns": torch.from_numpy(self.returns.copy()),
            "lengths": torch.from_numpy(self.lengths.copy()),
            "environments": None if any(state is None for state in captured) else captured,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume where ``state_dict`` left off; without environment states, keep fresh episodes."""
        if state.get("environments") is None:
            _log.warning("the environments cannot be restored (no get_state/set_state); resuming from reset")
            return
        if len(state["environments"]) != len(self.envs):
            raise ValueError("the checkpoint holds a different number of environments per rank")
        for env, saved in zip(self.envs, state["environments"], strict=True):
            restore_environment(env, saved)
        self.observations = state["observations"].numpy().astype(np.float32)
        self.returns = state["returns"].numpy().astype(np.float64)
        self.lengths = state["lengths"].numpy().astype(np.int64)

    def close(self) -> None:
        for env in self.envs:
            env.close()
