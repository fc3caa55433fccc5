"""Incremental decoding of a Hugging Face causal LM: the same slots as ``SlotCache``, over the
model's own key/value cache.

Each slot holds the ``past_key_values`` the model returned for its sequence (a ``DynamicCache``
that grows by one position per step). ``prefill`` runs a prompt once; ``decode`` feeds each running
sequence its last token against its own cache. Sequences join and leave between steps exactly as
with the built-in model, so the engine's continuous batching is the same; the forward of a decode
step runs per sequence (the cached lengths differ, and a model's cache is one tensor per layer for
the whole batch), which keeps any architecture ``transformers`` loads correct at the cost of the
batched matrix products the built-in model's cache gets.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import nn


class HFSlotCache:
    """Up to ``slots`` sequences of ``model`` (a ``transformers`` causal LM), each with its cache."""

    def __init__(self, model: nn.Module, slots: int, context_length: int) -> None:
        self.model = model
        self.context_length = context_length
        # transformers 5.x names the cache argument ``cache``; 4.x ``past_key_values``
        self._cache_argument = (
            "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
        )
        self._caches: list[Any] = [None] * slots
        self._lengths = [0] * slots
        self._free = list(range(slots - 1, -1, -1))

    @property
    def capacity(self) -> int:
        return len(self._lengths)

    @property
    def free_slots(self) -> int:
        return len(self._free)

    def take(self) -> int:
        """A free slot (IndexError when none is)."""
        if not self._free:
            raise IndexError("every slot of the cache is taken")
        return self._free.pop()

    def release(self, slot: int) -> None:
        """Give a finished (or cancelled) sequence's slot back, and drop its cache."""
        if slot in self._free:
            raise ValueError(f"slot {slot} is already free")
        self._caches[slot], self._lengths[slot] = None, 0
        self._free.append(slot)

    def length(self, slot: int) -> int:
        return self._lengths[slot]

    @torch.no_grad()
    def prefill(self, slot: int, tokens: torch.Tensor) -> torch.Tensor:
        """Run a prompt (T,) into ``slot``; the logits of its last position (vocab,)."""
        length = int(tokens.shape[0])
        if not 1 <= length <= self.context_length:
            raise ValueError(f"a prompt of {length} tokens does not fit the context of {self.context_length}")
        out = self.model(input_ids=tokens[None].to(self._device), use_cache=True)
        self._caches[slot], self._lengths[slot] = _cache_of(out), length
        return out.logits[0, -1].float()  # type: ignore[no-any-return]

    @torch.no_grad()
    def decode(self, slots: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """One step of every sequence in ``slots`` (B,), fed ``tokens`` (B,); their next logits (B, vocab)."""
        rows = []
        for slot, token in zip(slots.tolist(), tokens.tolist(), strict=True):
            if self._lengths[slot] >= self.context_length:
                raise ValueError(f"a sequence would outgrow the context of {self.context_length} tokens")
            ids = torch.tensor([[token]], device=self._device)
            out = self.model(input_ids=ids, use_cache=True, **{self._cache_argument: self._caches[slot]})
            self._caches[slot] = _cache_of(out)
            self._lengths[slot] += 1
            rows.append(out.logits[0, -1].float())
        return torch.stack(rows)

    @property
    def _device(self) -> torch.device:
        return next(self.model.parameters()).device


def _cache_of(out: Any) -> Any:
    cache = out.get("cache")
    return cache if cache is not None else out.get("past_key_values")
