"""Pods the operator created that its watch has not delivered in time: asked about, not presumed lost.

Such a pod is usually there and the watch behind: under a burst the pod watch can fall more than
30 s behind the operator's own creates (docs/adr/0001-operator-hot-paths.md). A pod the server
has stays expected for another window; one it has not is no longer expected (lost, or its create
never landed). When the server cannot be asked, nothing is concluded and the next pass asks again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import aiohttp

from aidc import contract
from aidc.api import TrainingJob
from aidc.management.apiserver import ApiError
from aidc.management.cluster import Cluster
from aidc.management.metrics import OperatorMetrics
from aidc.management.workers import Memory

log = logging.getLogger(__name__)


async def check_overdue(
    cluster: Cluster,
    job: TrainingJob,
    delivered: Callable[[], set[str]],
    memory: Memory,
    window: float,
    metrics: OperatorMetrics,
) -> None:
    """Settles ``memory.expected`` for pods expected longer than ``window`` seconds.

    ``delivered`` names the job's pods the watch has delivered (asked again after the request:
    the watch may catch up meanwhile).
    """
    if not memory.expected:  # most passes: every rank created has been delivered
        return
    now = time.monotonic()
    seen = delivered()  # delivered since the last pass: not overdue
    overdue = [n for n, t in memory.expected.items() if n not in seen and now - t >= window]
    if not overdue:
        return
    selector = f"{contract.LABEL_JOB_NAME}={job.metadata['name']}"
    try:
        existing = await cluster.owned_pod_names(job.metadata["namespace"], selector, job.metadata["uid"])
    except (ApiError, aiohttp.ClientError, TimeoutError) as error:
        log.warning("could not check the overdue pods %s: %s", ", ".join(sorted(overdue)), error)
        return
    seen = delivered()
    for name in overdue:
        if name in seen:
            memory.expected.pop(name, None)
        elif name in existing:
            memory.expected[name] = now
            metrics.overdue_pods.labels("found").inc()
        else:
            memory.expected.pop(name, None)
            metrics.overdue_pods.labels("gone").inc()
