"""Ranks the watch has not delivered yet, against the test bed's API server.

The operator records a gang (``gangCreatedTime``) in the pass that creates its ranks; from then
on a rank that is not there is a lost one, and the whole gang restarts. A pod watch that lags
behind the operator's own creates (a burst of a thousand gangs did that) must not make ranks
that exist look lost: past ``expectationSeconds`` the reconciler asks the API server. Here the
reconciler runs without any watch at all, the extreme of a lagging one, so every rank it sees
comes from that check.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest
from kubernetes import client

from aidc.management.apiserver import ApiServer
from aidc.management.cluster import Cluster
from aidc.management.metrics import OperatorMetrics
from aidc.management.observe import RankPod, rank_pod_from
from aidc.management.training_reconciler import PodIndex, TrainingIndexes, TrainingReconciler
from aidc.management.workers import Memory
from aidc.settings import OperatorSettings
from tests.cluster.resources import create, pods
from tests.factories import training_job_body

pytestmark = pytest.mark.cluster
TJ = "trainingjobs"
WINDOW = 1  # expectationSeconds, short so the test need not wait 30 s
MAX_REQUESTS = OperatorSettings().max_concurrent_api_calls
METRICS = OperatorMetrics()


def overdue(outcome: str) -> float:
    return METRICS.registry.get_sample_value("aidc_operator_overdue_pods_total", {"outcome": outcome}) or 0.0


def pod_lists() -> float:
    labels = {"verb": "list", "resource": "pods", "code": "2xx"}
    return METRICS.registry.get_sample_value("aidc_operator_api_requests_total", labels) or 0.0


def _indexes(pods: PodIndex) -> TrainingIndexes:
    """A pod watch that delivers what the test says, no Service, no claim: the watch lags."""
    return TrainingIndexes(pods=pods, services={}, claims={}, policies={})


def test_ranks_a_lagging_watch_has_not_delivered_are_not_lost_until_the_server_says_so(
    kube: client.ApiClient, crds_applied: list[str], namespace: str, wait_for: Callable[..., Any]
) -> None:
    body = create(kube, namespace, TJ, training_job_body("lag", {"replicas": 2}))
    core = client.CoreV1Api(kube)
    found, gone = overdue("found"), overdue("gone")

    async def scenario() -> list[dict[str, Any]]:
        server = ApiServer(kube.configuration, MAX_REQUESTS)
        # every decided status written at once, so each pass's decision can be read back
        settings = OperatorSettings(expectation_seconds=WINDOW, status_batch_seconds=0)
        reconciler = TrainingReconciler(Cluster(server, METRICS), settings, _indexes({}), METRICS)
        memory = Memory()
        statuses = []
        try:
            current = body

            async def one_pass() -> None:
                nonlocal current
                updated, _ = await reconciler.reconcile(current, memory)
                current = updated or current
                statuses.append(dict(current.get("status") or {}))

            await one_pass()  # creates both ranks and records the gang in the same write
            await asyncio.sleep(WINDOW + 0.2)
            await one_pass()  # both overdue, both on the server: still expected, nothing lost
            core.delete_namespaced_pod("lag-1", namespace, grace_period_seconds=0)
            await asyncio.to_thread(
                wait_for, lambda: [p.metadata.name for p in pods(kube, namespace, "lag")] == ["lag-0"]
            )
            await asyncio.sleep(WINDOW + 0.2)
            await one_pass()  # rank 1 overdue again and gone from the server: lost, the gang restarts
        finally:
            await server.close()
        return statuses

    started = time.monotonic()
    created, waiting, restarted = asyncio.run(scenario())
    assert time.monotonic() - started < 60

    assert created["gangCreatedTime"] and created["phase"] == "Pending"
    assert waiting["restarts"] == 0 and waiting["gangCreatedTime"] == created["gangCreatedTime"]
    scheduled = next(c for c in waiting["conditions"] if c["type"] == "Scheduled")
    assert (scheduled["reason"], scheduled["message"]) == ("WaitingForGang", "0/2 ranks scheduled")

    assert restarted["phase"] == "Restarting" and restarted["restarts"] == 1
    lost = next(c for c in restarted["conditions"] if c["type"] == "Restarting")
    assert lost["reason"] == "RankLost" and "rank 1 (pod lag-1) went away" in lost["message"]
    # both ranks found on the second pass, rank 0 again on the third; rank 1 gone on the third
    assert (overdue("found") - found, overdue("gone") - gone) == (3, 1)


def test_ranks_the_watch_delivered_late_but_before_the_pass_are_not_asked_about(
    kube: client.ApiClient, crds_applied: list[str], namespace: str
) -> None:
    """The watch delivered the ranks more than ``expectationSeconds`` after their creation, but
    before the next pass: that pass has nothing to ask the API server."""
    body = create(kube, namespace, TJ, training_job_body("late", {"replicas": 2}))
    core = client.CoreV1Api(kube)

    async def scenario() -> tuple[float, dict[str, float]]:
        server = ApiServer(kube.configuration, MAX_REQUESTS)
        settings = OperatorSettings(expectation_seconds=WINDOW, status_batch_seconds=0)
        delivered_pods: dict[tuple[str, str], list[tuple[str | None, RankPod]]] = {}
        reconciler = TrainingReconciler(Cluster(server, METRICS), settings, _indexes(delivered_pods), METRICS)
        memory = Memory()
        try:
            updated, _ = await reconciler.reconcile(body, memory)
            await asyncio.sleep(WINDOW + 0.2)
            # the watch delivers both ranks now, late
            listed = core.list_namespaced_pod(namespace, label_selector="aidc.io/job-name=late")
            delivered = [rank_pod_from(kube.sanitize_for_serialization(p)) for p in listed.items]
            delivered_pods[(namespace, "late")] = [(body["metadata"]["uid"], p) for p in delivered if p]
            before = pod_lists()
            await reconciler.reconcile(updated or body, memory)
            return pod_lists() - before, dict(memory.expected)
        finally:
            await server.close()

    lists, expected = asyncio.run(scenario())
    assert (lists, expected) == (0, {})
