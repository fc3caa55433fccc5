"""A small burst of TrainingJobs: every gang gets exactly its ranks, once, and runs.

The correctness side of ``benchmarks/operator`` (which measures the same at 1,000 jobs): 50 jobs
of 2-4 ranks submitted at once to the operator in-process, while a watch records every pod it
sees. No timing is asserted, only what must hold however slow the machine is.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from kubernetes import client

from tests.cluster.resources import GROUP, VERSION, create
from tests.factories import training_job_body

pytestmark = pytest.mark.cluster
TJ = "trainingjobs"
JOBS = 50
JOB_LABEL = "aidc.io/job-name"


@pytest.fixture(autouse=True)
def _quiet_operator(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIDC_METRICS_PORT", "0")


def ranks_of(index: int) -> int:
    return 2 + index % 3  # 2, 3 and 4 ranks


class PodRecorder:
    """Every (pod name -> uids) seen by listing the namespace's rank pods twice a second, in a thread.

    A pod deleted and created again under its name shows as a second uid (unless both happen
    between two lists: the final check of one uid per rank, from a list, covers the rest).
    """

    def __init__(self, kube: client.ApiClient, namespace: str) -> None:
        self.uids: dict[str, set[str]] = defaultdict(set)
        self._core, self._namespace = client.CoreV1Api(kube), namespace
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stopped.is_set():
            for pod in self._core.list_namespaced_pod(self._namespace, label_selector=JOB_LABEL).items:
                self.uids[pod.metadata.name].add(pod.metadata.uid)
            self._stopped.wait(0.5)

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join(10)


@pytest.fixture
def recorder(kube: client.ApiClient, namespace: str) -> Iterator[PodRecorder]:
    recording = PodRecorder(kube, namespace)
    yield recording
    recording.stop()


def test_a_burst_of_jobs_gets_exactly_its_ranks_once_and_runs(
    kube: client.ApiClient,
    crds_applied: list[str],
    namespace: str,
    run_operator: Any,
    wait_for: Callable[..., Any],
    recorder: PodRecorder,
) -> None:
    names = {f"burst-{i:02d}": ranks_of(i) for i in range(JOBS)}  # no GPUs: every gang fits at once
    custom = client.CustomObjectsApi(kube)

    def phases() -> dict[str, str | None]:
        items = custom.list_namespaced_custom_object(GROUP, VERSION, namespace, TJ)["items"]
        return {j["metadata"]["name"]: (j.get("status") or {}).get("phase") for j in items}

    with run_operator(namespace):
        with ThreadPoolExecutor(16) as pool:
            list(
                pool.map(
                    lambda item: create(kube, namespace, TJ, training_job_body(item[0], {"replicas": item[1]})),
                    names.items(),
                )
            )
        wait_for(
            phases,
            until=lambda seen: len(seen) == JOBS and all(p == "Running" for p in seen.values()),
            timeout=240,
            interval=1,
            message=f"all {JOBS} jobs Running",
        )
        pods = client.CoreV1Api(kube).list_namespaced_pod(namespace, label_selector=JOB_LABEL).items

    by_job: dict[str, list[client.V1Pod]] = defaultdict(list)
    for pod in pods:
        by_job[pod.metadata.labels[JOB_LABEL]].append(pod)
    assert set(by_job) == set(names)
    for job, ranks in names.items():
        gang = by_job[job]
        assert sorted(p.metadata.name for p in gang) == sorted(f"{job}-{r}" for r in range(ranks)), job
        assert sorted(int(p.metadata.labels["aidc.io/replica-index"]) for p in gang) == list(range(ranks)), job
        assert all(p.status.phase == "Running" for p in gang), job
        assert {p.metadata.labels["aidc.io/gang-attempt"] for p in gang} == {"0"}, job
    # no rank was ever created twice: the watch saw one uid per pod name, and no pod beyond the gangs
    expected = {f"{job}-{r}" for job, ranks in names.items() for r in range(ranks)}
    wait_for(lambda: set(recorder.uids), until=lambda seen: seen >= expected, message="the watch caught up")
    assert set(recorder.uids) == expected
    twice = {name: uids for name, uids in recorder.uids.items() if len(uids) != 1}
    assert not twice, f"pods created more than once: {twice}"
    assert len({uid for uids in recorder.uids.values() for uid in uids}) == sum(names.values())
