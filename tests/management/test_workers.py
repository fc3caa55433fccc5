"""The per-resource workers: coalescing, newest version wins, what a worker keeps of a body."""

from __future__ import annotations

import asyncio
from typing import Any

from aidc.management.workers import Memory, Workers


def body(version: int, **metadata: Any) -> dict[str, Any]:
    return {"metadata": {"name": "j", "namespace": "ml", "resourceVersion": str(version), **metadata}}


class Recorder:
    """A reconcile that records what it saw; ``writes``: the body its first pass's status write returns."""

    def __init__(
        self, gate: asyncio.Event | None = None, fail_first: bool = False, writes: dict[str, Any] | None = None
    ) -> None:
        self.seen: list[dict[str, Any]] = []
        self.gate = gate
        self.fail_first = fail_first
        self.writes = writes

    async def __call__(self, seen: dict[str, Any], memory: Memory) -> tuple[dict[str, Any] | None, float | None]:
        self.seen.append(seen)
        if self.fail_first and len(self.seen) == 1:
            raise RuntimeError("the API server is away")
        if self.gate is not None:
            await self.gate.wait()
        return (self.writes if len(self.seen) == 1 else None), None


def test_pokes_during_a_pass_become_one_more_pass_with_the_newest_body() -> None:
    async def scenario() -> list[dict[str, Any]]:
        gate = asyncio.Event()
        recorder = Recorder(gate)
        workers = Workers("TrainingJob", recorder, resync_seconds=3600, on_error=lambda kind: None)
        workers.offer(("ml", "j"), body(1))
        await asyncio.sleep(0.05)  # first pass starts and blocks on the gate
        workers.offer(("ml", "j"), body(3))
        workers.offer(("ml", "j"), body(2))  # older than what the worker holds: ignored
        for _ in range(50):
            workers.poke(("ml", "j"))
        gate.set()
        await asyncio.sleep(0.1)
        await workers.stop()
        return recorder.seen

    seen = asyncio.run(scenario())
    assert [s["metadata"]["resourceVersion"] for s in seen] == ["1", "3"]


def test_a_worker_s_own_write_coming_back_through_the_watch_makes_no_pass() -> None:
    async def scenario() -> list[dict[str, Any]]:
        recorder = Recorder(writes=body(2))  # the first pass writes version 2
        workers = Workers("TrainingJob", recorder, resync_seconds=3600, on_error=lambda kind: None)
        workers.offer(("ml", "j"), body(1))
        await asyncio.sleep(0.05)
        workers.offer(("ml", "j"), body(2))  # the watch delivers the write: nothing new
        await asyncio.sleep(0.05)
        workers.offer(("ml", "j"), body(3))  # someone else changed the job
        await asyncio.sleep(0.05)
        await workers.stop()
        return recorder.seen

    seen = asyncio.run(scenario())
    assert [s["metadata"]["resourceVersion"] for s in seen] == ["1", "3"]


def test_a_spec_changed_while_a_pass_wrote_status_gets_a_pass_of_its_own() -> None:
    async def scenario() -> list[dict[str, Any]]:
        # the first write lands on top of a spec change (version 2, generation 2) it never saw
        recorder = Recorder(writes=body(3, generation=2))
        workers = Workers("TrainingJob", recorder, resync_seconds=3600, on_error=lambda kind: None)
        workers.offer(("ml", "j"), body(1, generation=1))
        await asyncio.sleep(0.05)
        workers.offer(("ml", "j"), body(2, generation=2))  # the watch, late: older than what is held
        workers.offer(("ml", "j"), body(3, generation=2))
        await asyncio.sleep(0.05)
        await workers.stop()
        return recorder.seen

    seen = asyncio.run(scenario())
    assert [(s["metadata"]["resourceVersion"], s["metadata"]["generation"]) for s in seen] == [("1", 1), ("3", 2)]


def test_a_worker_keeps_no_managed_fields() -> None:
    async def scenario() -> list[dict[str, Any]]:
        recorder = Recorder()
        workers = Workers("TrainingJob", recorder, resync_seconds=3600, on_error=lambda kind: None)
        workers.offer(("ml", "j"), body(1, managedFields=[{"manager": "kubectl"}], uid="u-1"))
        await asyncio.sleep(0.05)
        await workers.stop()
        return recorder.seen

    (seen,) = asyncio.run(scenario())
    assert seen["metadata"] == {"name": "j", "namespace": "ml", "resourceVersion": "1", "uid": "u-1"}


def test_a_failing_pass_is_counted_and_retried() -> None:
    async def scenario() -> tuple[int, list[str]]:
        recorder = Recorder(fail_first=True)
        errors: list[str] = []
        workers = Workers("TrainingJob", recorder, resync_seconds=3600, on_error=errors.append)
        workers.offer(("ml", "j"), body(1))
        await asyncio.sleep(0.05)
        workers.poke(("ml", "j"))  # the retry waits 5 s unless something wakes the worker
        await asyncio.sleep(0.05)
        await workers.stop()
        return len(recorder.seen), errors

    passes, errors = asyncio.run(scenario())
    assert (passes, errors) == (2, ["TrainingJob"])


def test_a_worker_makes_no_pass_before_what_it_reads_is_ready() -> None:
    async def scenario() -> tuple[int, int]:
        listed = asyncio.Event()
        recorder = Recorder()

        async def ready(key: tuple[str, str]) -> None:
            assert key == ("ml", "j")
            await listed.wait()

        workers = Workers("TrainingJob", recorder, resync_seconds=3600, on_error=lambda kind: None, ready=ready)
        workers.offer(("ml", "j"), body(1))
        workers.poke(("ml", "j"))
        await asyncio.sleep(0.1)
        before = len(recorder.seen)
        listed.set()
        await asyncio.sleep(0.1)
        after = len(recorder.seen)
        await workers.stop()
        return before, after

    assert asyncio.run(scenario()) == (0, 1)


def test_a_graceful_stop_lets_a_settling_worker_make_the_pass_it_was_woken_for() -> None:
    async def scenario() -> tuple[int, int]:
        woken, idle = Recorder(), Recorder()
        workers = Workers("TrainingJob", woken, resync_seconds=3600, on_error=lambda kind: None, settle_seconds=0.3)
        others = Workers("TrainingJob", idle, resync_seconds=3600, on_error=lambda kind: None, settle_seconds=0.3)
        workers.offer(("ml", "j"), body(1))
        others.offer(("ml", "k"), body(1))
        await asyncio.sleep(0.05)  # both made their first pass
        workers.poke(("ml", "j"))  # the last rank started, say: this worker now settles
        await asyncio.sleep(0.05)
        await workers.stop()  # within the settle
        await others.stop()
        return len(woken.seen), len(idle.seen)

    assert asyncio.run(scenario()) == (2, 1)


def test_a_graceful_stop_right_after_a_poke_still_makes_the_pass() -> None:
    async def scenario() -> int:
        recorder = Recorder()
        workers = Workers("TrainingJob", recorder, resync_seconds=3600, on_error=lambda kind: None, settle_seconds=0.3)
        workers.offer(("ml", "j"), body(1))
        await asyncio.sleep(0.05)
        workers.poke(("ml", "j"))
        await workers.stop()  # before the worker has even resumed
        return len(recorder.seen)

    assert asyncio.run(scenario()) == 2


def test_a_namespace_is_served_while_one_of_its_resources_has_a_worker() -> None:
    async def scenario() -> list[bool]:
        workers = Workers("TrainingJob", Recorder(), resync_seconds=3600, on_error=lambda kind: None)
        workers.offer(("ml", "a"), body(1))
        workers.offer(("ml", "b"), body(1))
        served = [workers.serves("ml"), workers.serves("other")]
        await workers.forget(("ml", "a"))
        served.append(workers.serves("ml"))
        await workers.forget(("ml", "b"))
        served.append(workers.serves("ml"))
        await workers.stop()
        return served

    assert asyncio.run(scenario()) == [True, False, True, False]
