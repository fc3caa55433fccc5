"""Serving a reinforcement-learning policy: observations in; action, distribution and value out.

The exported actor-critic returns the actor's head (logits or the Gaussian's mean) and the value;
what a controller wants is the action to take, so the served action is the deterministic policy's
(the most likely class plus the space's start, or the mean clipped to the action bounds), the one
``evaluationReturn`` measured. Discrete policies also return the class probabilities; continuous
ones the mean and the state-independent standard deviation, so a client can sample itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from aidc_trainer.serving.protocol import Array, TensorSpec
from aidc_trainer.serving.servable import Servable, Work


def _bounds(values: list[float | None] | None, fill: float) -> np.ndarray | None:
    if values is None:
        return None
    return np.array([fill if v is None else v for v in values], dtype=np.float32)


class PolicyServable(Servable):
    """The ``reinforcement-learning`` task."""

    task = "reinforcement-learning"

    def __init__(self, module: nn.Module, architecture: Mapping[str, Any], device: torch.device) -> None:
        self._module = module
        self._device = device
        self._discrete = bool(architecture["discrete"])
        observation_dim, action_dim = int(architecture["observationDim"]), int(architecture["actionDim"])
        self._inputs = (TensorSpec("observation", "FP32", (-1, observation_dim)),)
        space = architecture.get("actionSpace") or {}
        self._start = int(space.get("start", 0))
        self._low = _bounds(space.get("low"), -np.inf)
        self._high = _bounds(space.get("high"), np.inf)
        heads: tuple[TensorSpec, ...]
        if self._discrete:
            heads = (
                TensorSpec("action", "INT64", (-1,)),
                TensorSpec("probabilities", "FP32", (-1, action_dim)),
            )
        else:
            heads = (
                TensorSpec("action", "FP32", (-1, action_dim)),
                TensorSpec("mean", "FP32", (-1, action_dim)),
                TensorSpec("std", "FP32", (-1, action_dim)),
            )
        self._outputs = (*heads, TensorSpec("value", "FP32", (-1,)))

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        return self._inputs

    @property
    def outputs(self) -> tuple[TensorSpec, ...]:
        return self._outputs

    def prepare(self, inputs: Mapping[str, Array], parameters: Mapping[str, Any]) -> Work:
        observations = inputs["observation"]
        return Work(arrays={"observation": observations}, rows=len(observations))

    def run(self, arrays: Mapping[str, Array], options: Mapping[str, Any]) -> dict[str, Array]:
        with torch.inference_mode():
            observations = torch.from_numpy(arrays["observation"]).to(self._device, non_blocking=True)
            head, value = self._module(observations)
            head, value = head.float(), value.float()
            outputs: dict[str, Array] = {"value": value.cpu().numpy()}
            if self._discrete:
                probabilities = torch.softmax(head, dim=-1)
                outputs["probabilities"] = probabilities.cpu().numpy()
                outputs["action"] = probabilities.argmax(dim=-1).cpu().numpy() + self._start
                return outputs
            mean = head.cpu().numpy()
            std = self._module.log_std.exp().float().expand_as(head)  # type: ignore[operator]
            outputs["mean"], outputs["std"] = mean, std.cpu().numpy()
            outputs["action"] = np.clip(mean, self._low, self._high) if self._low is not None else mean
            return outputs

    def example(self, rows: int) -> Work:
        shape = (rows, *self._inputs[0].shape[1:])
        return Work(arrays={"observation": np.zeros(shape, dtype=np.float32)}, rows=rows)
