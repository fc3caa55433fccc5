"""Serving the language model: token ids in, next-token logits and a greedy continuation out.

The exported transformer returns logits for every position; a client wants the next token, so
the server returns the last position's logits and its argmax, and, when the request's
``max_new_tokens`` parameter asks for it, a greedy continuation of that many tokens. Greedy and
honest: no sampling, no KV cache; a sequence that outgrows the context keeps its last
``contextLength`` tokens, as in training. Prompts of equal length and equal ``max_new_tokens``
share a forward pass; others wait for a batch of their own.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import numpy as np
import torch
from torch import nn

from aidc_trainer.serving.protocol import Array, ProtocolError, TensorSpec
from aidc_trainer.serving.servable import Servable, Work

MAX_NEW_TOKENS: Final = 256


class LanguageModelServable(Servable):
    """The ``language-model`` task."""

    task = "language-model"

    def __init__(
        self,
        module: nn.Module,
        ids_spec: TensorSpec,
        vocab_size: int,
        context_length: int,
        device: torch.device,
    ) -> None:
        self._module = module
        self._device = device
        self._vocab_size = vocab_size
        self._context_length = context_length
        self._inputs = (ids_spec,)
        self._outputs = (
            TensorSpec("logits", "FP32", (-1, vocab_size)),
            TensorSpec("next_token", "INT64", (-1,)),
            TensorSpec("generated_ids", "INT64", (-1, -1)),
        )

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        return self._inputs

    @property
    def outputs(self) -> tuple[TensorSpec, ...]:
        return self._outputs

    def prepare(self, inputs: Mapping[str, Array], parameters: Mapping[str, Any]) -> Work:
        name = self._inputs[0].name
        ids = inputs[name]
        length = ids.shape[1]
        if not 1 <= length <= self._context_length:
            raise ProtocolError(
                f"input '{name}' must hold 1 to {self._context_length} tokens per row, got {length}"
            )
        if ids.min() < 0 or ids.max() >= self._vocab_size:
            raise ProtocolError(f"input '{name}': token ids must be in [0, {self._vocab_size - 1}]")
        new_tokens = parameters.get("max_new_tokens", 0)
        if (
            isinstance(new_tokens, bool)
            or not isinstance(new_tokens, int)
            or not 0 <= new_tokens <= MAX_NEW_TOKENS
        ):
            raise ProtocolError(f"parameter 'max_new_tokens' must be an integer in [0, {MAX_NEW_TOKENS}]")
        return Work(
            arrays={"ids": ids},
            rows=len(ids),
            key=(length, new_tokens),
            options={"max_new_tokens": new_tokens},
        )

    def run(self, arrays: Mapping[str, Array], options: Mapping[str, Any]) -> dict[str, Array]:
        new_tokens = int(options.get("max_new_tokens", 0))
        with torch.inference_mode():
            ids = torch.from_numpy(arrays["ids"]).to(self._device, non_blocking=True)
            logits = self._module(ids)[:, -1, :].float()
            next_token = logits.argmax(dim=-1)
            generated = [next_token]
            sequence = ids
            for _ in range(new_tokens - 1):
                sequence = torch.cat([sequence, generated[-1][:, None]], dim=1)[:, -self._context_length :]
                generated.append(self._module(sequence)[:, -1, :].argmax(dim=-1))
            continuation = torch.stack(generated, dim=1)[:, :new_tokens]
            return {
                "logits": logits.cpu().numpy(),
                "next_token": next_token.cpu().numpy(),
                "generated_ids": continuation.cpu().numpy(),
            }

    def example(self, rows: int) -> Work:
        ids = np.zeros((rows, min(8, self._context_length)), dtype=np.int64)
        return Work(arrays={"ids": ids}, rows=rows, key=(ids.shape[1], 1), options={"max_new_tokens": 1})
