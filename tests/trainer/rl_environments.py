"""Users' own environments for the tests, loaded through ``entryPoint`` like a user's image would."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np


class Corridor(gym.Env[np.ndarray, int]):
    """Walk left or right on a line from a random start; the episode ends at either end or after 30 steps."""

    observation_space = gym.spaces.Box(-10.0, 10.0, shape=(1,), dtype=np.float32)
    action_space = gym.spaces.Discrete(2)

    def __init__(self) -> None:
        self.position = 0
        self.steps = 0

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        self.position, self.steps = int(self.np_random.integers(-3, 4)), 0
        return np.array([self.position], dtype=np.float32), {}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        self.position += 1 if action else -1
        self.steps += 1
        terminated = abs(self.position) >= 5
        return np.array([self.position], dtype=np.float32), float(self.position > 0), terminated, self.steps >= 30, {}


class SavableCorridor(Corridor):
    """The same, with the optional state pair the trainer uses to checkpoint it."""

    def get_state(self) -> dict[str, Any]:
        return {"position": self.position, "steps": self.steps, "random": self.np_random.bit_generator.state}

    def set_state(self, state: dict[str, Any]) -> None:
        self.position, self.steps = int(state["position"]), int(state["steps"])
        self.np_random.bit_generator.state = state["random"]
