"""A real node lost during training: its kubelet killed, a rank on each of two real nodes.

The kubelet of rank 0's node dies (SIGKILL); the node turns unreachable, the taint eviction controller
deletes rank 0's pod after the bed's 5 s toleration, and with no kubelet to confirm, the pod stays
Terminating. Its container does not stop: containerd still runs it, as on a node cut off from the
control plane, with the checkpoint claim mounted (the bed's volumes are host folders, reachable from
both nodes). The operator restarts the gang; the surviving rank's SIGTERM reaches the old rank 0
through their collective, which writes a checkpoint and leaves. The new rank 1 runs on the surviving
node at once; the new rank 0 waits under its old name until the stuck pod is force-deleted,
stuckTerminatingSeconds after its grace period (the job says so: OldRanksTerminating), then runs there
too and resumes from the last checkpoint. When the kubelet comes back it stops what is left of the old
pod (its sandbox); no rank runs twice, and the job succeeds once.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from tests.cluster.resources import condition, condition_is, create, get
from tests.e2e.conftest import STUCK_TERMINATING_SECONDS, PodHistory, Release, runtime_states
from tests.e2e.test_real_nodes import (
    TJ,
    claim_folder,
    finished,
    gang_attempt,
    progress_step,
    resumptions,
    training_job,
    unique,
)

pytestmark = pytest.mark.e2e
GRACE_SECONDS = 5  # the pods' terminationGracePeriodSeconds: a rank's SIGTERM checkpoint takes under a second
MAX_STEPS = 150  # past what the old gang reaches before it stops (its node is silent, not its ranks)


class CheckpointLog:
    """The checkpoint files of a job's folder, in the order they appeared (a thread looks every 50 ms)."""

    def __init__(self, folder: Path) -> None:
        self.appeared: list[tuple[int, float]] = []  # (step, Unix time first seen)
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, args=(folder,), daemon=True)
        self._thread.start()

    def _watch(self, folder: Path) -> None:
        known: set[int] = set()
        while not self._done.wait(0.05):
            steps = {int(p.stem.removeprefix("ckpt-")) for p in folder.glob("ckpt-*.pt")}
            self.appeared += [(step, time.time()) for step in sorted(steps - known)]
            known |= steps

    def steps_before(self, moment: float) -> list[int]:
        return [step for step, seen in self.appeared if seen < moment]

    def stop(self) -> None:
        self._done.set()
        self._thread.join(timeout=5)


@pytest.fixture
def two_real_nodes(real_nodes: list[str]) -> list[str]:
    if len(real_nodes) < 2:
        pytest.skip("a lost node needs two real nodes (AIDC_REAL_NODES=2)")
    return real_nodes


def one_rank_per_node(job: str) -> dict[str, Any]:
    """Preferred, not required: the new gang may share the surviving node."""
    term = {"labelSelector": {"matchLabels": {"aidc.io/job-name": job}}, "topologyKey": "kubernetes.io/hostname"}
    return {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
        {"weight": 100, "podAffinityTerm": term}]}}  # fmt: skip


def test_a_lost_real_node_restarts_the_gang_on_the_other_and_loses_and_duplicates_nothing(
    kube: client.ApiClient, testbed: Any, release: Release, wait_for: Callable[..., Any],
    pod_history: PodHistory, two_real_nodes: list[str],
) -> None:  # fmt: skip
    namespace, job = release.watched, unique("lost")
    spec = training_job(job, max_steps=MAX_STEPS, every_steps=10,
                        podTemplate={"spec": {"terminationGracePeriodSeconds": GRACE_SECONDS}})  # fmt: skip
    spec["spec"]["schedulingPolicy"]["placement"]["affinity"] = one_rank_per_node(job)
    create(kube, namespace, TJ, spec)
    claim = wait_for(lambda: claim_folder(kube, namespace, f"{job}-checkpoints"), ignore=(Exception,), timeout=60)
    log = CheckpointLog(claim / job)
    try:
        started = _lose_rank_0s_node(kube, testbed, namespace, job, wait_for, pod_history, log)
        done = finished(kube, namespace, job, wait_for)
    finally:
        log.stop()
    assert condition_is(done, "Succeeded"), done["status"]["conditions"]
    assert done["status"]["restarts"] == 1 and done["status"]["progress"]["step"] == MAX_STEPS
    manifest = json.loads((claim / job / "export" / "final" / "manifest.json").read_text())
    assert manifest["step"] == MAX_STEPS, manifest
    assert _unix(manifest["createdAt"]) >= started, "the final model is not the new gang's"
    steps = [step for step, _ in log.appeared]
    assert steps == sorted(steps), f"a checkpoint older than one before it appeared: {log.appeared}"
    for rank in (0, 1):
        assert len(pod_history.of(f"{job}-{rank}")) == 2, f"rank {rank} ran in more than the two gangs"
    events = client.CoreV1Api(kube).list_namespaced_event(namespace, field_selector=f"involvedObject.name={job}")
    print("Events:", json.dumps([[e.type, e.reason, e.message] for e in events.items]))  # what the docs quote


def _lose_rank_0s_node(
    kube: client.ApiClient, testbed: Any, namespace: str, job: str, wait_for: Callable[..., Any],
    history: PodHistory, log: CheckpointLog,
) -> float:  # fmt: skip
    """Kills the kubelet of rank 0's node and follows the gang to its restart; when the new rank 0 started."""
    core = client.CoreV1Api(kube)
    wait_for(lambda: get(kube, namespace, TJ, job), until=_checkpointed, timeout=180)
    old = [core.read_namespaced_pod(f"{job}-{rank}", namespace) for rank in (0, 1)]
    lost, kept = old[0].spec.node_name, old[1].spec.node_name
    assert lost != kept, "both ranks on one node: the scheduler did not spread them"
    before = wait_for(lambda: max((step for step, _ in log.appeared), default=0), timeout=5)  # the newest before
    testbed.fail_node(lost)
    try:
        stuck = _evicted_and_stuck(kube, namespace, job, old[0].metadata.uid, wait_for)
        restarted = get(kube, namespace, TJ, job)
        assert condition(restarted, "Restarting")["reason"] == "RankLost"  # type: ignore[index]
        waiting = wait_for(lambda: get(kube, namespace, TJ, job), timeout=60,
                           until=lambda j: "its node does not confirm" in _scheduled_message(j))  # fmt: skip
        message = condition(waiting, "Scheduled")["message"]  # type: ignore[index]
        assert f"old pod(s) {job}-0" in message and "its node does not confirm" in message, message
        for found in (restarted, waiting):  # what the docs quote
            print("Status:", json.dumps({k: found["status"].get(k) for k in ("phase", "reason", "conditions")}))
        # the silent node's containers live on: the old pod's sandbox still runs there
        assert "SANDBOX_READY" in runtime_states(testbed, lost, old[0].metadata.uid)["sandboxes"]
        _force_deleted_on_time(kube, namespace, job, stuck, history, wait_for)
        started = _new_gang_resumes(kube, testbed, namespace, job, kept, log, wait_for, at_least=before)
        # the old rank 0 left when its gang stopped: nothing of it runs to write over the new gang's checkpoints
        assert "CONTAINER_RUNNING" not in runtime_states(testbed, lost, old[0].metadata.uid)["containers"]
    finally:
        testbed.recover_node(lost)
    # the kubelet is back: it stops the sandbox of the pod that is no longer bound to it, and runs no rank
    running = {"SANDBOX_READY", "CONTAINER_RUNNING"}
    wait_for(lambda: runtime_states(testbed, lost, old[0].metadata.uid), timeout=60, message="old sandbox stopped",
             until=lambda states: not running & {*states["sandboxes"], *states["containers"]})  # fmt: skip
    ranks = core.list_namespaced_pod(namespace, label_selector=f"aidc.io/job-name={job}").items
    assert {p.spec.node_name for p in ranks} == {kept} and len(ranks) == 2
    return started


def _scheduled_message(job: dict[str, Any]) -> str:
    scheduled = condition(job, "Scheduled") if job.get("status") else None
    return str(scheduled["message"]) if scheduled and scheduled["reason"] == "OldRanksTerminating" else ""


def _checkpointed(job: dict[str, Any]) -> bool:
    return progress_step(job) > 0 and bool((job["status"].get("checkpoint") or {}).get("step"))


def _evicted_and_stuck(
    kube: client.ApiClient, namespace: str, job: str, uid: str, wait_for: Callable[..., Any]
) -> client.V1Pod:
    """Rank 0's pod, evicted by the taint manager and Terminating; the gang restarted (restarts 1)."""
    core = client.CoreV1Api(kube)
    stuck = wait_for(lambda: core.read_namespaced_pod(f"{job}-0", namespace), timeout=60, message="rank 0 evicted",
                     until=lambda p: p.metadata.uid == uid and p.metadata.deletion_timestamp is not None)  # fmt: skip
    disrupted = next(c for c in stuck.status.conditions or [] if c.type == "DisruptionTarget")
    assert disrupted.reason == "DeletionByTaintManager", disrupted
    wait_for(lambda: get(kube, namespace, TJ, job), until=lambda j: j["status"]["restarts"] == 1, timeout=30)
    return stuck


def _force_deleted_on_time(
    kube: client.ApiClient, namespace: str, job: str, stuck: client.V1Pod, history: PodHistory,
    wait_for: Callable[..., Any],
) -> None:  # fmt: skip
    """The stuck pod goes only stuckTerminatingSeconds after its grace period, by the operator's hand."""
    deadline = stuck.metadata.deletion_timestamp.timestamp() + STUCK_TERMINATING_SECONDS
    gone = wait_for(lambda: history.gone_at(stuck.metadata.uid), timeout=STUCK_TERMINATING_SECONDS + GRACE_SECONDS + 30)
    assert gone >= deadline - 1, f"force-deleted {deadline - gone:.1f}s before stuckTerminatingSeconds had passed"
    events = client.CoreV1Api(kube).list_namespaced_event(namespace, field_selector=f"involvedObject.name={job}").items
    assert any(e.reason == "ForceDeleted" and f"pod {job}-0 " in (e.message or "") for e in events), events


def _new_gang_resumes(
    kube: client.ApiClient, testbed: Any, namespace: str, job: str, kept: str, log: CheckpointLog,
    wait_for: Callable[..., Any], *, at_least: int,
) -> float:  # fmt: skip
    """The new gang runs on the surviving node and resumes from the newest checkpoint written before it;
    when its rank 0 started."""
    wait_for(lambda: get(kube, namespace, TJ, job), timeout=120,
             until=lambda j: gang_attempt(j) == 1 and condition_is(j, "Running"))  # fmt: skip
    core = client.CoreV1Api(kube)
    rank0 = core.read_namespaced_pod(f"{job}-0", namespace)
    assert {core.read_namespaced_pod(f"{job}-{r}", namespace).spec.node_name for r in (0, 1)} == {kept}
    resumed = wait_for(lambda: resumptions(testbed.kubeconfig, namespace, f"{job}-0"), ignore=(Exception,), timeout=90)
    written = log.steps_before(rank0.metadata.creation_timestamp.timestamp())
    assert resumed[0]["step"] == max(written) >= at_least, (resumed[0], log.appeared)
    print(f"checkpoint before the loss {at_least}, resumed at {resumed[0]['step']}; appeared {log.appeared}")
    return float(rank0.status.start_time.timestamp())


def _unix(rfc3339: str) -> float:
    return datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).timestamp()
