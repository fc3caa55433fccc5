"""What the test bed builds, checked without starting it (no binaries needed).

The kwok stage files and the Python constants name the same annotations and labels; the nodes,
volumes and command lines carry what the cluster tests and the operator rely on.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from aidc_testbed import (
    ANNOTATION_EXIT_AFTER,
    ANNOTATION_EXIT_CODE,
    GPU_RESOURCE,
    KUBELET_UP,
    LABEL_KUBELET,
    TestbedConfig,
    WaitTimeoutError,
    exit_annotations,
    wait_for,
)
from aidc_testbed.components import Ports, command_lines
from aidc_testbed.config import default_kwok_stages
from aidc_testbed.layout import Layout
from aidc_testbed.nodes import node_manifest
from aidc_testbed.reclaimer import empty, pool_folder
from aidc_testbed.storage import POOL_ACCESS_MODES, POOL_SIZES, pool_volume_manifests

TOOLS = Path(__file__).resolve().parents[2] / "hack" / "tools"


def pinned_versions() -> dict[str, str]:
    """hack/tools/versions.env: what build-tools.sh builds and copies."""
    lines = (TOOLS / "versions.env").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line and line[0] != "#")


def stages() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for path in default_kwok_stages():
        for doc in yaml.safe_load_all(path.read_text()):
            assert doc["kind"] == "Stage", path
            assert doc["metadata"]["name"] not in found, "stage names must be unique"
            found[doc["metadata"]["name"]] = doc
    return found


def test_kwok_plays_the_default_lifecycle_and_the_exit_stages() -> None:
    assert set(stages()) == {
        "node-initialize", "node-heartbeat",
        "pod-ready", "pod-complete", "pod-delete", "aidc-pod-exit", "aidc-pod-restart",
    }  # fmt: skip


@pytest.mark.parametrize("name", ["aidc-pod-exit", "aidc-pod-restart"])
def test_exit_stages_read_the_annotations_the_package_names(name: str) -> None:
    text = yaml.safe_dump(stages()[name])
    assert f'annotations["{ANNOTATION_EXIT_CODE}"]' in text
    assert stages()[name]["spec"]["delay"]["durationFrom"]["expressionFrom"] == (
        f'.metadata.annotations["{ANNOTATION_EXIT_AFTER}"]'
    )


def test_job_pods_still_complete_unless_a_test_chose_their_exit() -> None:
    keys = [e["key"] for e in stages()["pod-complete"]["spec"]["selector"]["matchExpressions"]]
    assert f'.metadata.annotations["{ANNOTATION_EXIT_CODE}"]' in keys


def test_exit_annotations_reject_codes_a_process_cannot_return() -> None:
    assert exit_annotations(3, "5s") == {ANNOTATION_EXIT_CODE: "3", ANNOTATION_EXIT_AFTER: "5s"}
    with pytest.raises(ValueError, match="256"):
        exit_annotations(256)


def test_nodes_advertise_gpus_and_own_pod_address_ranges() -> None:
    config = TestbedConfig(nodes=300, gpus_per_node=8)
    manifests = [node_manifest(i, config) for i in (0, 1, 299)]
    assert [m["status"]["allocatable"][GPU_RESOURCE] for m in manifests] == ["8", "8", "8"]
    assert all(m["metadata"]["labels"][LABEL_KUBELET] == KUBELET_UP for m in manifests)
    assert len({m["spec"]["podCIDR"] for m in manifests}) == 3
    cpu_only = node_manifest(0, TestbedConfig(gpus_per_node=0))
    assert GPU_RESOURCE not in cpu_only["status"]["allocatable"]
    assert "nvidia.com/gpu.present" not in cpu_only["metadata"]["labels"]


def test_volume_pool_covers_every_size_and_access_mode_set(tmp_path: Path) -> None:
    pool = pool_volume_manifests(32, tmp_path)
    shapes = {(pv["spec"]["capacity"]["storage"], tuple(pv["spec"]["accessModes"])) for pv in pool}
    assert shapes == {(size, modes) for size in POOL_SIZES for modes in POOL_ACCESS_MODES}
    assert len({pv["metadata"]["name"] for pv in pool}) == 32
    assert all(pv["spec"]["hostPath"]["path"].startswith(str(tmp_path)) for pv in pool)


def test_the_pool_is_retained_for_the_reclaimer_and_its_folders_are_the_beds(tmp_path: Path) -> None:
    pool = pool_volume_manifests(4, tmp_path)
    assert {pv["spec"]["persistentVolumeReclaimPolicy"] for pv in pool} == {"Retain"}
    folders = [Path(pv["spec"]["hostPath"]["path"]) for pv in pool]
    assert all(pool_folder(host_path_volume(folder), tmp_path) == folder.resolve() for folder in folders)


def host_path_volume(path: Path) -> client.V1PersistentVolume:
    return client.V1PersistentVolume(
        spec=client.V1PersistentVolumeSpec(host_path=client.V1HostPathVolumeSource(path=str(path)))
    )


def test_the_reclaimer_empties_only_folders_directly_inside_the_beds_volumes(tmp_path: Path) -> None:
    volumes, elsewhere = tmp_path / "volumes", tmp_path / "elsewhere"
    (volumes / "pool-000").mkdir(parents=True)
    elsewhere.mkdir()
    (volumes / "pool-link").symlink_to(elsewhere)
    assert pool_folder(host_path_volume(volumes / "pool-000"), volumes) == (volumes / "pool-000").resolve()
    for path in (
        elsewhere,
        volumes,
        volumes / "pool-000" / "nested",
        volumes / "pool-link",
        volumes / ".." / "elsewhere",
    ):
        assert pool_folder(host_path_volume(path), volumes) is None, path
    not_host_path = client.V1PersistentVolume(spec=client.V1PersistentVolumeSpec())
    assert pool_folder(not_host_path, volumes) is None


def test_emptying_a_folder_removes_its_links_without_following_them(tmp_path: Path) -> None:
    folder, target = tmp_path / "pool-000", tmp_path / "target"
    (folder / "step-100" / "shards").mkdir(parents=True)
    (folder / "step-100" / "shards" / "rank-0.pt").write_bytes(b"weights")
    (folder / "step-100" / "elsewhere").symlink_to(target)
    (folder / "latest").symlink_to(target)
    (folder / ".hidden").write_text("x")
    target.mkdir()
    (target / "keep").write_text("kept")

    empty(folder)

    assert folder.is_dir()
    assert list(folder.iterdir()) == []
    assert (target / "keep").read_text() == "kept"


def test_api_server_enforces_rbac_and_issues_service_account_tokens(tmp_path: Path) -> None:
    config = TestbedConfig(state_dir=tmp_path, eviction_toleration_seconds=7)
    argv = command_lines(config, Layout(tmp_path), Ports(1, 2, 3, 4, 5, 6))
    apiserver = argv["kube-apiserver"]
    assert "--authorization-mode=Node,RBAC" in apiserver
    assert "--default-unreachable-toleration-seconds=7" in apiserver
    assert any(a.startswith("--service-account-signing-key-file=") for a in apiserver)
    assert f"--manage-nodes-with-label-selector={LABEL_KUBELET}={KUBELET_UP}" in argv["kwok"]
    assert list(argv) == ["etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok"]


def test_wait_for_reports_the_last_observed_value() -> None:
    with pytest.raises(WaitTimeoutError, match=r"phase Running: .* last observed: 'Pending'"):
        wait_for(
            lambda: "Pending",
            until=lambda p: p == "Running",
            timeout=0.05,
            interval=0.01,
            message="phase Running",
        )
    with pytest.raises(WaitTimeoutError, match="last observed: KeyError"):
        wait_for(lambda: {}["pod"], ignore=(KeyError,), timeout=0.05, interval=0.01)
    assert wait_for(lambda: "Running", until=lambda p: p == "Running") == "Running"


def test_the_snapshot_crds_come_from_the_module_version_pinned_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """versions.env (what build-tools.sh downloads) and the module's go.mod/go.sum (what verifies it) agree."""
    from aidc_testbed import default_tool_crds_dir

    version = pinned_versions()["EXTERNAL_SNAPSHOTTER_VERSION"]
    module = "github.com/kubernetes-csi/external-snapshotter/client/v8"
    assert f"require {module} {version}" in (TOOLS / "snapshot" / "go.mod").read_text()
    assert f"{module} {version} h1:" in (TOOLS / "snapshot" / "go.sum").read_text()
    monkeypatch.setenv("AIDC_TOOLS", "/x/tools/bin")
    monkeypatch.delenv("AIDC_TOOL_CRDS", raising=False)
    assert default_tool_crds_dir() == Path("/x/tools/crds")  # beside the binaries, as build-tools.sh puts them
    monkeypatch.setenv("AIDC_TOOL_CRDS", "/elsewhere")
    assert default_tool_crds_dir() == Path("/elsewhere")


def test_the_coscheduling_scheduler_and_its_crd_come_from_the_version_pinned_once() -> None:
    """versions.env, the wrapper module's go.mod and go.sum, and the replaces it copies agree: the
    scheduler is built against the Kubernetes release scheduler-plugins pins, not the bed's."""
    pinned = pinned_versions()
    version, kubernetes_version = pinned["SCHEDULER_PLUGINS_VERSION"], pinned["SCHEDULER_PLUGINS_KUBERNETES_VERSION"]
    module = "sigs.k8s.io/scheduler-plugins"
    gomod = (TOOLS / "scheduler-plugins" / "go.mod").read_text()
    assert re.search(rf"^\s*(require )?{re.escape(module)} {version}$", gomod, re.MULTILINE), gomod[:400]
    assert f"{module} {version} h1:" in (TOOLS / "scheduler-plugins" / "go.sum").read_text()
    # the binary is stamped with the Kubernetes release it is built from (build-tools.sh)
    assert f"\tk8s.io/kubernetes => k8s.io/kubernetes {kubernetes_version}\n" in gomod
    assert f"\tk8s.io/client-go => k8s.io/client-go v0.{kubernetes_version.removeprefix('v1.')}\n" in gomod


def test_the_second_scheduler_serves_the_name_coscheduling_pods_carry() -> None:
    """One profile, named as the operator names the pods' scheduler, with Coscheduling as the
    module's manifests/coscheduling configures it: every point it implements, its own queue sort."""
    from aidc.compute.scheduling import COSCHEDULING_SCHEDULER
    from aidc_testbed import scheduler_plugins

    config = scheduler_plugins.configuration(Path("/bed/scheduler-plugins/kubeconfig"))
    (profile,) = config["profiles"]
    assert profile["schedulerName"] == COSCHEDULING_SCHEDULER
    assert profile["plugins"]["multiPoint"] == {"enabled": [{"name": "Coscheduling"}]}
    assert profile["plugins"]["queueSort"] == {"enabled": [{"name": "Coscheduling"}], "disabled": [{"name": "*"}]}
    assert config["clientConnection"]["kubeconfig"] == "/bed/scheduler-plugins/kubeconfig"
    assert config["leaderElection"] == {"leaderElect": False}
