"""Dynamic batching: which requests share a forward pass, and that each gets its own rows back."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Hashable, Mapping
from typing import Any

import numpy as np
import pytest

from aidc_trainer.serving.batcher import DynamicBatcher, plan_batch, split_rows, stack_rows
from aidc_trainer.serving.metrics import ServerMetrics
from aidc_trainer.serving.protocol import Array, ProtocolError
from aidc_trainer.serving.servable import Work
from tests.serving.harness import ScaleServable


def work(rows: int, key: Hashable = (), value: float = 0.0) -> Work:
    return Work(arrays={"x": np.full((rows, 3), value, dtype=np.float32)}, rows=rows, key=key)


@pytest.mark.parametrize(
    ("queue", "max_rows", "chosen", "full"),
    [
        ([], 4, [], False),
        ([work(1)], 4, [0], False),
        ([work(1), work(2), work(1)], 4, [0, 1, 2], True),
        ([work(2), work(2), work(1)], 3, [0], True),  # the second does not fit; waiting will not help
        ([work(3), work(1, key="b"), work(1)], 4, [0, 2], True),  # other keys wait for a batch of their own
        ([work(1, key="b"), work(1), work(1, key="b")], 4, [0, 2], False),
        ([work(9)], 4, [0], True),  # the head always goes, even alone
        ([work(1), work(1)], 1, [0], True),  # maxBatchSize 1: no batching at all
    ],
)
def test_plan_takes_the_head_and_what_fits_behind_it_in_order(
    queue: list[Work], max_rows: int, chosen: list[int], full: bool
) -> None:
    assert plan_batch(queue, max_rows) == (chosen, full)


def test_stack_and_split_are_inverse_and_keep_request_order() -> None:
    works = [work(1, value=1), work(3, value=2), work(2, value=3)]
    stacked = stack_rows(works)
    assert stacked["x"].shape == (6, 3)
    pieces = split_rows({"y": stacked["x"] * 10, "z": stacked["x"][:, 0]}, [1, 3, 2])
    assert [piece["y"].shape[0] for piece in pieces] == [1, 3, 2]
    assert [float(piece["y"][0, 0]) for piece in pieces] == [10.0, 20.0, 30.0]
    assert [float(piece["z"][-1]) for piece in pieces] == [1.0, 2.0, 3.0]


def test_split_refuses_outputs_that_lost_rows() -> None:
    with pytest.raises(RuntimeError, match="expected 3 rows"):
        split_rows({"y": np.zeros((2, 1))}, [1, 2])


def _batch_sizes(metrics: ServerMetrics) -> tuple[float, float]:
    """(forward passes, rows) observed by the batch-size histogram."""
    count = metrics.registry.get_sample_value("aidc_server_batch_size_count") or 0.0
    rows = metrics.registry.get_sample_value("aidc_server_batch_size_sum") or 0.0
    return count, rows


async def _submit_concurrently(batcher: DynamicBatcher, works: list[Work]) -> list[dict[str, Array]]:
    return list(await asyncio.gather(*(batcher.submit(w) for w in works)))


@pytest.mark.parametrize(
    ("max_batch_size", "rows", "fewer_passes"),
    [(32, [1 + i % 2 for i in range(16)], True), (1, [1] * 16, False)],
)
def test_concurrent_requests_share_forward_passes_only_when_allowed(
    max_batch_size: int, rows: list[int], fewer_passes: bool
) -> None:
    model = ScaleServable(factor=3.0)
    metrics = ServerMetrics()

    async def scenario() -> list[dict[str, Array]]:
        batcher = DynamicBatcher(model.run, max_batch_size=max_batch_size, max_delay=0.05, metrics=metrics)
        batcher.start()
        try:
            return await _submit_concurrently(batcher, [work(n, value=i) for i, n in enumerate(rows)])
        finally:
            await batcher.close()

    results = asyncio.run(scenario())
    for i, result in enumerate(results):  # every request gets its own rows back, however batched
        assert result["scaled"].shape == (rows[i], 3)
        assert np.all(result["scaled"] == 3.0 * i)
    passes, total = _batch_sizes(metrics)
    assert total == sum(rows) == sum(model.batches)
    assert max(model.batches) <= max_batch_size
    assert (passes < 16) is fewer_passes
    assert (max(model.batches) > 1) is fewer_passes


def test_an_idle_model_runs_a_lone_request_at_once_whatever_the_delay() -> None:
    model = ScaleServable()

    async def scenario() -> dict[str, Array]:
        batcher = DynamicBatcher(model.run, max_batch_size=32, max_delay=3600.0)
        batcher.start()
        try:  # waiting for the delay would hang here until the guard fails the test
            return await asyncio.wait_for(batcher.submit(work(1, value=2.0)), 60)
        finally:
            await batcher.close()

    assert asyncio.run(scenario())["scaled"].tolist() == [[4.0, 4.0, 4.0]]
    assert model.batches == [1]


@pytest.mark.parametrize(
    ("max_batch_size", "batches"),
    [(8, [1, 3]), (2, [1, 2, 1]), (1, [1, 1, 1, 1])],
)
def test_requests_that_arrive_while_a_batch_runs_form_the_next_batches(max_batch_size: int, batches: list[int]) -> None:
    gate = threading.Event()
    model = ScaleServable(gate=gate)

    async def scenario() -> None:
        batcher = DynamicBatcher(model.run, max_batch_size=max_batch_size, max_delay=0.0)
        batcher.start()
        busy = asyncio.ensure_future(batcher.submit(work(1)))
        assert await asyncio.to_thread(model.running.wait, 30)  # the lone request runs at once
        later = [asyncio.ensure_future(batcher.submit(work(1, value=i))) for i in range(3)]
        await asyncio.sleep(0)  # all three queued behind the running pass
        gate.set()
        await asyncio.gather(busy, *later)
        await batcher.close()

    asyncio.run(scenario())
    assert model.batches == batches


def test_a_batch_formed_while_busy_waits_within_the_delay_until_it_is_full() -> None:
    gate = threading.Event()
    model = ScaleServable(gate=gate)

    async def scenario() -> None:
        batcher = DynamicBatcher(model.run, max_batch_size=4, max_delay=3600.0)
        batcher.start()
        busy = asyncio.ensure_future(batcher.submit(work(1)))
        assert await asyncio.to_thread(model.running.wait, 30)
        first = asyncio.ensure_future(batcher.submit(work(1)))
        await asyncio.sleep(0)
        gate.set()
        await busy  # the model is free now; the forming batch of one row waits for more
        rest = [asyncio.ensure_future(batcher.submit(work(1))) for _ in range(3)]
        await asyncio.wait_for(asyncio.gather(first, *rest), 60)
        await batcher.close()

    asyncio.run(scenario())
    assert model.batches == [1, 4]


def test_a_full_batch_goes_without_waiting_for_the_delay() -> None:
    model = ScaleServable()

    async def scenario() -> float:
        batcher = DynamicBatcher(model.run, max_batch_size=4, max_delay=30.0)
        batcher.start()
        loop = asyncio.get_running_loop()
        started = loop.time()
        await _submit_concurrently(batcher, [work(2), work(2)])
        elapsed = loop.time() - started
        await batcher.close()
        return elapsed

    assert asyncio.run(scenario()) < 5.0
    assert model.batches == [4]


def test_requests_with_different_keys_never_share_a_pass() -> None:
    seen: list[tuple[int, Any]] = []

    def run(arrays: Mapping[str, Array], options: Mapping[str, Any]) -> dict[str, Array]:
        seen.append((len(arrays["x"]), options["tag"]))
        return {"y": arrays["x"]}

    def tagged(tag: str) -> Work:
        return Work(arrays={"x": np.zeros((1, 3), np.float32)}, rows=1, key=tag, options={"tag": tag})

    async def scenario() -> None:
        batcher = DynamicBatcher(run, max_batch_size=32, max_delay=0.05)
        batcher.start()
        await _submit_concurrently(batcher, [tagged("a"), tagged("b"), tagged("a"), tagged("b"), tagged("a")])
        await batcher.close()

    asyncio.run(scenario())
    assert sorted(seen) == [(2, "b"), (3, "a")]


def test_too_many_rows_in_one_request_is_a_client_error() -> None:
    async def scenario() -> None:
        batcher = DynamicBatcher(ScaleServable().run, max_batch_size=4, max_delay=0.0)
        batcher.start()
        try:
            await batcher.submit(work(5))
        finally:
            await batcher.close()

    with pytest.raises(ProtocolError, match="5 rows but this server takes at most 4"):
        asyncio.run(scenario())


def _poisoned_run(passes: list[int]) -> Callable[[Mapping[str, Array], Mapping[str, Any]], dict[str, Array]]:
    """A model that cannot run rows holding a negative value; it records each pass's rows."""

    def run(arrays: Mapping[str, Array], options: Mapping[str, Any]) -> dict[str, Array]:
        passes.append(len(arrays["x"]))
        if (arrays["x"] < 0).any():
            raise RuntimeError("the model cannot take negative values")
        return {"y": arrays["x"] * 2}

    return run


def test_one_request_the_model_cannot_run_fails_alone_and_its_batch_mates_are_answered() -> None:
    passes: list[int] = []

    async def scenario() -> list[Any]:
        batcher = DynamicBatcher(_poisoned_run(passes), max_batch_size=8, max_delay=3600.0)
        batcher.start()
        works = [work(1, value=1), work(2, value=-1), work(3, value=3), work(2, value=4)]
        outcomes = await asyncio.gather(*(batcher.submit(w) for w in works), return_exceptions=True)
        after = await batcher.submit(work(1, value=5))  # and the batcher keeps serving
        await batcher.close()
        return [*outcomes, after]

    good, bad, other, last, after = asyncio.run(scenario())
    assert isinstance(bad, RuntimeError)
    assert [r["y"][0, 0] for r in (good, other, last, after)] == [2.0, 6.0, 8.0, 10.0]
    assert [r["y"].shape[0] for r in (good, other, last)] == [1, 3, 2]
    assert passes[:5] == [8, 1, 2, 3, 2]  # the shared pass failed, then each request alone


def test_a_model_that_always_fails_fails_every_request_and_serves_again_once_it_recovers() -> None:
    broken = True

    def run(arrays: Mapping[str, Array], options: Mapping[str, Any]) -> dict[str, Array]:
        if broken:
            raise RuntimeError("device fell over")
        return {"y": arrays["x"]}

    async def scenario() -> tuple[list[Any], dict[str, Array]]:
        nonlocal broken
        batcher = DynamicBatcher(run, max_batch_size=8, max_delay=0.05)
        batcher.start()
        first = await asyncio.gather(batcher.submit(work(1)), batcher.submit(work(1)), return_exceptions=True)
        broken = False
        after = await batcher.submit(work(2))
        await batcher.close()
        return list(first), after

    first, after = asyncio.run(scenario())
    assert all(isinstance(outcome, RuntimeError) for outcome in first)
    assert after["y"].shape == (2, 3)


def test_a_request_abandoned_by_its_client_takes_no_room_in_the_batch() -> None:
    gate = threading.Event()
    model = ScaleServable(gate=gate)

    async def scenario() -> None:
        batcher = DynamicBatcher(model.run, max_batch_size=8, max_delay=0.0)
        batcher.start()
        busy = asyncio.ensure_future(batcher.submit(work(1)))
        assert await asyncio.to_thread(model.running.wait, 30)  # the inference thread is now held
        abandoned = asyncio.ensure_future(batcher.submit(work(3)))
        kept = asyncio.ensure_future(batcher.submit(work(2)))
        await asyncio.sleep(0)
        abandoned.cancel()
        gate.set()
        await busy
        await kept
        await batcher.close()

    asyncio.run(scenario())
    assert model.batches == [1, 2]


def test_closing_answers_running_and_queued_requests_with_503() -> None:
    gate = threading.Event()
    model = ScaleServable(gate=gate)

    async def scenario() -> list[Any]:
        batcher = DynamicBatcher(model.run, max_batch_size=1, max_delay=0.0)
        batcher.start()
        running = asyncio.ensure_future(batcher.submit(work(1)))
        assert await asyncio.to_thread(model.running.wait, 30)
        queued = asyncio.ensure_future(batcher.submit(work(1)))
        await batcher.close()
        gate.set()
        return list(await asyncio.gather(running, queued, return_exceptions=True))

    outcomes = asyncio.run(scenario())
    assert all(isinstance(error, ProtocolError) and error.status == 503 for error in outcomes)
