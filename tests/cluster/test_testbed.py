"""The test bed is a real cluster: real scheduling, binding, garbage collection, tokens, node loss.

Each test asks the cluster for something the operator will rely on and waits until the cluster
shows it, so a test bed that only looked like Kubernetes would fail here first.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException

from aidc_testbed import GPU_RESOURCE, Testbed, exit_annotations
from aidc_testbed.storage import POOL_LABEL

pytestmark = pytest.mark.cluster

Waiter = Callable[..., Any]


def pod_manifest(
    name: str,
    *,
    gpus: int = 0,
    annotations: dict[str, str] | None = None,
    restart_policy: str = "Never",
    node: str | None = None,
    service_account: str | None = None,
) -> dict[str, Any]:
    container: dict[str, Any] = {"name": "main", "image": "registry.example/aidc/trainer:test"}
    if gpus:
        container["resources"] = {"limits": {GPU_RESOURCE: str(gpus)}}
    spec: dict[str, Any] = {"restartPolicy": restart_policy, "containers": [container]}
    if node:
        spec["nodeSelector"] = {"kubernetes.io/hostname": node}
    if service_account:
        spec["serviceAccountName"] = service_account
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "annotations": annotations or {}},
        "spec": spec,
    }


def condition(pod: client.V1Pod, kind: str) -> client.V1PodCondition | None:
    return next((c for c in (pod.status.conditions or []) if c.type == kind), None)


def test_gpu_pod_is_bound_by_the_scheduler_and_run_by_kwok(kube: ApiClient, namespace: str, wait_for: Waiter) -> None:
    core = client.CoreV1Api(kube)
    core.create_namespaced_pod(namespace, body=pod_manifest("rank-0", gpus=8))

    pod = wait_for(
        lambda: core.read_namespaced_pod("rank-0", namespace),
        until=lambda p: p.status.phase == "Running",
        message="8-GPU pod Running",
    )
    assert pod.spec.node_name.startswith("kwok-gpu-")
    assert condition(pod, "PodScheduled").status == "True"
    assert condition(pod, "Ready").status == "True"
    assert pod.status.pod_ip
    assert [s.ready for s in pod.status.container_statuses] == [True]
    assert pod.status.container_statuses[0].state.running is not None


def test_pod_asking_more_gpus_than_any_node_has_stays_unschedulable(
    kube: ApiClient, namespace: str, wait_for: Waiter
) -> None:
    core = client.CoreV1Api(kube)
    core.create_namespaced_pod(namespace, body=pod_manifest("too-big", gpus=9))

    def scheduled_condition() -> client.V1PodCondition | None:
        return condition(core.read_namespaced_pod("too-big", namespace), "PodScheduled")

    scheduled = wait_for(scheduled_condition, message="PodScheduled condition written by the scheduler")
    assert (scheduled.status, scheduled.reason) == ("False", "Unschedulable")
    assert f"Insufficient {GPU_RESOURCE}" in scheduled.message
    pod = core.read_namespaced_pod("too-big", namespace)
    assert pod.status.phase == "Pending"
    assert pod.spec.node_name is None


def gibibytes(quantity: str) -> int:
    """The pool's sizes in GiB ("5Gi", "1Ti"); the pool uses no other unit."""
    units = {"Gi": 1, "Ti": 1024}
    return int(quantity[:-2]) * units[quantity[-2:]]


def pool_phases(core: client.CoreV1Api) -> dict[str, str]:
    """Each pool volume's phase by name: what a wait on the pool shows when it times out."""
    volumes = core.list_persistent_volume(label_selector=f"{POOL_LABEL}=true").items
    return {pv.metadata.name: pv.status.phase for pv in volumes}


@pytest.mark.parametrize(("access_mode", "size"), [("ReadWriteOnce", "3Gi"), ("ReadOnlyMany", "60Gi")])
def test_claim_binds_to_the_smallest_fitting_pool_volume(
    kube: ApiClient, namespace: str, wait_for: Waiter, access_mode: str, size: str
) -> None:
    core = client.CoreV1Api(kube)
    # volumes of earlier tests' claims are being reclaimed: wait until the pool is settled, so the
    # volume controller sees the same Available volumes as this list
    wait_for(
        lambda: pool_phases(core),
        until=lambda phases: set(phases.values()) <= {"Available", "Bound"},
        timeout=60,
        message="no pool volume Released",
    )
    pool = core.list_persistent_volume(label_selector=f"{POOL_LABEL}=true").items
    fitting = [
        pv
        for pv in pool
        if pv.status.phase == "Available"
        and access_mode in pv.spec.access_modes
        and gibibytes(pv.spec.capacity["storage"]) >= gibibytes(size)
    ]
    smallest = min(gibibytes(pv.spec.capacity["storage"]) for pv in fitting)
    claim = {
        "metadata": {"name": "checkpoints"},
        "spec": {"accessModes": [access_mode], "resources": {"requests": {"storage": size}}},
    }
    core.create_namespaced_persistent_volume_claim(namespace, body=claim)

    bound = wait_for(
        lambda: core.read_namespaced_persistent_volume_claim("checkpoints", namespace),
        until=lambda c: c.status.phase == "Bound",
        message="claim Bound",
    )
    assert bound.spec.storage_class_name == "standard"  # the default class was applied
    assert bound.spec.volume_name in {pv.metadata.name for pv in fitting}
    assert access_mode in bound.status.access_modes
    assert gibibytes(bound.status.capacity["storage"]) == smallest


def claim_manifest(name: str, size: str = "1Gi", storage_class: str | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": size}}}
    if storage_class is not None:
        spec["storageClassName"] = storage_class
    return {"metadata": {"name": name}, "spec": spec}


def bind(core: client.CoreV1Api, namespace: str, wait_for: Waiter, claim: dict[str, Any]) -> client.V1PersistentVolume:
    """Create ``claim``, wait until it is Bound, and return its volume."""
    name = claim["metadata"]["name"]
    core.create_namespaced_persistent_volume_claim(namespace, body=claim)
    bound = wait_for(
        lambda: core.read_namespaced_persistent_volume_claim(name, namespace),
        until=lambda c: c.status.phase == "Bound",
        message=f"claim {name} Bound",
    )
    return core.read_persistent_volume(bound.spec.volume_name)


def fill(volume: client.V1PersistentVolume) -> Path:
    """Write what a training job leaves on a claim into the volume's host folder; return the folder."""
    folder = Path(volume.spec.host_path.path)
    (folder / "step-100").mkdir()
    (folder / "step-100" / "model.pt").write_bytes(b"weights")
    (folder / "latest").symlink_to("step-100")
    return folder


def test_volumes_released_together_are_emptied_and_offered_again(
    kube: ApiClient, namespace: str, wait_for: Waiter
) -> None:
    core = client.CoreV1Api(kube)
    volumes = [bind(core, namespace, wait_for, claim_manifest(f"checkpoints-{rank}")) for rank in range(4)]
    folders = {volume.metadata.name: fill(volume) for volume in volumes}

    # as a deleted namespace's claims go: all at once, which kube-controller-manager's recycler could
    # not take (see aidc_testbed.reclaimer)
    for rank in range(4):
        core.delete_namespaced_persistent_volume_claim(f"checkpoints-{rank}", namespace)

    def phases() -> dict[str, str]:
        return {name: core.read_persistent_volume(name).status.phase for name in folders}

    wait_for(phases, until=lambda p: set(p.values()) == {"Available"}, timeout=30, message="volumes Available")
    for name, folder in folders.items():
        assert core.read_persistent_volume(name).spec.claim_ref is None
        assert folder.is_dir()
        assert list(folder.iterdir()) == []


def test_a_volume_outside_the_beds_folder_is_never_emptied(
    kube: ApiClient, namespace: str, wait_for: Waiter, tmp_path: Path
) -> None:
    """The reclaimer empties only the bed's own folders, whatever a volume's label says."""
    core = client.CoreV1Api(kube)
    outside = tmp_path / "user-data"
    outside.mkdir()
    (outside / "dataset.bin").write_bytes(b"keep me")
    name = f"{namespace}-outside"
    core.create_persistent_volume(
        body={
            "metadata": {"name": name, "labels": {POOL_LABEL: "true"}},
            "spec": {
                "capacity": {"storage": "1Gi"},
                "accessModes": ["ReadWriteOnce"],
                "storageClassName": namespace,  # a class of its own: only this claim binds it
                "persistentVolumeReclaimPolicy": "Retain",
                "hostPath": {"path": str(outside)},
            },
        }
    )
    try:
        bind(core, namespace, wait_for, claim_manifest("data", storage_class=namespace))
        witness = bind(core, namespace, wait_for, claim_manifest("witness"))
        core.delete_namespaced_persistent_volume_claim("data", namespace)
        wait_for(lambda: core.read_persistent_volume(name).status.phase == "Released", message="outsider Released")
        # the reclaimer sees volumes in the order they change: once the witness, released after the
        # outsider, is Available again, the outsider's release has been seen too
        core.delete_namespaced_persistent_volume_claim("witness", namespace)
        wait_for(
            lambda: core.read_persistent_volume(witness.metadata.name).status.phase,
            until=lambda phase: phase == "Available",
            message="witness Available",
        )
        assert core.read_persistent_volume(name).status.phase == "Released"
        assert (outside / "dataset.bin").read_bytes() == b"keep me"
    finally:
        core.delete_persistent_volume(name)


def test_garbage_collector_deletes_what_a_deleted_owner_owned(
    kube: ApiClient, namespace: str, wait_for: Waiter
) -> None:
    core = client.CoreV1Api(kube)
    owner = core.create_namespaced_config_map(namespace, body={"metadata": {"name": "owner"}})
    reference = {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner.metadata.uid}
    core.create_namespaced_config_map(
        namespace, body={"metadata": {"name": "dependent", "ownerReferences": [reference]}}
    )

    core.delete_namespaced_config_map("owner", namespace, propagation_policy="Background")

    def dependent_gone() -> bool:
        try:
            core.read_namespaced_config_map("dependent", namespace)
        except ApiException as error:
            if error.status == 404:
                return True
            raise
        return False

    wait_for(dependent_gone, timeout=30, message="dependent ConfigMap collected")


@pytest.mark.parametrize(("exit_code", "phase", "reason"), [(3, "Failed", "Error"), (0, "Succeeded", "Completed")])
def test_annotated_pod_exits_with_its_exit_code(
    kube: ApiClient, namespace: str, wait_for: Waiter, exit_code: int, phase: str, reason: str
) -> None:
    core = client.CoreV1Api(kube)
    core.create_namespaced_pod(namespace, body=pod_manifest("rank-0", annotations=exit_annotations(exit_code, "1s")))

    wait_for(
        lambda: core.read_namespaced_pod("rank-0", namespace).status.phase,
        until=lambda p: p == "Running",
        message="pod Running before it exits",
    )
    pod = wait_for(
        lambda: core.read_namespaced_pod("rank-0", namespace),
        until=lambda p: p.status.phase in ("Succeeded", "Failed"),
        timeout=30,
        message="pod ended",
    )
    assert pod.status.phase == phase
    terminated = pod.status.container_statuses[0].state.terminated
    assert (terminated.exit_code, terminated.reason) == (exit_code, reason)
    assert condition(pod, "Ready").status == "False"


def test_pod_that_restarts_always_crash_loops_with_its_exit_code(
    kube: ApiClient, namespace: str, wait_for: Waiter
) -> None:
    core = client.CoreV1Api(kube)
    manifest = pod_manifest("server", annotations=exit_annotations(137, "1s"), restart_policy="Always")
    core.create_namespaced_pod(namespace, body=manifest)

    status = wait_for(
        lambda: core.read_namespaced_pod("server", namespace).status.container_statuses,
        until=lambda s: bool(s) and s[0].restart_count >= 2,
        timeout=30,
        message="container restarted twice",
    )[0]
    assert status.last_state.terminated.exit_code == 137
    assert core.read_namespaced_pod("server", namespace).status.phase == "Running"


def test_failed_node_loses_its_pods_until_it_recovers(
    testbed: Testbed, kube: ApiClient, namespace: str, wait_for: Waiter
) -> None:
    core = client.CoreV1Api(kube)
    node = testbed.node_names()[-1]
    core.create_namespaced_pod(namespace, body=pod_manifest("rank-0", node=node))
    wait_for(
        lambda: core.read_namespaced_pod("rank-0", namespace).status.phase,
        until=lambda p: p == "Running",
        message="pod Running on the node",
    )

    testbed.fail_node(node)
    try:
        ready = next(c for c in core.read_node(node).status.conditions if c.type == "Ready")
        assert ready.status == "Unknown"
        assert condition(core.read_namespaced_pod("rank-0", namespace), "Ready").status == "False"
        taints = wait_for(
            lambda: {t.key for t in core.read_node(node).spec.taints or []},
            until=lambda keys: "node.kubernetes.io/unreachable" in keys,
            message="node tainted unreachable",
        )
        assert "node.kubernetes.io/unreachable" in taints
        # Evicted after the default toleration, then stuck: no kubelet confirms the end.
        evicted = wait_for(
            lambda: core.read_namespaced_pod("rank-0", namespace),
            until=lambda p: p.metadata.deletion_timestamp is not None,
            timeout=60,
            message="pod on the failed node marked for deletion",
        )
        assert condition(evicted, "DisruptionTarget").reason == "DeletionByTaintManager"
    finally:
        testbed.recover_node(node)

    def pod_gone() -> bool:
        try:
            core.read_namespaced_pod("rank-0", namespace)
        except ApiException as error:
            if error.status == 404:
                return True
            raise
        return False

    wait_for(pod_gone, timeout=30, message="deletion completed once the node's kubelet is back")
    wait_for(
        lambda: next(c.status for c in core.read_node(node).status.conditions if c.type == "Ready"),
        until=lambda s: s == "True",
        message="node Ready again",
    )


def test_service_account_token_bound_to_a_pod_names_the_pod(kube: ApiClient, namespace: str, wait_for: Waiter) -> None:
    core = client.CoreV1Api(kube)
    core.create_namespaced_service_account(namespace, body={"metadata": {"name": "trainer"}})
    pod = core.create_namespaced_pod(namespace, body=pod_manifest("rank-0", service_account="trainer"))

    request = {
        "spec": {
            "expirationSeconds": 600,
            "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": "rank-0", "uid": pod.metadata.uid},
        }
    }
    token = core.create_namespaced_service_account_token("trainer", namespace, body=request).status.token
    review = client.AuthenticationV1Api(kube).create_token_review(body={"spec": {"token": token}})

    assert review.status.authenticated
    assert review.status.user.username == f"system:serviceaccount:{namespace}:trainer"
    assert review.status.user.extra["authentication.kubernetes.io/pod-name"] == ["rank-0"]
    assert review.status.user.extra["authentication.kubernetes.io/pod-uid"] == [pod.metadata.uid]


def test_the_report_of_a_failed_install_says_what_its_pods_wait_for(
    kube: ApiClient, namespace: str, wait_for: Waiter
) -> None:
    from aidc_testbed.diagnose import pods_report

    core = client.CoreV1Api(kube)
    stuck = pod_manifest("stuck-0", node="no-such-node")
    core.create_namespaced_pod(namespace, body=stuck)
    report = wait_for(
        lambda: pods_report(kube, namespace),
        until=lambda text: "FailedScheduling" in text and "PodScheduled=False" in text,
        message="the scheduler's refusal in the report",
    )
    assert "pod stuck-0: Pending on (unscheduled)" in report
    assert "PodScheduled=False Unschedulable" in report
    assert "event Warning FailedScheduling Pod/stuck-0" in report
    assert pods_report(kube, "no-such-namespace").startswith("pods in no-such-namespace: 0")
