"""The checkpoint snapshot of a succeeded TrainingJob against the real API server, with the CSI
snapshot CRDs (copied by ``make tools`` from the pinned external-snapshotter module) installed,
and without them.

No snapshot controller runs in the bed, so a snapshot stays pending unless the test writes its
status as the controller would.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.cluster.resources import condition, condition_is, create, exit_pod, get
from tests.factories import training_job_body

pytestmark = pytest.mark.cluster
TJ = "trainingjobs"
GROUP, VERSION, PLURAL = "snapshot.storage.k8s.io", "v1", "volumesnapshots"
CLASS = "aidc-test-snapshots"


@pytest.fixture(autouse=True)
def _quiet_operator(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIDC_METRICS_PORT", "0")
    monkeypatch.setenv("AIDC_RESYNC_SECONDS", "5")


def _snapshot_api_served(kube: client.ApiClient) -> bool:
    groups = client.ApisApi(kube).get_api_versions().groups
    return any(g.name == GROUP and any(v.version == VERSION for v in g.versions) for g in groups)


def _snapshot_crd_documents() -> list[dict[str, Any]]:
    from aidc_testbed import default_tool_crds_dir

    folder = default_tool_crds_dir() / "snapshot"
    paths = sorted(folder.glob("*.yaml"))
    if not paths:
        pytest.fail(f"the CSI snapshot CRDs are missing from {folder}: run `make tools` (hack/build-tools.sh)")
    return [doc for path in paths for doc in yaml.safe_load_all(path.read_text()) if doc]


@pytest.fixture
def snapshot_crds(kube: client.ApiClient, wait_for: Callable[..., Any]) -> None:
    """VolumeSnapshot, VolumeSnapshotContent and VolumeSnapshotClass as the external-snapshotter ships them."""
    extensions = client.ApiextensionsV1Api(kube)
    for doc in _snapshot_crd_documents():
        extensions.patch_custom_resource_definition(
            doc["metadata"]["name"], doc, field_manager="aidc-tests", force=True,
            _content_type="application/apply-patch+yaml",
        )  # fmt: skip
    wait_for(lambda: _snapshot_api_served(kube), timeout=60, message=f"{GROUP}/{VERSION} served")
    snapshot_class = {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "VolumeSnapshotClass", "metadata": {"name": CLASS},
        "driver": "hostpath.csi.k8s.io", "deletionPolicy": "Retain",
    }  # fmt: skip
    client.CustomObjectsApi(kube).patch_cluster_custom_object(
        GROUP, VERSION, "volumesnapshotclasses", CLASS, snapshot_class,
        field_manager="aidc-tests", force=True, _content_type="application/apply-patch+yaml",
    )  # fmt: skip


@pytest.fixture
def no_snapshot_crds(kube: client.ApiClient, wait_for: Callable[..., Any]) -> Iterator[None]:
    """A cluster without the snapshot API (an earlier test may have installed it)."""
    extensions = client.ApiextensionsV1Api(kube)
    for doc in _snapshot_crd_documents():
        try:
            extensions.delete_custom_resource_definition(doc["metadata"]["name"])
        except ApiException as error:
            if error.status != 404:
                raise
    wait_for(lambda: not _snapshot_api_served(kube), timeout=60, message=f"{GROUP}/{VERSION} no longer served")
    yield


def _snapshots(kube: client.ApiClient, namespace: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = client.CustomObjectsApi(kube).list_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL
    )["items"]
    return items


def _run_to_success(kube: client.ApiClient, namespace: str, name: str, wait_for: Callable[..., Any],
                    spec: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
    """Creates a one-rank job, lets kwok run its pod and end it with exit code 0; the job as created."""
    created = create(kube, namespace, TJ, training_job_body(name, {"replicas": 1, **spec}))
    wait_for(lambda: get(kube, namespace, TJ, name), until=lambda j: condition_is(j, "Running"), timeout=60)
    exit_pod(kube, namespace, f"{name}-0", 0)
    wait_for(lambda: get(kube, namespace, TJ, name), until=lambda j: condition_is(j, "Succeeded"), timeout=60)
    return created


def test_a_succeeded_job_takes_exactly_one_snapshot_of_its_claim_that_outlives_it(
    kube: client.ApiClient,
    crds_applied: list[str],
    snapshot_crds: None,
    namespace: str,
    run_operator: Any,
    wait_for: Callable[..., Any],
) -> None:
    checkpoints = {"size": "1Gi", "snapshotOnSuccess": {"volumeSnapshotClassName": CLASS}}
    with run_operator(namespace):
        created = _run_to_success(kube, namespace, "bak", wait_for, {"storage": {"checkpoints": checkpoints}})
        pending = wait_for(
            lambda: get(kube, namespace, TJ, "bak"),
            until=lambda j: (condition(j, "SnapshotTaken") or {}).get("reason") == "SnapshotPending",
            timeout=30,
            message="SnapshotTaken=False, SnapshotPending",
        )
    name = f"bak-checkpoints-{created['metadata']['uid'][:8]}"
    assert pending["status"]["phase"] == "Succeeded"
    # pending: no controller has reported readyToUse
    assert pending["status"]["snapshot"] == {
        "name": name,
        "claimName": "bak-checkpoints",
        "volumeSnapshotClassName": CLASS,
    }
    (snapshot,) = _snapshots(kube, namespace)
    assert snapshot["metadata"]["name"] == name
    assert snapshot["spec"] == {
        "source": {"persistentVolumeClaimName": "bak-checkpoints"},
        "volumeSnapshotClassName": CLASS,
    }
    assert "ownerReferences" not in snapshot["metadata"]  # a backup: deleting the job keeps it
    assert snapshot["metadata"]["labels"]["aidc.io/job-name"] == "bak"

    # a new operator process finds the snapshot by its name and takes no second one; it reports
    # what the snapshot controller would write
    reported = {"readyToUse": True, "restoreSize": "1Gi", "creationTime": "2026-12-02T12:00:00Z"}
    client.CustomObjectsApi(kube).patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, PLURAL, name, {"status": reported}
    )
    with run_operator(namespace):
        ready = wait_for(
            lambda: get(kube, namespace, TJ, "bak"),
            until=lambda j: condition_is(j, "SnapshotTaken", "SnapshotReady"),
            timeout=30,
            message="SnapshotTaken=True after a restart",
        )
    assert ready["status"]["snapshot"]["readyToUse"] is True and ready["status"]["snapshot"]["restoreSize"] == "1Gi"
    assert [s["metadata"]["name"] for s in _snapshots(kube, namespace)] == [name]

    client.CustomObjectsApi(kube).delete_namespaced_custom_object("aidc.io", "v1alpha1", namespace, TJ, "bak")
    wait_for(lambda: not any(j["metadata"]["name"] == "bak" for j in _jobs(kube, namespace)), message="job gone")
    assert [s["metadata"]["name"] for s in _snapshots(kube, namespace)] == [name]


def _jobs(kube: client.ApiClient, namespace: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = client.CustomObjectsApi(kube).list_namespaced_custom_object(
        "aidc.io", "v1alpha1", namespace, TJ
    )["items"]
    return items


def test_without_the_snapshot_api_the_job_still_succeeds_and_says_why_there_is_no_snapshot(
    kube: client.ApiClient,
    crds_applied: list[str],
    no_snapshot_crds: None,
    namespace: str,
    run_operator: Any,
    wait_for: Callable[..., Any],
) -> None:
    checkpoints = {"claimName": "team-checkpoints", "snapshotOnSuccess": {}}
    claim = {
        "metadata": {"name": "team-checkpoints"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
    }
    client.CoreV1Api(kube).create_namespaced_persistent_volume_claim(namespace, claim)
    with run_operator(namespace):
        _run_to_success(kube, namespace, "nobak", wait_for, {"storage": {"checkpoints": checkpoints}})
        job = wait_for(
            lambda: get(kube, namespace, TJ, "nobak"),
            until=lambda j: condition(j, "SnapshotTaken") is not None,
            timeout=30,
            message="a SnapshotTaken condition",
        )
    taken = condition(job, "SnapshotTaken")
    assert taken is not None and (taken["status"], taken["reason"]) == ("False", "SnapshotAPIUnavailable")
    assert "snapshot.storage.k8s.io/v1 API is not served" in taken["message"]
    assert job["status"]["phase"] == "Succeeded" and "snapshot" not in job["status"]
    events = client.CoreV1Api(kube).list_namespaced_event(namespace, field_selector="involvedObject.name=nobak")
    assert "SnapshotAPIUnavailable" in {e.reason for e in events.items}


def test_kubectl_explain_describes_the_snapshot_field(testbed: Any, crds_applied: list[str]) -> None:
    kubectl = ["kubectl", "--kubeconfig", str(testbed.kubeconfig), "explain"]
    text = subprocess.run(
        [*kubectl, "trainingjobs.spec.storage.checkpoints.snapshotOnSuccess"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert "deleting the job keeps the backup" in text and "volumeSnapshotClassName" in text
