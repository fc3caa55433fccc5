"""The checkpoint claim the operator creates, and where in a claim a reported folder lies.

Which claim and which folder a job uses are in ``aidc.identity.names``: the ranks' pods need them too.
"""

from __future__ import annotations

from typing import Any

from aidc.api.trainingjob import TrainingJob
from aidc.identity.labels import job_labels, owner_reference
from aidc.identity.names import checkpoint_claim_name, checkpoint_sub_path


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
