"""Dynamic batching: concurrent requests share one forward pass, and a lone request never waits.

A forward pass over 32 rows costs little more than over one (on a GPU almost nothing more), so
requests that arrive while the model is busy are gathered into the next batch, up to
``max_batch_size`` rows, and split back per request afterwards. Rows are counted, not requests: a
request of 8 rows fills a quarter of a batch of 32. Requests only share a batch when their
``Work.key`` is equal.

When the model is idle, an arriving request runs at once: waiting for company that may never come
is a latency tax at low load (Triton's dynamic batcher and continuous batching behave so too).
``max_delay`` bounds only how long a batch that formed while the model was busy may wait for more
rows once the model is free, counted from its oldest request's arrival; under load the previous
pass has usually spent it already. One inference thread is enough: the device runs one forward
pass at a time anyway, and the event loop stays free to answer health checks.

A pass that fails is retried request by request, so one request the model cannot run fails alone
and never takes its batch-mates with it; a request whose client went away leaves the queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from aidc_trainer.serving.metrics import ServerMetrics
from aidc_trainer.serving.protocol import Array, ProtocolError
from aidc_trainer.serving.servable import Work

log = logging.getLogger(__name__)

RunBatch = Callable[[Mapping[str, Array], Mapping[str, Any]], dict[str, Array]]


def plan_batch(queue: Sequence[Work], max_rows: int) -> tuple[list[int], bool]:
    """Which queued works form the next batch, and whether that batch is full.

    The head of the queue always goes first (no request starves); later works join in arrival
    order while they share the head's key and fit. The batch is full when it holds ``max_rows``
    rows or the next work of the same key does not fit: waiting longer would not make it bigger.
    """
    if not queue:
        return [], False
    key = queue[0].key
    chosen: list[int] = []
    rows = 0
    for index, work in enumerate(queue):
        if work.key != key:
            continue
        if chosen and rows + work.rows > max_rows:
            return chosen, True
        chosen.append(index)
        rows += work.rows
    return chosen, rows >= max_rows


def stack_rows(works: Sequence[Work]) -> dict[str, Array]:
    """Concatenate the works' arrays along the row dimension, input by input."""
    names = works[0].arrays.keys()
    return {name: np.concatenate([work.arrays[name] for work in works], axis=0) for name in names}


def split_rows(outputs: Mapping[str, Array], rows: Sequence[int]) -> list[dict[str, Array]]:
    """Cut each batched output back into per-request pieces of ``rows`` rows, in order."""
    total = sum(rows)
    for name, array in outputs.items():
        if array.shape[:1] != (total,):
            raise RuntimeError(f"output {name!r} has shape {array.shape}, expected {total} rows")
    bounds = np.cumsum([0, *rows])
    return [
        {name: array[start:stop] for name, array in outputs.items()}
        for start, stop in itertools.pairwise(bounds)
    ]


@dataclass(eq=False)
class _Pending:
    work: Work
    future: asyncio.Future[dict[str, Array]]
    enqueued: float


def _fail(batch: Sequence[_Pending], error: BaseException) -> None:
    for pending in batch:
        if not pending.future.done():
            pending.future.set_exception(error)


class DynamicBatcher:
    """Gathers submitted work into batches and runs them on a single inference thread."""

    def __init__(
        self,
        run: RunBatch,
        *,
        max_batch_size: int,
        max_delay: float,
        metrics: ServerMetrics | None = None,
    ) -> None:
        if max_batch_size < 1 or max_delay < 0:
            raise ValueError("max_batch_size must be >= 1 and max_delay >= 0")
        self._run = run
        self.max_batch_size = max_batch_size
        self.max_delay = max_delay
        self._metrics = metrics
        self._queue: list[_Pending] = []
        self._arrived = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="aidc-inference")
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start gathering; call from the event loop that will submit work."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._gather_forever(), name="aidc-batcher")

    async def close(self) -> None:
        """Stop gathering; requests still queued fail with 503 rather than hang."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        _fail(self._queue, ProtocolError("the server is shutting down", status=503))
        self._queue.clear()
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def submit(self, work: Work) -> dict[str, Array]:
        """Queue ``work`` and wait for its share of a batch's outputs."""
        if work.rows > self.max_batch_size:
            raise ProtocolError(
                f"the request has {work.rows} rows but this server takes at most {self.max_batch_size} "
                "per request (maxBatchSize); split it"
            )
        if self._task is None:
            raise ProtocolError("the model is not being served", status=503)
        future: asyncio.Future[dict[str, Array]] = asyncio.get_running_loop().create_future()
        self._queue.append(_Pending(work, future, time.monotonic()))
        self._arrived.set()
        return await future

    @property
    def queued_rows(self) -> int:
        """Rows waiting for a pass whose clients still wait for them (for tests and the curious)."""
        return sum(pending.work.rows for pending in self._queue if not pending.future.done())

    async def warm_up(self, work: Work) -> dict[str, Array]:
        """Run ``work`` alone in the inference thread, outside the queue and the metrics."""
        return await asyncio.get_running_loop().run_in_executor(
            self._executor, self._run, work.arrays, work.options
        )

    def _prune(self) -> None:
        # A client that went away cancels its future; its rows must not take room in a batch.
        self._queue = [pending for pending in self._queue if not pending.future.done()]

    async def _next_batch(self) -> list[_Pending]:
        """The next batch to run: at once after an idle spell, else once full or due (empty: look again)."""
        self._prune()
        if not self._queue:  # the model is idle: whoever arrives first goes without waiting
            while not self._queue:
                self._arrived.clear()
                await self._arrived.wait()
                self._prune()
            return self._take(self._plan()[0])
        head = self._queue[0]
        deadline = head.enqueued + self.max_delay
        chosen, full = self._plan()
        while not full and (remaining := deadline - time.monotonic()) > 0:
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), remaining)
            self._prune()
            if not self._queue or self._queue[0] is not head:
                return []
            chosen, full = self._plan()
        return self._take(chosen)

    def _plan(self) -> tuple[list[int], bool]:
        return plan_batch([pending.work for pending in self._queue], self.max_batch_size)

    def _take(self, chosen: list[int]) -> list[_Pending]:
        """Remove the ``chosen`` queue entries and return them in order."""
        batch = [self._queue[index] for index in chosen]
        taken = set(chosen)
        self._queue = [pending for index, pending in enumerate(self._queue) if index not in taken]
        return batch

    async def _gather_forever(self) -> None:
        while True:
            batch = await self._next_batch()
            if batch:
                await self._dispatch(batch)

    async def _dispatch(self, batch: list[_Pending]) -> None:
        started = time.monotonic()
        if self._metrics is not None:
            self._metrics.batch_size.observe(sum(pending.work.rows for pending in batch))
            for pending in batch:
                self._metrics.queue_seconds.observe(started - pending.enqueued)
        try:
            outcomes = await self._outcomes([pending.work for pending in batch])
        except asyncio.CancelledError:  # closing: the batch's clients get an answer, not a hang
            _fail(batch, ProtocolError("the server is shutting down", status=503))
            raise
        for pending, outcome in zip(batch, outcomes, strict=True):
            if pending.future.done():
                continue
            if isinstance(outcome, BaseException):
                pending.future.set_exception(outcome)
            else:
                pending.future.set_result(outcome)

    async def _outcomes(self, works: list[Work]) -> list[dict[str, Array] | Exception]:
        """Each work's outputs or error: the batch in one pass, or one by one if that pass fails.

        Retrying alone finds the request the model cannot run (a value it chokes on, an output
        that lost rows) instead of failing every request that happened to share its pass.
        """
        loop = asyncio.get_running_loop()
        try:
            outputs = await loop.run_in_executor(self._executor, self._run_batch, works)
            return list(split_rows(outputs, [work.rows for work in works]))
        except Exception as error:
            log.exception("a batch of %d requests failed", len(works))
            if len(works) == 1:
                return [error]
        outcomes: list[dict[str, Array] | Exception] = []
        for work in works:
            try:
                outputs = await loop.run_in_executor(self._executor, self._run_batch, [work])
                outcomes.append(split_rows(outputs, [work.rows])[0])
            except Exception as error:
                outcomes.append(error)
        return outcomes

    def _run_batch(self, works: list[Work]) -> dict[str, Array]:
        """Runs in the inference thread."""
        started = time.perf_counter()
        arrays = works[0].arrays if len(works) == 1 else stack_rows(works)
        outputs = self._run(arrays, works[0].options)
        if self._metrics is not None:
            self._metrics.inference_seconds.observe(time.perf_counter() - started)
        return outputs
