"""Gang scheduling by scheduler-plugins' Coscheduling, for real: the bed runs that scheduler.

A TrainingJob with ``gangScheduler: Coscheduling`` gets a PodGroup and pods for the second
scheduler (``aidc_testbed.scheduler_plugins``, started once for this module). The gangs run on a
pool of two 8-GPU kwok nodes of the module's own, tainted so nothing else lands there and nothing
of theirs elsewhere, so what fits is known whatever other tests left behind. A watch records every
pod's binding for the whole test: the default scheduler would bind the ranks that fit at once;
Coscheduling holds them at its Permit gate until the whole gang has a place.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kubernetes import client

from tests.cluster.resources import Bindings, condition, create, get, pods
from tests.factories import training_job_body

pytestmark = pytest.mark.cluster
TJ = "trainingjobs"
POOL_LABEL = "aidc.io/test-pool"
POOL = "coscheduling"
POOL_NODES = ("cosched-gpu-0", "cosched-gpu-1")
# the ranks of a gang that binds are bound together: within this of each other
BIND_WINDOW_SECONDS = 2.0
HELD = "Pod is waiting to be scheduled to node"  # what Coscheduling logs when its Permit holds a rank


def held(scheduler: Any, namespace: str, job: str) -> list[str]:
    """The scheduler's log lines saying its Permit gate held a rank of ``job``."""
    return [line for line in scheduler.said(HELD) if f'pod="{namespace}/{job}-' in line]


@pytest.fixture(autouse=True)
def _quiet_operator(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIDC_METRICS_PORT", "0")


@pytest.fixture(scope="module")
def coscheduler(testbed: Any) -> Iterator[Any]:
    """kube-scheduler with Coscheduling, as ``scheduler-plugins-scheduler``, for this module."""
    from aidc_testbed import scheduler_plugins

    with scheduler_plugins.running(testbed) as scheduler:
        yield scheduler


@pytest.fixture(scope="module")
def gpu_pool(testbed: Any, kube: client.ApiClient, wait_for: Callable[..., Any]) -> Iterator[tuple[str, ...]]:
    """Two Ready 8-GPU kwok nodes labelled and tainted ``aidc.io/test-pool=coscheduling``."""
    from aidc_testbed import GPU_RESOURCE
    from aidc_testbed.nodes import is_ready, node_manifest

    core = client.CoreV1Api(kube)
    for index, name in enumerate(POOL_NODES):
        node = node_manifest(200 + index, testbed.config)
        node["metadata"]["name"] = name
        node["metadata"]["labels"] |= {"kubernetes.io/hostname": name, "type": "kwok-pool", POOL_LABEL: POOL}
        node["spec"]["taints"] = [{"key": POOL_LABEL, "value": POOL, "effect": "NoSchedule"}]
        assert node["status"]["allocatable"][GPU_RESOURCE] == "8"
        core.create_node(body=node)
    try:
        for name in POOL_NODES:
            wait_for(lambda name=name: is_ready(core.read_node(name)), timeout=30, message=f"{name} Ready")
        yield POOL_NODES
    finally:
        for name in POOL_NODES:
            core.delete_node(name)


@pytest.fixture
def bindings(kube: client.ApiClient, namespace: str) -> Iterator[Bindings]:
    watching = Bindings(kube, namespace)
    yield watching
    watching.stop()


def gang_spec(replicas: int, gpus: int, timeout: int, on_timeout: str = "Wait") -> dict[str, Any]:
    """A Coscheduling gang of ``replicas`` ranks of ``gpus`` GPUs each, kept to the pool."""
    toleration = {"key": POOL_LABEL, "operator": "Equal", "value": POOL, "effect": "NoSchedule"}
    return {
        "replicas": replicas,
        "resources": {"gpus": gpus},
        "schedulingPolicy": {
            "gangScheduler": "Coscheduling",
            "scheduleTimeoutSeconds": timeout,
            "onScheduleTimeout": on_timeout,
            "placement": {"nodeSelector": {POOL_LABEL: POOL}, "tolerations": [toleration]},
        },
    }


def scheduled(job: dict[str, Any]) -> dict[str, Any]:
    return condition(job, "Scheduled") or {}


def test_a_gang_that_does_not_fit_is_never_partly_bound_and_times_out_by_policy(
    kube: client.ApiClient,
    crds_applied: list[str],
    namespace: str,
    run_operator: Any,
    wait_for: Callable[..., Any],
    coscheduler: Any,
    gpu_pool: tuple[str, ...],
    bindings: Bindings,
) -> None:
    """Three 8-GPU ranks on two 8-GPU nodes: two fit, and Coscheduling holds them at Permit until
    the gang is turned away, so none is ever bound (the default scheduler binds two). Past
    ``scheduleTimeoutSeconds`` the job says Unschedulable with the scheduler's reason: Pending
    under ``Wait``, Failed under ``Fail`` (a gang whose ranks fit no node at all)."""
    with run_operator(namespace):
        create(kube, namespace, TJ, training_job_body("waits", gang_spec(3, 8, timeout=3)))
        create(kube, namespace, TJ, training_job_body("fails", gang_spec(2, 9, timeout=3, on_timeout="Fail")))
        waiting = wait_for(
            lambda: get(kube, namespace, TJ, "waits"),
            until=lambda j: scheduled(j).get("reason") == "Unschedulable",
            timeout=30,
            message="the gang that does not fit reported Unschedulable",
        )
        failed = wait_for(
            lambda: get(kube, namespace, TJ, "fails"),
            until=lambda j: (condition(j, "Failed") or {}).get("status") == "True",
            timeout=30,
            message="the gang under Fail failed",
        )
        # the scheduler did hold ranks of the gang that does not fit: it was turned away, not ignored
        holds = wait_for(lambda: held(coscheduler, namespace, "waits"), timeout=10, message="a rank held at Permit")
        wait_for(
            lambda: pods(kube, namespace, "fails"),
            until=lambda p: all(x.metadata.deletion_timestamp for x in p),
            message="the ranks of the failed job are deleted",
        )
        assert len(pods(kube, namespace, "waits")) == 3
    bindings.stop()
    assert bindings.seen >= {"waits-0", "waits-1", "waits-2", "fails-0", "fails-1"}
    assert not bindings.bound, f"ranks were bound though their gang never fit: {bindings.bound}; held: {holds}"
    assert waiting["status"]["phase"] == "Pending" and waiting["status"]["reason"] == "Unschedulable"
    message = scheduled(waiting)["message"]
    # by then Coscheduling has turned every rank back from the node it held, and says only that
    assert message.startswith("0/3 ranks scheduled; Coscheduling binds none until all 3 fit at once; the scheduler"), (
        message
    )
    assert "waited over 3s" in message, message
    assert condition(failed, "Failed")["reason"] == "Unschedulable"  # type: ignore[index]
    assert failed["status"]["phase"] == "Failed"
    failure = condition(failed, "Failed")["message"]  # type: ignore[index]
    assert "the scheduler says: " in failure and "nvidia.com/gpu" in failure and "(waited 3s)" in failure, failure


def test_a_gang_that_fits_binds_all_at_once_and_not_before(
    kube: client.ApiClient,
    crds_applied: list[str],
    namespace: str,
    run_operator: Any,
    wait_for: Callable[..., Any],
    coscheduler: Any,
    gpu_pool: tuple[str, ...],
    bindings: Bindings,
) -> None:
    """Two 8-GPU ranks while another pod holds one pool node: one rank fits and is held at Permit,
    unbound (the default scheduler would bind it). Once that pod is gone both ranks bind together."""
    core = client.CoreV1Api(kube)
    blocker = {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "blocker"},
        "spec": {
            "nodeName": gpu_pool[1],
            "tolerations": [{"key": POOL_LABEL, "operator": "Exists"}],
            "containers": [{"name": "c", "image": "busybox",
                            "resources": {"limits": {"nvidia.com/gpu": "8"}, "requests": {"nvidia.com/gpu": "8"}}}],
        },
    }  # fmt: skip
    core.create_namespaced_pod(namespace, blocker)
    with run_operator(namespace):
        create(kube, namespace, TJ, training_job_body("fits", gang_spec(2, 8, timeout=60)))
        wait_for(lambda: held(coscheduler, namespace, "fits"), timeout=30, message="a rank held at Permit")
        # the message follows the ranks as the scheduler reports on them: the rank it turned back from
        # its one node may report first (its words: "optimistic rejection in PostFilter"); once the
        # rank no node fits has reported too, that one must be quoted
        waiting = wait_for(
            lambda: get(kube, namespace, TJ, "fits"),
            until=lambda j: "Insufficient nvidia.com/gpu" in scheduled(j).get("message", ""),
            timeout=30,
            message="the rank no node fits quoted",
        )
        assert not bindings.of("fits-"), f"bound while the gang had no place: {bindings.of('fits-')}"
        group = client.CustomObjectsApi(kube).get_namespaced_custom_object(
            "scheduling.x-k8s.io", "v1alpha1", namespace, "podgroups", "fits"
        )
        ranks = pods(kube, namespace, "fits")
        freed = time.monotonic()
        core.delete_namespaced_pod("blocker", namespace, grace_period_seconds=0)
        running = wait_for(
            lambda: get(kube, namespace, TJ, "fits"),
            until=lambda j: (j.get("status") or {}).get("phase") == "Running",
            timeout=30,
            message="the gang runs once the pool has room",
        )
    bindings.stop()
    bound = bindings.of("fits-")
    assert set(bound) == {"fits-0", "fits-1"}
    times = sorted(at for at, _ in bound.values())
    assert times[0] >= freed, "a rank was bound before the gang had a place"
    assert times[-1] - times[0] <= BIND_WINDOW_SECONDS, f"ranks bound {times[-1] - times[0]:.2f}s apart"
    assert {node for _, node in bound.values()} == set(gpu_pool)
    assert scheduled(waiting)["reason"] == "WaitingForGang"
    assert scheduled(waiting)["message"].startswith(
        "0/2 ranks scheduled; Coscheduling binds none until all 2 fit at once; the scheduler says: 0/"
    ), scheduled(waiting)["message"]
    assert "optimistic rejection" not in scheduled(waiting)["message"]
    assert scheduled(running)["reason"] == "AllRanksScheduled"
    # what the operator made: the PodGroup the scheduler read, and ranks that name it and the scheduler
    assert group["spec"] == {"minMember": 2, "minResources": {"nvidia.com/gpu": "16"}, "scheduleTimeoutSeconds": 60}
    assert group["metadata"]["ownerReferences"][0]["kind"] == "TrainingJob"
    for rank in ranks:
        assert rank.spec.scheduler_name == "scheduler-plugins-scheduler"
        assert rank.metadata.labels["scheduling.x-k8s.io/pod-group"] == "fits"
