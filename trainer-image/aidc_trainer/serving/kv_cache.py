"""Incremental decoding of the built-in language model: a key/value cache of fixed slots.

The cache holds, for every block, the keys and values of up to ``slots`` sequences of up to the
model's context length, allocated once. A sequence takes a free slot, ``prefill`` runs its prompt
through the model once and stores every position's keys and values; each ``decode`` step then
feeds one new token per running sequence, all of them in one batched forward, each attending to its
own cached positions only (a mask per row: the sequences have different lengths). Sequences join
and leave between steps, which is what continuous batching needs: nothing is recomputed and no
sequence waits for another to finish.

The logits equal those of the full forward over the same tokens (tests/serving/test_kv_cache.py).
"""

from __future__ import annotations

from typing import cast

import torch
import torch.nn.functional as F

from aidc_trainer.models import DecoderBlock, LanguageModel


class SlotCache:
    """Keys and values of up to ``slots`` sequences for every block of ``model``."""

    def __init__(self, model: LanguageModel, slots: int) -> None:
        self.blocks = cast(list[DecoderBlock], list(model.blocks))
        first = self.blocks[0]
        embedding = model.tokens.embedding_dim
        heads = int(first.heads)
        parameter = next(model.parameters())
        shape = (len(self.blocks), slots, heads, model.context_length, embedding // heads)
        self.model = model
        self.keys = torch.zeros(shape, dtype=parameter.dtype, device=parameter.device)
        self.values = torch.zeros_like(self.keys)
        self.lengths = torch.zeros(slots, dtype=torch.int64, device=parameter.device)
        self._free = list(range(slots - 1, -1, -1))

    @property
    def capacity(self) -> int:
        return int(self.lengths.shape[0])

    @property
    def free_slots(self) -> int:
        return len(self._free)

    def take(self) -> int:
        """A free slot (IndexError when none is)."""
        if not self._free:
            raise IndexError("every slot of the cache is taken")
        slot = self._free.pop()
        self.lengths[slot] = 0
        return slot

    def release(self, slot: int) -> None:
        """Give a finished (or cancelled) sequence's slot back."""
        if slot in self._free:
            raise ValueError(f"slot {slot} is already free")
        self.lengths[slot] = 0
        self._free.append(slot)

    def length(self, slot: int) -> int:
        return int(self.lengths[slot])

    @torch.no_grad()
    def prefill(self, slot: int, tokens: torch.Tensor) -> torch.Tensor:
        """Run a prompt (T,) into ``slot``; the logits of its last position (vocab,)."""
        model, length = self.model, int(tokens.shape[0])
        if not 1 <= length <= model.context_length:
            raise ValueError(
                f"a prompt of {length} tokens does not fit the context of {model.context_length}"
            )
        x = model.tokens(tokens[None]) + model.positions(torch.arange(length, device=tokens.device))
        for index, block in enumerate(self.blocks):
            q, k, v = block.heads_of(x)
            self.keys[index, slot, :, :length] = k[0]
            self.values[index, slot, :, :length] = v[0]
            x = block.after_attention(x, F.scaled_dot_product_attention(q, k, v, is_causal=True))
        self.lengths[slot] = length
        return model.head(model.norm(x[:, -1]))[0]  # type: ignore[no-any-return]

    @torch.no_grad()
    def decode(self, slots: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """One step of every sequence in ``slots`` (B,), fed ``tokens`` (B,); their next logits (B, vocab)."""
        model = self.model
        positions = self.lengths[slots]
        if int(positions.max()) >= model.context_length:
            raise ValueError(f"a sequence would outgrow the context of {model.context_length} tokens")
        span = int(positions.max()) + 1
        visible = torch.arange(span, device=tokens.device)[None, :] <= positions[:, None]  # (B, span)
        mask = visible[:, None, None, :]
        x = (model.tokens(tokens) + model.positions(positions))[:, None, :]
        for index, block in enumerate(self.blocks):
            q, k, v = block.heads_of(x)
            self.keys[index, slots, :, positions] = k[:, :, 0]
            self.values[index, slots, :, positions] = v[:, :, 0]
            keys = self.keys[index, slots, :, :span]
            values = self.values[index, slots, :, :span]
            x = block.after_attention(x, F.scaled_dot_product_attention(q, keys, values, attn_mask=mask))
        self.lengths[slots] = positions + 1
        return model.head(model.norm(x[:, 0]))  # type: ignore[no-any-return]
