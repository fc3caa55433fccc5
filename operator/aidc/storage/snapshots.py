"""The VolumeSnapshot of a job's checkpoint claim, taken once when the job succeeds.

A backup, not a part of the job: it carries no owner reference, so deleting the TrainingJob (or
its ttlSecondsAfterFinished) leaves it, as it leaves a claim the user named. What happens to the
storage system's snapshot when the VolumeSnapshot itself is deleted is the VolumeSnapshotClass's
``deletionPolicy``. The operator marks it with the job's labels and uid, so it can tell its own
snapshot from one a user made under the same name.
"""

from __future__ import annotations

from typing import Any, Final

from aidc.api.trainingjob import SnapshotOnSuccess, TrainingJob
from aidc.identity.labels import job_labels
from aidc.identity.names import checkpoint_claim_name, checkpoint_snapshot_name

SNAPSHOT_API_VERSION: Final = "snapshot.storage.k8s.io/v1"
SNAPSHOT_PLURAL: Final = "volumesnapshots"
# which job took the snapshot: the name alone may be a user's own snapshot
ANNOTATION_JOB_UID: Final = "aidc.io/job-uid"


def snapshot_request(job: TrainingJob) -> SnapshotOnSuccess | None:
    """``spec.storage.checkpoints.snapshotOnSuccess``, None when the job asks for no snapshot."""
    checkpoints = job.spec.storage.checkpoints
    return checkpoints.snapshot_on_success if checkpoints is not None else None


def checkpoint_snapshot(job: TrainingJob) -> dict[str, Any] | None:
    """The VolumeSnapshot of the job's checkpoint claim, or None when the spec asks for none."""
    request, claim = snapshot_request(job), checkpoint_claim_name(job)
    if request is None or claim is None:
        return None
    spec: dict[str, Any] = {"source": {"persistentVolumeClaimName": claim}}
    if request.volume_snapshot_class_name:
        spec["volumeSnapshotClassName"] = request.volume_snapshot_class_name
    metadata = {
        "name": checkpoint_snapshot_name(job),
        "namespace": job.metadata["namespace"],
        "labels": job_labels(job, component="checkpoint-snapshot"),
        "annotations": {ANNOTATION_JOB_UID: str(job.metadata["uid"])},
    }
    return {"apiVersion": SNAPSHOT_API_VERSION, "kind": "VolumeSnapshot", "metadata": metadata, "spec": spec}


def is_snapshot_of(snapshot: dict[str, Any], job: TrainingJob) -> bool:
    """Whether ``snapshot`` is the one this job took (its uid) of its own claim."""
    annotations = (snapshot.get("metadata") or {}).get("annotations") or {}
    source = (snapshot.get("spec") or {}).get("source") or {}
    return annotations.get(ANNOTATION_JOB_UID) == str(job.metadata["uid"]) and source.get(
        "persistentVolumeClaimName"
    ) == checkpoint_claim_name(job)
