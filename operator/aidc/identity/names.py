"""Deterministic names: an operator restarted at any line finds what it made under the same name."""

from __future__ import annotations

from aidc import contract
from aidc.api.inferenceservice import InferenceService
from aidc.api.trainingjob import TrainingJob


def rank_pod_name(job: TrainingJob, rank: int) -> str:
    """``<job>-<rank>``: also the pod's hostname, so the rendezvous address never changes."""
    return f"{job.metadata['name']}-{rank}"


def rendezvous_service_name(job: TrainingJob) -> str:
    """``<job>-gang``; pods use it as their ``subdomain``. Not the job's own name: that is left to an
    InferenceService serving the job's model, whose Service is named after it."""
    return f"{job.metadata['name']}-gang"


def gang_policy_name(job: TrainingJob) -> str:
    """``<job>-gang``, like the gang's Service: the NetworkPolicy that fences the gang in."""
    return f"{job.metadata['name']}-gang"


def serving_policy_name(isvc: InferenceService) -> str:
    """``<service>-serving``: its suffix cannot also end a gang's policy name (``-gang``), so a
    TrainingJob and an InferenceService never claim the same NetworkPolicy."""
    return f"{isvc.metadata['name']}-serving"


def master_address(job: TrainingJob) -> str:
    """Rank 0's hostname through the headless Service; stable across gang restarts."""
    return f"{rank_pod_name(job, 0)}.{rendezvous_service_name(job)}.{job.metadata['namespace']}.svc"


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


def checkpoint_snapshot_name(job: TrainingJob) -> str:
    """``<job>-checkpoints-<first 8 characters of the job's uid>``: the snapshot outlives the job, so a
    job created again under the same name takes a snapshot of its own instead of finding the old one."""
    return f"{job.metadata['name']}-checkpoints-{str(job.metadata['uid'])[:8]}"
