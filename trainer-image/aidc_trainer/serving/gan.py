"""Serving the GAN's generator: latent noise (or just a count) in, generated images out.

Only the generator is exported (the discriminator has no use at inference). A client either
sends its own latent vectors (reproducible, and the way to interpolate between images) or asks
for ``n`` images and lets the server draw the noise, from the request's ``seed`` parameter when
given. The noise is standard normal, as in training.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import numpy as np
import torch
from torch import nn

from aidc_trainer.serving.protocol import Array, ProtocolError, TensorSpec
from aidc_trainer.serving.servable import Servable, Work

COUNT_INPUT: Final = "n"
MAX_COUNT: Final = 4096  # the batcher refuses more than maxBatchSize rows anyway


class GeneratorServable(Servable):
    """The ``gan`` task."""

    task = "gan"

    def __init__(
        self, module: nn.Module, latent_spec: TensorSpec, image_spec: TensorSpec, device: torch.device
    ) -> None:
        self._module = module
        self._device = device
        self._latent = TensorSpec(latent_spec.name, latent_spec.datatype, latent_spec.shape, optional=True)
        self._inputs = (self._latent, TensorSpec(COUNT_INPUT, "INT64", (1,), optional=True))
        self._outputs = (image_spec,)

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        return self._inputs

    @property
    def outputs(self) -> tuple[TensorSpec, ...]:
        return self._outputs

    def prepare(self, inputs: Mapping[str, Array], parameters: Mapping[str, Any]) -> Work:
        if (self._latent.name in inputs) == (COUNT_INPUT in inputs):
            raise ProtocolError(f"send exactly one of the inputs '{self._latent.name}' and '{COUNT_INPUT}'")
        if self._latent.name in inputs:
            latent = inputs[self._latent.name]
            return Work(arrays={"latent": latent}, rows=len(latent))
        count = int(inputs[COUNT_INPUT][0])
        if not 1 <= count <= MAX_COUNT:  # checked before drawing: the noise is allocated here
            raise ProtocolError(f"input '{COUNT_INPUT}' must be in [1, {MAX_COUNT}], got {count}")
        seed = parameters.get("seed")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
            raise ProtocolError(f"parameter 'seed' must be a non-negative integer, got {seed!r}")
        latent = np.random.default_rng(seed).standard_normal((count, self._latent.shape[1]), dtype=np.float32)
        return Work(arrays={"latent": latent}, rows=count)

    def run(self, arrays: Mapping[str, Array], options: Mapping[str, Any]) -> dict[str, Array]:
        with torch.inference_mode():
            latent = torch.from_numpy(arrays["latent"]).to(self._device, non_blocking=True)
            images = self._module(latent).float()
            return {self._outputs[0].name: images.cpu().numpy()}

    def example(self, rows: int) -> Work:
        return Work(arrays={"latent": np.zeros((rows, self._latent.shape[1]), dtype=np.float32)}, rows=rows)
