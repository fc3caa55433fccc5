"""Continuous batching: sequences join the running batch between decode steps and leave when done.

The engine owns a cache of slots (``SlotCache`` for the built-in model). Each loop turn it admits
waiting sequences into free slots (one prefill each), then runs one batched decode step for every
running sequence and hands each its next token. A sequence leaves at its end (end-of-sequence token,
a stop string, ``max_tokens``, the context's end) or when its client went away, and its slot goes
to the next waiting one at once: a long generation never holds up a short one. The model runs on
one worker thread (torch releases the GIL), so the event loop keeps serving HTTP meanwhile.

Waiting is bounded: ``submit`` raises ``QueueFullError`` (a 429 for the routes) beyond ``max_waiting``.
An ``EngineObserver`` (the server's Prometheus metrics) hears of each admission, token and ending.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Protocol

import torch

from aidc_trainer.serving.sampling import Sampler, SamplingParams


class QueueFullError(Exception):
    """More sequences wait than the engine holds; retry later."""


class CachedModel(Protocol):
    """A model with a slot cache: ``SlotCache`` for the built-in language model."""

    @property
    def free_slots(self) -> int: ...
    def take(self) -> int: ...
    def release(self, slot: int) -> None: ...
    def length(self, slot: int) -> int: ...
    def prefill(self, slot: int, tokens: torch.Tensor) -> torch.Tensor: ...
    def decode(self, slots: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor: ...


class EngineObserver(Protocol):
    """What the engine reports as it goes (``serving.metrics.GenerationMetrics``)."""

    def admitted(self, generation: Generation) -> None: ...
    def token(self, generation: Generation, seconds: float) -> None: ...
    def finished(self, generation: Generation) -> None: ...


@dataclass(eq=False)
class Generation:
    """One sequence: its prompt, what it generated so far, and why it ended."""

    prompt: list[int]
    params: SamplingParams
    sampler: Sampler
    tokens: list[int] = field(default_factory=list)
    finish_reason: str | None = None  # "stop" or "length", as OpenAI names them
    cancelled: bool = False
    slot: int | None = None
    submitted_at: float = field(default_factory=time.perf_counter)
    first_token_at: float | None = None
    last_token_at: float | None = None
    _news: asyncio.Queue[int | None] = field(default_factory=asyncio.Queue)

    @property
    def done(self) -> bool:
        return self.finish_reason is not None or self.cancelled


class Engine:
    """Generate for many sequences at once over one cached model."""

    def __init__(
        self,
        model: CachedModel,
        *,
        context_length: int,
        max_waiting: int = 64,
        end_token: int | None = None,
        text_of: Callable[[list[int]], str] | None = None,
        observer: EngineObserver | None = None,
    ) -> None:
        self._model = model
        self._observer = observer
        self._context_length = context_length
        self._max_waiting = max_waiting
        self._end_token = end_token
        self._text_of = text_of
        self._waiting: collections.deque[Generation] = collections.deque()
        self._running: list[Generation] = []
        self._wake = asyncio.Event()
        self._worker = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="engine")
        self._loop_task: asyncio.Task[None] | None = None

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    @property
    def running(self) -> int:
        return len(self._running)

    def observe(self, observer: EngineObserver) -> None:
        """Report from now on to ``observer``."""
        self._observer = observer

    def start(self) -> None:
        if self._loop_task is None:
            self._loop_task = asyncio.get_running_loop().create_task(self._loop(), name="engine")

    async def stop(self) -> None:
        if self._loop_task is not None:
            self._loop_task.cancel()
            await asyncio.gather(self._loop_task, return_exceptions=True)
            self._loop_task = None
        self._worker.shutdown(wait=True)

    def submit(self, prompt: list[int], params: SamplingParams) -> Generation:
        """Queue a sequence (ValueError: the prompt does not fit; QueueFullError: too many wait)."""
        if not 1 <= len(prompt) < self._context_length:
            raise ValueError(
                f"the prompt has {len(prompt)} tokens; this model's context holds {self._context_length}, "
                "and at least one must be left to generate"
            )
        if len(self._waiting) >= self._max_waiting:
            raise QueueFullError(f"{len(self._waiting)} requests are already waiting")
        generation = Generation(list(prompt), params, Sampler(params))
        self._waiting.append(generation)
        self._wake.set()
        return generation

    async def tokens(self, generation: Generation) -> AsyncIterator[int]:
        """The generated tokens as they come; leaving early (a client gone) cancels the sequence."""
        try:
            while (token := await generation._news.get()) is not None:
                yield token
        finally:
            if not generation.done:
                generation.cancelled = True
                self._wake.set()

    # --- the loop ------------------------------------------------------------------------------

    async def _loop(self) -> None:
        while True:
            if not self._waiting and not self._running:
                self._wake.clear()
                await self._wake.wait()
            await self._admit()
            self._retire()
            if self._running:
                await self._step()
                self._retire()

    async def _admit(self) -> None:
        while self._waiting and self._model.free_slots:
            generation = self._waiting.popleft()
            if generation.cancelled:
                continue
            generation.slot = self._model.take()
            prompt = torch.tensor(generation.prompt)
            logits = await self._run(self._model.prefill, generation.slot, prompt)
            self._running.append(generation)
            if self._observer is not None:
                self._observer.admitted(generation)
            self._emit(generation, generation.sampler.choose(logits))

    async def _step(self) -> None:
        batch = list(self._running)
        slots = torch.tensor([g.slot for g in batch])
        last = torch.tensor([g.tokens[-1] for g in batch])
        logits = await self._run(self._model.decode, slots, last)
        for row, generation in enumerate(batch):
            if not generation.done:
                self._emit(generation, generation.sampler.choose(logits[row]))

    def _retire(self) -> None:
        for generation in [g for g in self._running if g.done]:
            self._running.remove(generation)
            assert generation.slot is not None
            self._model.release(generation.slot)
            generation.slot = None
            generation._news.put_nowait(None)
            if self._observer is not None:
                self._observer.finished(generation)

    def _emit(self, generation: Generation, token: int) -> None:
        if generation.cancelled:
            return
        if token == self._end_token:
            generation.finish_reason = "stop"
            return
        generation.tokens.append(token)
        now = time.perf_counter()
        if self._observer is not None:
            self._observer.token(generation, now - (generation.last_token_at or generation.submitted_at))
        if generation.first_token_at is None:
            generation.first_token_at = now
        generation.last_token_at = now
        generation._news.put_nowait(token)
        if self._stopped_by_text(generation):
            generation.finish_reason = "stop"
        elif len(generation.tokens) >= generation.params.max_tokens or self._context_full(generation):
            generation.finish_reason = "length"

    def _context_full(self, generation: Generation) -> bool:
        return len(generation.prompt) + len(generation.tokens) >= self._context_length

    def _stopped_by_text(self, generation: Generation) -> bool:
        if not generation.params.stop or self._text_of is None:
            return False
        text = self._text_of(generation.tokens)
        return any(stop in text for stop in generation.params.stop)

    async def _run(self, function: Callable[..., torch.Tensor], *arguments: object) -> torch.Tensor:
        return await asyncio.get_running_loop().run_in_executor(self._worker, function, *arguments)
