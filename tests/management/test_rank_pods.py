"""The operator's own index of rank pods: what each watch event does to it, and the line splitter.

The list-and-watch against a real API server is in tests/cluster/test_rank_pod_watch.py.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from aidc import contract
from aidc.management.rank_pods import GangIndex, _lines


def pod(
    name: str,
    job: str | None = "j",
    rank: int | None = 0,
    namespace: str = "ml",
    uid: str | None = None,
    owner: str | None = "job-uid",
    phase: str = "Pending",
) -> dict[str, Any]:
    labels = {contract.LABEL_GANG_ATTEMPT: "0"}
    if job is not None:
        labels[contract.LABEL_JOB_NAME] = job
    if rank is not None:
        labels[contract.LABEL_REPLICA_INDEX] = str(rank)
    refs = [{"uid": owner, "controller": True}] if owner else []
    return {
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": uid or f"uid-{name}",
            "labels": labels,
            "ownerReferences": refs,
        },
        "status": {"phase": phase},
    }


def entries(index: GangIndex, key: tuple[str, str]) -> list[tuple[str | None, str, str]]:
    return sorted((owner, p.name, p.phase) for owner, p in index.get(key) or ())


def test_added_modified_deleted_keep_the_newest_pod_and_wake_its_gang() -> None:
    index = GangIndex()
    assert index.apply("ADDED", pod("j-0")) == [("ml", "j")]
    assert index.apply("ADDED", pod("j-1", rank=1)) == [("ml", "j")]
    assert index.apply("MODIFIED", pod("j-0", phase="Running")) == [("ml", "j")]
    assert entries(index, ("ml", "j")) == [("job-uid", "j-0", "Running"), ("job-uid", "j-1", "Pending")]
    assert index.apply("DELETED", pod("j-0", phase="Running")) == [("ml", "j")]
    assert index.apply("DELETED", pod("j-1", rank=1)) == [("ml", "j")]
    assert index.get(("ml", "j")) is None and ("ml", "j") not in index


def test_an_event_that_changes_nothing_a_decision_reads_wakes_no_gang() -> None:
    index = GangIndex()
    index.apply("ADDED", pod("j-0"))
    running = pod("j-0", phase="Running")
    assert index.apply("MODIFIED", running) == [("ml", "j")]
    running["status"]["conditions"] = [{"type": "Ready", "status": "True"}]  # not read by any decision
    running["metadata"]["resourceVersion"] = "42"
    assert index.apply("MODIFIED", running) == []
    assert entries(index, ("ml", "j")) == [("job-uid", "j-0", "Running")]
    running["metadata"]["ownerReferences"] = [{"uid": "other", "controller": True}]  # the owner is read
    assert index.apply("MODIFIED", running) == [("ml", "j")]
    assert index.apply("DELETED", running) == [("ml", "j")]


def test_a_pod_moved_to_another_job_leaves_the_first_and_wakes_both() -> None:
    index = GangIndex()
    index.apply("ADDED", pod("p", job="a"))
    assert index.apply("MODIFIED", pod("p", job="b")) == [("ml", "a"), ("ml", "b")]
    assert index.get(("ml", "a")) is None
    assert entries(index, ("ml", "b")) == [("job-uid", "p", "Pending")]
    # losing the job label: the pod leaves the index, its old gang is woken
    assert index.apply("MODIFIED", pod("p", job=None)) == [("ml", "b")]
    assert ("ml", "b") not in index


def test_a_labelled_pod_that_is_no_rank_wakes_the_job_but_is_not_indexed() -> None:
    index = GangIndex()
    assert index.apply("ADDED", pod("by-hand", rank=None)) == [("ml", "j")]
    assert index.get(("ml", "j")) is None


def test_a_recreated_pod_of_the_same_name_is_a_new_entry_and_the_old_goes_with_its_deletion() -> None:
    index = GangIndex()
    index.apply("ADDED", pod("j-0", uid="old"))
    index.apply("ADDED", pod("j-0", uid="new", phase="Running"))
    assert entries(index, ("ml", "j")) == [("job-uid", "j-0", "Pending"), ("job-uid", "j-0", "Running")]
    index.apply("DELETED", pod("j-0", uid="old"))
    assert entries(index, ("ml", "j")) == [("job-uid", "j-0", "Running")]


def test_only_the_controller_owner_counts() -> None:
    index = GangIndex()
    orphan = pod("j-0", owner=None)
    orphan["metadata"]["ownerReferences"] = [{"uid": "someone", "controller": False}]
    index.apply("ADDED", orphan)
    assert entries(index, ("ml", "j")) == [(None, "j-0", "Pending")]


def test_a_fresh_list_replaces_everything_and_names_the_gangs_that_changed() -> None:
    index = GangIndex()
    index.apply("ADDED", pod("a-0", job="a"))
    index.apply("ADDED", pod("b-0", job="b"))
    index.apply("ADDED", pod("c-0", job="c"))
    # while the watch was away: a-0 unchanged, b-0 started, c-0 deleted, d-0 created
    changed = index.replace([pod("a-0", job="a"), pod("b-0", job="b", phase="Running"), pod("d-0", job="d")])
    assert changed == {("ml", "b"), ("ml", "c"), ("ml", "d")}
    assert sorted(index.keys()) == [("ml", "a"), ("ml", "b"), ("ml", "d")]
    assert entries(index, ("ml", "b")) == [("job-uid", "b-0", "Running")]
    # and a later deletion of a pod that arrived by the list is applied
    assert index.apply("DELETED", pod("d-0", job="d")) == [("ml", "d")]
    assert ("ml", "d") not in index


@pytest.mark.parametrize("chunk", [13, 4096, 1 << 20])
def test_watch_lines_of_any_length_in_chunks_of_any_size(chunk: int) -> None:
    """Over real HTTP, written in chunks of ``chunk`` bytes; one event is larger than aiohttp's line limit."""
    events = [{"type": "ADDED", "object": {"n": i, "pad": "x" * size}} for i, size in enumerate((10, 300_000, 0, 5))]
    raw = b"".join(json.dumps(e).encode() + b"\n" for e in events) + b"\n"  # and a blank line

    async def stream(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        for start in range(0, len(raw), chunk):
            await response.write(raw[start : start + chunk])
        await response.write_eof()
        return response

    async def scenario() -> list[dict[str, Any]]:
        app = web.Application()
        app.router.add_get("/", stream)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        try:
            async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}/") as response:
                return [json.loads(line) async for line in _lines(response.content)]
        finally:
            await runner.cleanup()

    assert asyncio.run(scenario()) == events


def test_a_pod_kueue_stopped_and_holds_is_read_as_such() -> None:
    """Kueue sets TerminationTarget before it deletes a pod of a preempted group, and holds it with a finalizer."""
    from aidc.management.observe import rank_pod_from

    body = pod("j-0", phase="Running")
    body["metadata"]["finalizers"] = ["kueue.x-k8s.io/managed"]
    body["status"]["conditions"] = [
        {"type": "TerminationTarget", "status": "True", "reason": "WorkloadEvictedDueToPreempted",
         "message": "Preempted to accommodate a workload"},
    ]  # fmt: skip
    stopped = rank_pod_from(body)
    assert stopped is not None and stopped.held_by_queue
    assert (stopped.stopped_by_queue, stopped.stop_message) == ("WorkloadEvictedDueToPreempted",
                                                                "Preempted to accommodate a workload")  # fmt: skip
    body["metadata"]["finalizers"] = []
    body["status"]["conditions"][0]["status"] = "False"
    plain = rank_pod_from(body)
    assert plain is not None and not plain.held_by_queue and plain.stopped_by_queue is None
