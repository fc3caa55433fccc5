"""Storage that binds: a default StorageClass and a pool of pre-created hostPath volumes.

The class has no provisioner (``kubernetes.io/no-provisioner``) and binds immediately, so a
claim binds to the smallest free pool volume that fits its size and access modes, by the real
persistent-volume controller. Half of the pool is ReadWriteOnce only (block storage), half also
allows ReadOnlyMany and ReadWriteMany (a file system shared by nodes), so both the checkpoint
claim and the shared data claim of a training job find a match.

Pool volumes are recycled when their claim goes, so a long test session does not drain the pool:
kube-controller-manager runs its recycler pod, which the test bed's template puts on a kwok node
and annotates for kwok to complete at once (so a recycled volume is not scrubbed: tests that run
real pods use names of their own).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kubernetes import client

from aidc_testbed.kwok import exit_annotations

STORAGE_CLASS = "standard"
POOL_LABEL = "aidc.io/testbed-pool"
POOL_SIZES = ("1Gi", "2Gi", "5Gi", "10Gi", "50Gi", "100Gi", "500Gi", "1Ti")
POOL_ACCESS_MODES: tuple[tuple[str, ...], ...] = (
    ("ReadWriteOnce",),
    ("ReadWriteOnce", "ReadOnlyMany", "ReadWriteMany"),
)


def storage_class_manifest() -> dict[str, Any]:
    return {
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": {
            "name": STORAGE_CLASS,
            "annotations": {"storageclass.kubernetes.io/is-default-class": "true"},
        },
        "provisioner": "kubernetes.io/no-provisioner",
        "volumeBindingMode": "Immediate",
        "reclaimPolicy": "Delete",
    }


def pool_volume_manifests(count: int, volumes_dir: Path) -> list[dict[str, Any]]:
    """``count`` PersistentVolumes cycling through every size and access-mode set."""
    shapes = [(size, modes) for modes in POOL_ACCESS_MODES for size in POOL_SIZES]
    manifests = []
    for index in range(count):
        size, modes = shapes[index % len(shapes)]
        name = f"pool-{index:03d}-{size.lower()}-{'rwo' if len(modes) == 1 else 'rwx'}"
        manifests.append(
            {
                "apiVersion": "v1",
                "kind": "PersistentVolume",
                "metadata": {"name": name, "labels": {POOL_LABEL: "true"}},
                "spec": {
                    "capacity": {"storage": size},
                    "accessModes": list(modes),
                    "storageClassName": STORAGE_CLASS,
                    "persistentVolumeReclaimPolicy": "Recycle",
                    "volumeMode": "Filesystem",
                    "hostPath": {"path": str(volumes_dir / name), "type": "DirectoryOrCreate"},
                },
            }
        )
    return manifests


def recycler_pod_manifest() -> dict[str, Any]:
    """kube-controller-manager's recycler pod, annotated so kwok ends it with exit code 0."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": "pv-recycler-",
            "namespace": "default",
            "annotations": exit_annotations(0),
        },
        "spec": {
            "activeDeadlineSeconds": 60,
            "restartPolicy": "Never",
            # only kwok plays it: a real node cannot pull this image, and has nothing to scrub it for
            "nodeSelector": {"type": "kwok"},
            "volumes": [{"name": "vol"}],
            "containers": [
                {
                    "name": "pv-recycler",
                    "image": "registry.k8s.io/build-image/debian-base:bookworm-v1.0.6",
                    "command": ["/bin/sh", "-c", "find /scrub -mindepth 1 -delete"],
                    "volumeMounts": [{"name": "vol", "mountPath": "/scrub"}],
                }
            ],
        },
    }


def create_storage(api: client.ApiClient, volume_count: int, volumes_dir: Path) -> None:
    """Create the default StorageClass and the volume pool, with a host folder per volume."""
    client.StorageV1Api(api).create_storage_class(body=storage_class_manifest())
    core = client.CoreV1Api(api)
    for manifest in pool_volume_manifests(volume_count, volumes_dir):
        folder = Path(manifest["spec"]["hostPath"]["path"])
        folder.mkdir(parents=True, exist_ok=True)
        # fsGroup does not apply to hostPath: like kind's local-path provisioner, the folder is open
        # to every uid, so the non-root trainer (uid 1000) on a real node can write its checkpoints
        folder.chmod(0o777)
        core.create_persistent_volume(body=manifest)
