"""TrainingJobs under a real Kueue (plain pod groups) on kwok nodes: quota, queueing, preemption.

One Kueue controller manager serves the whole module (hack/testbed/aidc_testbed/kueue.py); each
test has a ClusterQueue of its own (so nothing a test left behind holds another's quota), its
namespace labelled for Kueue and a LocalQueue in it. Every pod state of the namespace is recorded
by a watch, and no test ends without checking that no rank ran while another of its gang was
still gated.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException

from tests.cluster.resources import create, exit_pod, get, pods
from tests.factories import training_job_body

pytestmark = pytest.mark.cluster
TJ = "trainingjobs"
KUEUE = "kueue.x-k8s.io"
FLAVOR = "aidc-gpu"
QUEUE = "team-a"
GANG_GPUS = 8  # two ranks of 4 GPUs: a gang
QUOTA_GPUS = 16  # two gangs
LOW, HIGH = "aidc-kueue-low", "aidc-kueue-high"


@pytest.fixture(autouse=True)
def _quiet_operator(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIDC_METRICS_PORT", "0")
    monkeypatch.setenv("AIDC_RESYNC_SECONDS", "5")


@pytest.fixture(scope="module")
def kueue(testbed: Any, kube: client.ApiClient) -> Iterator[Any]:
    """Kueue for this module, its ResourceFlavor and two pod PriorityClasses; all gone afterwards."""
    from aidc_testbed import default_tool_crds_dir
    from aidc_testbed.kueue import Kueue
    from aidc_testbed.pki import Pki

    pki = Pki(testbed.layout.pki)
    if not pki.ca_key.exists():
        pytest.skip("Kueue's webhooks need the bed's CA key: not available on a bed reached by AIDC_KUBECONFIG")
    root = testbed.layout.root / "kueue"
    crds = default_tool_crds_dir() / "kueue"
    with Kueue(kube, testbed.kubeconfig, pki, testbed.config.tools_dir, crds, root, timeout=60) as running:
        custom = client.CustomObjectsApi(kube)
        custom.create_cluster_custom_object(KUEUE, "v1beta2", "resourceflavors", {
            "apiVersion": f"{KUEUE}/v1beta2", "kind": "ResourceFlavor", "metadata": {"name": FLAVOR},
        })  # fmt: skip
        scheduling = client.SchedulingV1Api(kube)
        for name, value in ((LOW, 100), (HIGH, 1000)):
            scheduling.create_priority_class({"metadata": {"name": name}, "value": value})
        try:
            yield running
        finally:
            for name in (LOW, HIGH):
                scheduling.delete_priority_class(name)


class GangTimeline:
    """Every pod event of a namespace, in the order the API server wrote them (one watch)."""

    def __init__(self, kube: client.ApiClient, namespace: str) -> None:
        self._watch = watch.Watch()
        self.events: list[tuple[str, dict[str, Any]]] = []
        self._lock = threading.Lock()
        core = client.CoreV1Api(kube)

        def run() -> None:
            try:
                for event in self._watch.stream(core.list_namespaced_pod, namespace, deserialize=False):
                    with self._lock:
                        self.events.append((event["type"], event["object"]))
            except Exception:  # the watch ends with the test
                return

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()

    def running_beside_gated(self, gate: str = "kueue.x-k8s.io/admission") -> list[str]:
        """Each moment a rank ran while another rank of the same gang attempt still carried ``gate``
        (Kueue's: it waited for admission)."""
        now: dict[str, dict[str, Any]] = {}  # uid -> the pod as last seen
        found = []
        with self._lock:
            events = list(self.events)
        for kind, pod in events:
            uid = pod["metadata"]["uid"]
            if kind == "DELETED":
                now.pop(uid, None)
                continue
            now[uid] = pod
            gangs: dict[tuple[str, str], list[dict[str, Any]]] = {}
            for seen in now.values():
                labels = seen["metadata"].get("labels") or {}
                gangs.setdefault(
                    (labels.get("aidc.io/job-name", ""), labels.get("aidc.io/gang-attempt", "")), []
                ).append(seen)
            for gang, members in gangs.items():
                gated = [p["metadata"]["name"] for p in members
                         if any(g["name"] == gate for g in p["spec"].get("schedulingGates") or ())]  # fmt: skip
                running = [p["metadata"]["name"] for p in members if (p.get("status") or {}).get("phase") == "Running"]
                if gated and running:
                    found.append(f"{gang}: {running} running while {gated} gated")
        return found

    def gated(self) -> set[str]:
        """``job/attempt`` of every gang one of whose ranks was seen waiting for Kueue's admission."""
        with self._lock:
            pods = [
                pod
                for _, pod in self.events
                if any(g["name"] == "kueue.x-k8s.io/admission" for g in pod["spec"].get("schedulingGates") or ())
            ]
        return {f"{p['metadata']['labels']['aidc.io/job-name']}/{p['metadata']['labels']['aidc.io/gang-attempt']}"
                for p in pods}  # fmt: skip

    def stop(self) -> None:
        self._watch.stop()


class Queue:
    """This test's ClusterQueue and LocalQueue (``open``) and the namespace's pod ``timeline``."""

    def __init__(self, open_: Callable[..., None], timeline: GangTimeline) -> None:
        self.open = open_
        self.timeline = timeline


@pytest.fixture
def queue(kueue: Any, kube: client.ApiClient, namespace: str) -> Iterator[Queue]:
    """``queue.open(preemption=...)``: this test's ClusterQueue (16 GPUs) and LocalQueue ``team-a``;
    the namespace is labelled for Kueue. Afterwards the pods Kueue still holds are released (as a
    kubelet would end them), so the namespace can go."""
    from aidc_testbed.kueue import NAMESPACE_LABEL

    core, custom = client.CoreV1Api(kube), client.CustomObjectsApi(kube)
    core.patch_namespace(namespace, {"metadata": {"labels": {NAMESPACE_LABEL: "true"}}})
    kueue.wait_until_gating(namespace)
    timeline = GangTimeline(kube, namespace)
    cluster_queue = f"cq-{namespace}"

    def make(preemption: dict[str, str] | None = None) -> None:
        quota = [{"name": "cpu", "nominalQuota": 64}, {"name": "memory", "nominalQuota": "256Gi"},
                 {"name": "nvidia.com/gpu", "nominalQuota": QUOTA_GPUS}]  # fmt: skip
        spec: dict[str, Any] = {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
            "resourceGroups": [{"coveredResources": ["cpu", "memory", "nvidia.com/gpu"],
                                "flavors": [{"name": FLAVOR, "resources": quota}]}],
        }  # fmt: skip
        if preemption:
            spec["preemption"] = preemption
        custom.create_cluster_custom_object(KUEUE, "v1beta2", "clusterqueues", {
            "apiVersion": f"{KUEUE}/v1beta2", "kind": "ClusterQueue", "metadata": {"name": cluster_queue}, "spec": spec,
        })  # fmt: skip
        custom.create_namespaced_custom_object(KUEUE, "v1beta2", namespace, "localqueues", {
            "apiVersion": f"{KUEUE}/v1beta2", "kind": "LocalQueue", "metadata": {"name": QUEUE},
            "spec": {"clusterQueue": cluster_queue},
        })  # fmt: skip

    yield Queue(make, timeline)
    timeline.stop()
    for pod in core.list_namespaced_pod(namespace).items:
        if "kueue.x-k8s.io/managed" in (pod.metadata.finalizers or []):
            body = {"metadata": {"$deleteFromPrimitiveList/finalizers": ["kueue.x-k8s.io/managed"]}}
            try:
                core.patch_namespaced_pod(pod.metadata.name, namespace, body)
            except ApiException as error:
                if error.status != 404:
                    raise
    try:
        custom.delete_cluster_custom_object(KUEUE, "v1beta2", "clusterqueues", cluster_queue)
    except ApiException as error:
        if error.status != 404:
            raise


def gang(name: str, priority: str | None = None) -> dict[str, Any]:
    """The module's test job: two ranks of 4 GPUs in queue team-a, through Kueue."""
    policy: dict[str, Any] = {"gangScheduler": "Kueue", "queue": QUEUE}
    if priority:
        policy["placement"] = {"priorityClassName": priority}
    spec = {"resources": {"gpus": GANG_GPUS // 2, "cpu": "1", "memory": "1Gi"}, "schedulingPolicy": policy,
            "failurePolicy": {"backoffSeconds": 1}}  # fmt: skip
    return training_job_body(name, spec)


def phase_of(job: dict[str, Any]) -> tuple[str | None, str | None]:
    status = job.get("status") or {}
    return status.get("phase"), status.get("reason")


def finish(kube: client.ApiClient, namespace: str, job: str) -> None:
    for pod in pods(kube, namespace, job):
        exit_pod(kube, namespace, pod.metadata.name, 0, after="0s")


def scheduled_message(job: dict[str, Any]) -> str:
    return next(c["message"] for c in job["status"]["conditions"] if c["type"] == "Scheduled")


def test_gangs_within_quota_run_the_next_is_queued_with_kueue_s_reason_and_runs_when_one_finishes(
    kube: client.ApiClient,
    crds_applied: list[str],
    namespace: str,
    queue: Queue,
    run_operator: Any,
    wait_for: Callable[..., Any],
) -> None:
    queue.open()
    with run_operator(namespace):
        for name in ("a", "b"):
            create(kube, namespace, TJ, gang(name))
        for name in ("a", "b"):
            wait_for(lambda name=name: phase_of(get(kube, namespace, TJ, name)), until=lambda p: p[0] == "Running",
                     timeout=60, message=f"{name} Running")  # fmt: skip
        create(kube, namespace, TJ, gang("c"))
        queued = wait_for(lambda: get(kube, namespace, TJ, "c"),
                          until=lambda j: phase_of(j) == ("Queued", "Queued") and "Kueue says" in scheduled_message(j),
                          timeout=30, message="c Queued with Kueue's reason")  # fmt: skip
        assert "insufficient unused quota for nvidia.com/gpu" in scheduled_message(queued)
        assert all(p.spec.scheduling_gates for p in pods(kube, namespace, "c"))
        finish(kube, namespace, "a")
        wait_for(lambda: phase_of(get(kube, namespace, TJ, "a")), until=lambda p: p[0] == "Succeeded", timeout=30)
        admitted = wait_for(lambda: get(kube, namespace, TJ, "c"), until=lambda j: phase_of(j)[0] == "Running",
                            timeout=60, message="c admitted once a finished")  # fmt: skip
        assert admitted["status"]["restarts"] == 0 and admitted["status"]["gangAttempt"] == 0
        assert phase_of(get(kube, namespace, TJ, "b"))[0] == "Running"
    assert {"a/0", "b/0", "c/0"} <= queue.timeline.gated()  # every gang waited for admission, gated
    assert queue.timeline.running_beside_gated() == []


def test_a_higher_priority_gang_preempts_a_lower_one_which_says_so_and_runs_again_whole(
    kube: client.ApiClient,
    crds_applied: list[str],
    namespace: str,
    queue: Queue,
    run_operator: Any,
    wait_for: Callable[..., Any],
) -> None:
    queue.open(preemption={"withinClusterQueue": "LowerPriority"})
    with run_operator(namespace):
        for name in ("low-1", "low-2"):
            create(kube, namespace, TJ, gang(name, LOW))
        for name in ("low-1", "low-2"):
            wait_for(lambda name=name: phase_of(get(kube, namespace, TJ, name)), until=lambda p: p[0] == "Running",
                     timeout=60, message=f"{name} Running")  # fmt: skip
        create(kube, namespace, TJ, gang("high", HIGH))

        def preempted() -> dict[str, Any] | None:
            jobs = [get(kube, namespace, TJ, n) for n in ("low-1", "low-2")]
            return next((j for j in jobs if (j.get("status") or {}).get("preemptions")), None)

        victim = wait_for(preempted, timeout=60, message="a low-priority gang preempted")
        name = victim["metadata"]["name"]
        wait_for(lambda: phase_of(get(kube, namespace, TJ, "high")), until=lambda p: p[0] == "Running", timeout=60,
                 message="high Running")  # fmt: skip
        requeued = wait_for(lambda: get(kube, namespace, TJ, name), until=lambda j: phase_of(j)[0] == "Queued",
                            timeout=60, message=f"{name} recreated and queued again")  # fmt: skip
        status = requeued["status"]
        assert status["preemptions"] == 1 and status["restarts"] == 0 and status["gangAttempt"] == 1
        restarting = next(c for c in status["conditions"] if c["type"] == "Restarting")
        assert restarting["reason"] == "Preempted"
        assert "WorkloadEvictedDueToPreempted" in restarting["message"]
        assert "Preempted to accommodate a workload" in restarting["message"]
        events = client.CoreV1Api(kube).list_namespaced_event(namespace, field_selector=f"involvedObject.name={name}")
        assert any(e.reason == "Preempted" and e.type == "Warning" for e in events.items)
        assert all(p.metadata.labels["aidc.io/gang-attempt"] == "1" for p in pods(kube, namespace, name))
        finish(kube, namespace, "high")
        back = wait_for(lambda: get(kube, namespace, TJ, name), until=lambda j: phase_of(j)[0] == "Running",
                        timeout=60, message=f"{name} readmitted")  # fmt: skip
        assert back["status"]["gangAttempt"] == 1 and back["status"]["restarts"] == 0
    assert {f"{name}/0", f"{name}/1", "high/0"} <= queue.timeline.gated()  # the recreated gang was gated again
    assert queue.timeline.running_beside_gated() == []
