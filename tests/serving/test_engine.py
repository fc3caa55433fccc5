"""Continuous batching over the built-in model's slot cache: short requests finish while long ones
generate, a seed reproduces its tokens whatever else runs, a client that leaves frees its slot, and
the waiting queue is bounded."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import torch

from aidc_trainer.models import LanguageModel
from aidc_trainer.serving.engine import Engine, Generation, QueueFullError
from aidc_trainer.serving.kv_cache import SlotCache
from aidc_trainer.serving.sampling import SamplingParams


def _model() -> LanguageModel:
    torch.manual_seed(0)
    return LanguageModel(vocab_size=64, context_length=48, layers=2, heads=2, embedding=32).eval()


def _engine(slots: int = 4, **options: Any) -> tuple[Engine, SlotCache]:
    cache = SlotCache(_model(), slots=slots)
    return Engine(cache, context_length=48, **options), cache


async def _collect(
    engine: Engine, generation: Generation, finished: list[str], name: str, started: asyncio.Event | None = None
) -> list[int]:
    tokens = []
    async for token in engine.tokens(generation):
        tokens.append(token)
        if started is not None:
            started.set()
    finished.append(name)
    return tokens


def test_a_short_request_finishes_while_a_long_one_is_still_generating() -> None:
    async def scenario() -> None:
        engine, _ = _engine()
        engine.start()
        finished: list[str] = []
        long = engine.submit([1, 2, 3], SamplingParams(max_tokens=40, temperature=0))
        generating = asyncio.Event()
        first = asyncio.create_task(_collect(engine, long, finished, "long", generating))
        await generating.wait()  # the long one is running (its first token is out) before the short one arrives
        short = engine.submit([4, 5], SamplingParams(max_tokens=3, temperature=0))
        short_tokens = await _collect(engine, short, finished, "short")
        assert engine.running == 1 and not long.done  # the long one still generates
        long_tokens = await first
        assert finished == ["short", "long"]
        assert (len(short_tokens), short.finish_reason) == (3, "length")
        assert (len(long_tokens), long.finish_reason) == (40, "length")
        await engine.stop()

    asyncio.run(scenario())


def test_greedy_batched_tokens_are_those_of_the_full_forward() -> None:
    async def scenario() -> None:
        engine, cache = _engine()
        engine.start()
        prompts = [[1, 2, 3], [7, 8, 9, 10, 11], [20]]
        generations = [engine.submit(p, SamplingParams(max_tokens=8, temperature=0)) for p in prompts]
        outputs = await asyncio.gather(*(_collect(engine, g, [], "") for g in generations))
        for prompt, output in zip(prompts, outputs, strict=True):
            sequence = list(prompt)
            for _ in range(8):
                with torch.no_grad():
                    sequence.append(int(cache.model(torch.tensor([sequence]))[0, -1].argmax()))
            assert output == sequence[len(prompt) :]
        await engine.stop()

    asyncio.run(scenario())


def test_the_same_seed_gives_the_same_tokens_whatever_else_runs() -> None:
    async def sampled(companions: int) -> list[int]:
        engine, _ = _engine()
        engine.start()
        params = SamplingParams(max_tokens=12, temperature=0.9, top_p=0.9, seed=1234)
        others = [
            engine.submit([9, 9, 9 + i], SamplingParams(max_tokens=12, temperature=1.0)) for i in range(companions)
        ]
        mine = engine.submit([3, 1, 4, 1, 5], params)
        outputs = await asyncio.gather(_collect(engine, mine, [], ""), *(_collect(engine, g, [], "") for g in others))
        await engine.stop()
        return outputs[0]

    alone, crowded = asyncio.run(sampled(0)), asyncio.run(sampled(3))
    assert alone == crowded and len(alone) == 12
    assert len(set(alone)) > 1  # sampled, not one token over and over


def test_a_client_that_leaves_mid_stream_frees_its_slot() -> None:
    async def scenario() -> None:
        engine, cache = _engine(slots=1)
        engine.start()
        generation = engine.submit([1, 2], SamplingParams(max_tokens=40, temperature=0))
        stream = engine.tokens(generation)
        assert isinstance(await anext(stream), int)
        await stream.aclose()  # the client went away
        for _ in range(100):
            if cache.free_slots == 1:
                break
            await asyncio.sleep(0.01)
        assert cache.free_slots == 1 and generation.cancelled and len(generation.tokens) < 40
        nxt = engine.submit([3], SamplingParams(max_tokens=2, temperature=0))  # the slot serves the next
        assert len([t async for t in engine.tokens(nxt)]) == 2
        await engine.stop()

    asyncio.run(scenario())


def test_the_waiting_queue_is_bounded_and_a_prompt_must_fit() -> None:
    async def scenario() -> None:
        engine, _ = _engine(slots=1, max_waiting=2)  # not started: nothing leaves the queue
        engine.submit([1], SamplingParams())
        engine.submit([2], SamplingParams())
        with pytest.raises(QueueFullError):
            engine.submit([3], SamplingParams())
        with pytest.raises(ValueError, match="context holds 48"):
            engine.submit(list(range(48)), SamplingParams())
        await engine.stop()

    asyncio.run(scenario())


def test_the_end_token_and_stop_strings_end_a_sequence_as_stop() -> None:
    async def scenario() -> None:
        cache = SlotCache(_model(), slots=2)
        greedy = SamplingParams(max_tokens=10, temperature=0)
        probe = Engine(cache, context_length=48)
        probe.start()
        reference = [t async for t in probe.tokens(probe.submit([5, 6], greedy))]
        await probe.stop()
        # the first token unlike those before it: ending there must keep exactly those before it
        cut = next(i for i in range(1, len(reference)) if reference[i] not in reference[:i])
        words = lambda ids: " ".join(f"<{i}>" for i in ids)  # noqa: E731
        engine = Engine(cache, context_length=48, end_token=reference[cut], text_of=words)
        engine.start()
        ended = engine.submit([5, 6], greedy)
        assert [t async for t in engine.tokens(ended)] == reference[:cut] and ended.finish_reason == "stop"
        stop = SamplingParams(max_tokens=10, temperature=0, stop=(f"<{reference[cut]}>",))
        await engine.stop()
        engine = Engine(cache, context_length=48, text_of=words)
        engine.start()
        stopped = engine.submit([5, 6], stop)  # the stop string is the text of that token: it is sent, then stops
        assert [t async for t in engine.tokens(stopped)] == reference[: cut + 1] and stopped.finish_reason == "stop"
        await engine.stop()

    asyncio.run(scenario())
