"""Storage that binds: a default StorageClass and a pool of pre-created hostPath volumes.

The class has no provisioner (``kubernetes.io/no-provisioner``) and binds immediately, so a
claim binds to the smallest free pool volume that fits its size and access modes, by the real
persistent-volume controller. Half of the pool is ReadWriteOnce only (block storage), half also
allows ReadOnlyMany and ReadWriteMany (a file system shared by nodes), so both the checkpoint
claim and the shared data claim of a training job find a match.

Pool volumes are ``Retain``ed and reclaimed when their claim goes, so a long test session does not
drain the pool: the test bed's reclaimer (:mod:`aidc_testbed.reclaimer`, which says why not the
deprecated ``Recycle``) empties the volume's folder and makes it Available again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kubernetes import client

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
                    "persistentVolumeReclaimPolicy": "Retain",
                    "volumeMode": "Filesystem",
                    "hostPath": {"path": str(volumes_dir / name), "type": "DirectoryOrCreate"},
                },
            }
        )
    return manifests


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
