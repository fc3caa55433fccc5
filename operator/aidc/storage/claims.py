"""The checkpoint claim: which claim, which folder in it, and the claim the operator creates."""

from __future__ import annotations

from typing import Any

from aidc import contract
from aidc.api.trainingjob import TrainingJob
from aidc.compute.labels import job_labels, owner_reference


def checkpoint_claim_name(job: TrainingJob) -> str | None:
    """The claim that holds this job's checkpoints, or None when the job keeps none."""
    checkpoints = job.spec.storage.checkpoints
    if checkpoints is None:
        return None
    return checkpoints.claim_name or f"{job.metadata['name']}-checkpoints"


def checkpoint_sub_path(job: TrainingJob) -> str:
    """Folder of this job inside its checkpoint claim (the job's name unless the spec says)."""
    checkpoints = job.spec.storage.checkpoints
    sub_path = checkpoints.sub_path if checkpoints else None
    return (sub_path or str(job.metadata["name"])).strip("/")


def checkpoint_dir(job: TrainingJob) -> str:
    """AIDC_CHECKPOINT_DIR inside rank 0: the job's folder on the mounted claim."""
    return f"{contract.CHECKPOINT_MOUNT}/{checkpoint_sub_path(job)}"


def owned_claim(job: TrainingJob) -> dict[str, Any] | None:
    """The claim the operator creates when the spec gives a size (None when it names one)."""
    checkpoints = job.spec.storage.checkpoints
    if checkpoints is None or checkpoints.size is None:
        return None
    metadata: dict[str, Any] = {
        "name": checkpoint_claim_name(job),
        "namespace": job.metadata["namespace"],
        "labels": job_labels(job, component="checkpoints"),
    }
    # Retain: no owner, so deleting the job keeps the checkpoints (they are data)
    if checkpoints.reclaim_policy == "Delete":
        metadata["ownerReferences"] = [owner_reference(job)]
    spec: dict[str, Any] = {
        "accessModes": list(checkpoints.access_modes),
        "resources": {"requests": {"storage": str(checkpoints.size)}},
    }
    if checkpoints.storage_class_name:
        spec["storageClassName"] = checkpoints.storage_class_name
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": metadata, "spec": spec}


def model_location(job: TrainingJob, reported_path: str) -> str:
    """Path inside the claim of a folder the trainer reported relative to its checkpoint dir."""
    return f"{checkpoint_sub_path(job)}/{reported_path.strip('/')}"
