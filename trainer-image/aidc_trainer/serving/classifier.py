"""Serving the image classifier: images in, class probabilities and the predicted class out.

The exported module returns logits; clients want probabilities and an answer, so the softmax and
the argmax run here, on the device, inside the batched forward pass. Images are FP32 in [0, 1]
with the exact shape the manifest declares (the trainer's input shape), one row per image.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from aidc_trainer.serving.protocol import Array, TensorSpec
from aidc_trainer.serving.servable import Servable, Work


class ClassifierServable(Servable):
    """The ``classifier`` task."""

    task = "classifier"

    def __init__(self, module: nn.Module, input_spec: TensorSpec, classes: int, device: torch.device) -> None:
        self._module = module
        self._device = device
        self._inputs = (input_spec,)
        self._outputs = (
            TensorSpec("probabilities", "FP32", (-1, classes)),
            TensorSpec("predicted_class", "INT64", (-1,)),
        )

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        return self._inputs

    @property
    def outputs(self) -> tuple[TensorSpec, ...]:
        return self._outputs

    def prepare(self, inputs: Mapping[str, Array], parameters: Mapping[str, Any]) -> Work:
        images = inputs[self._inputs[0].name]
        return Work(arrays={"images": images}, rows=len(images))

    def run(self, arrays: Mapping[str, Array], options: Mapping[str, Any]) -> dict[str, Array]:
        with torch.inference_mode():
            images = torch.from_numpy(arrays["images"]).to(self._device, non_blocking=True)
            probabilities = torch.softmax(self._module(images).float(), dim=-1)
            predicted = probabilities.argmax(dim=-1)
            return {"probabilities": probabilities.cpu().numpy(), "predicted_class": predicted.cpu().numpy()}

    def example(self, rows: int) -> Work:
        shape = (rows, *self._inputs[0].shape[1:])
        return Work(arrays={"images": np.zeros(shape, dtype=np.float32)}, rows=rows)
