"""The key/value cache of the built-in language model: cached decoding gives the full forward's logits,
for sequences of different lengths batched together and for sequences that join and leave mid-run."""

from __future__ import annotations

import pytest
import torch

from aidc_trainer.models import LanguageModel
from aidc_trainer.serving.kv_cache import SlotCache


@pytest.fixture(scope="module")
def model() -> LanguageModel:
    torch.manual_seed(0)
    return LanguageModel(vocab_size=64, context_length=24, layers=2, heads=2, embedding=32).eval()


def full_logits(model: LanguageModel, tokens: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.tensor([tokens]))[0, -1]


def test_prefill_and_decode_give_the_logits_of_the_full_forward(model: LanguageModel) -> None:
    cache = SlotCache(model, slots=3)
    prompts = [[1, 2, 3], [4, 5, 6, 7, 8, 9, 10], [11]]
    slots = [cache.take() for _ in prompts]
    for slot, prompt in zip(slots, prompts, strict=True):
        assert torch.allclose(cache.prefill(slot, torch.tensor(prompt)), full_logits(model, prompt), atol=1e-5)
    sequences = [list(p) for p in prompts]
    for _ in range(6):  # greedy, three sequences of three lengths in one batch per step
        nexts = [int(full_logits(model, s).argmax()) for s in sequences]
        for sequence, token in zip(sequences, nexts, strict=True):
            sequence.append(token)
        logits = cache.decode(torch.tensor(slots), torch.tensor(nexts))
        for row, sequence in enumerate(sequences):
            assert torch.allclose(logits[row], full_logits(model, sequence), atol=1e-5)
    assert [cache.length(s) for s in slots] == [len(s) for s in sequences]


def test_a_sequence_joins_a_running_batch_and_another_leaves_without_disturbing_either(model: LanguageModel) -> None:
    cache = SlotCache(model, slots=2)
    long_slot = cache.take()
    long = [5, 6, 7]
    cache.prefill(long_slot, torch.tensor(long))
    for token in (8, 9):  # the long one runs alone first
        long.append(token)
        cache.decode(torch.tensor([long_slot]), torch.tensor([token]))
    short_slot = cache.take()
    short = [30, 31]
    cache.prefill(short_slot, torch.tensor(short))  # joins between two steps
    long.append(12)
    short.append(40)
    logits = cache.decode(torch.tensor([long_slot, short_slot]), torch.tensor([12, 40]))
    assert torch.allclose(logits[0], full_logits(model, long), atol=1e-5)
    assert torch.allclose(logits[1], full_logits(model, short), atol=1e-5)
    cache.release(short_slot)  # the short one finished: its slot is free for the next
    assert cache.free_slots == 1
    again = cache.take()
    assert torch.allclose(cache.prefill(again, torch.tensor([1, 2])), full_logits(model, [1, 2]), atol=1e-5)
    long.append(13)
    assert torch.allclose(
        cache.decode(torch.tensor([long_slot]), torch.tensor([13]))[0], full_logits(model, long), atol=1e-5
    )


def test_the_cache_refuses_what_does_not_fit(model: LanguageModel) -> None:
    cache = SlotCache(model, slots=1)
    slot = cache.take()
    with pytest.raises(IndexError):
        cache.take()
    with pytest.raises(ValueError, match="does not fit the context of 24"):
        cache.prefill(slot, torch.arange(25))
    cache.prefill(slot, torch.arange(24))
    with pytest.raises(ValueError, match="outgrow the context"):
        cache.decode(torch.tensor([slot]), torch.tensor([1]))
    cache.release(slot)
    with pytest.raises(ValueError, match="already free"):
        cache.release(slot)
