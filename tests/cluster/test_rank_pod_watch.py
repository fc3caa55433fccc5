"""The operator's own list-and-watch of rank pods, against the test bed's API server.

What kopf's pod index did before: the first list fills the index before ``ready`` returns, and
each later create, change and deletion reaches the index and wakes the gang's worker.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest
from kubernetes import client

from aidc import contract
from aidc.management.apiserver import ApiServer
from aidc.management.metrics import OperatorMetrics
from aidc.management.rank_pods import RankPods
from aidc.settings import OperatorSettings

MAX_REQUESTS = OperatorSettings().max_concurrent_api_calls
METRICS = OperatorMetrics()
pytestmark = pytest.mark.cluster


def rank_pod(name: str, rank: int) -> dict[str, object]:
    labels = {contract.LABEL_JOB_NAME: "j", contract.LABEL_REPLICA_INDEX: str(rank), contract.LABEL_GANG_ATTEMPT: "0"}
    return {
        "metadata": {"name": name, "labels": labels},
        "spec": {"containers": [{"name": "trainer", "image": "example.invalid/trainer:1"}]},
    }


async def until(predicate: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("clusterwide", [False, True], ids=["per-namespace", "cluster-wide"])
def test_list_then_watch_keeps_every_gang_current_and_wakes_it(
    kube: client.ApiClient, namespace: str, clusterwide: bool
) -> None:
    core = client.CoreV1Api(kube)
    key = (namespace, "j")
    core.create_namespaced_pod(namespace, rank_pod("j-0", 0))
    unlabelled = rank_pod("other", 0)
    del unlabelled["metadata"]["labels"][contract.LABEL_JOB_NAME]  # type: ignore[index]
    core.create_namespaced_pod(namespace, unlabelled)

    def names(pods: RankPods) -> list[str]:
        return sorted(pod.name for _, pod in pods.get(key, ()))

    def counted(name: str, **labels: str) -> float:
        return METRICS.registry.get_sample_value(f"aidc_operator_{name}_total", labels) or 0.0

    lists, deletions = counted("pod_lists", reason="start"), counted("pod_events", type="DELETED")

    async def scenario() -> None:
        woken: list[tuple[str, str]] = []
        server = ApiServer(kube.configuration, MAX_REQUESTS)
        pods = RankPods(server, clusterwide, woken.append, METRICS)
        try:
            await asyncio.wait_for(pods.ready(namespace), timeout=30)
            # the first list, before ready returned
            assert names(pods) == ["j-0"] and key in woken
            woken.clear()
            core.create_namespaced_pod(namespace, rank_pod("j-1", 1))
            await until(lambda: names(pods) == ["j-0", "j-1"], "the created rank in the index")
            assert key in woken
            woken.clear()
            # a change a decision reads (a heartbeat); one it does not read wakes nobody (unit tests)
            beat = {"metadata": {"annotations": {contract.ANNOTATION_PROGRESS: '{"step": 1}'}}}
            core.patch_namespaced_pod("j-1", namespace, beat)
            await until(lambda: key in woken, "a change to wake the gang")
            assert next(p for _, p in pods[key] if p.name == "j-1").progress == {"step": 1}
            core.delete_namespaced_pod("j-0", namespace, grace_period_seconds=0)
            await until(lambda: names(pods) == ["j-1"], "the deleted rank gone from the index")
            core.delete_namespaced_pod("j-1", namespace, grace_period_seconds=0)
            await until(lambda: key not in pods, "the gang gone from the index")
            assert all(k == key for k in woken if k[0] == namespace)  # the unlabelled pod woke nothing
        finally:
            await pods.stop()
            await server.close()

    asyncio.run(scenario())
    assert counted("pod_lists", reason="start") == lists + 1
    assert counted("pod_events", type="DELETED") >= deletions + 2


def test_a_released_namespace_stops_its_watch_and_a_later_job_lists_it_again(
    kube: client.ApiClient, namespace: str
) -> None:
    core = client.CoreV1Api(kube)
    core.create_namespaced_pod(namespace, rank_pod("j-0", 0))
    key = (namespace, "j")

    def lists() -> float:
        return METRICS.registry.get_sample_value("aidc_operator_pod_lists_total", {"reason": "start"}) or 0.0

    async def scenario() -> tuple[set[str], set[str], bool]:
        server = ApiServer(kube.configuration, MAX_REQUESTS)
        pods = RankPods(server, False, lambda key: None, METRICS)
        try:
            await asyncio.wait_for(pods.ready(namespace), timeout=30)
            watched = pods.scopes
            await pods.release(namespace)  # its last job was deleted
            released = pods.scopes
            forgotten = key not in pods
            await asyncio.wait_for(pods.ready(namespace), timeout=30)  # a new job there
            assert key in pods and pods.scopes == {namespace}
            return watched, released, forgotten
        finally:
            await pods.stop()
            await server.close()

    before = lists()
    watched, released, forgotten = asyncio.run(scenario())
    assert (watched, released, forgotten) == ({namespace}, set(), True)
    assert lists() == before + 2  # listed again after the release
