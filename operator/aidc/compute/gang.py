"""The pods of a training gang: one per node rank, stable hostnames, GPUs as an extended resource."""

from __future__ import annotations

from typing import Any

from aidc import contract
from aidc.api.trainingjob import TrainingJob
from aidc.compute.environment import rank_environment
from aidc.compute.podspec import merge_pod_spec, placement_fields, resource_requirements, restricted_security_context
from aidc.compute.scheduling import gang_annotations, gang_labels, scheduler_name, scheduling_gates
from aidc.compute.trainer_account import token_fields
from aidc.identity.labels import job_labels, owner_reference
from aidc.identity.names import checkpoint_claim_name, rank_pod_name, rendezvous_service_name
from aidc.settings import OperatorSettings

DEFAULT_COMMAND = ["python", "-m", "aidc_trainer"]
TRAINER_UID = 1000


def rank_labels(job: TrainingJob, rank: int, attempt: int) -> dict[str, str]:
    return {
        **job_labels(job),
        contract.LABEL_REPLICA_INDEX: str(rank),
        contract.LABEL_GANG_ATTEMPT: str(attempt),
    }


def _sharded(job: TrainingJob) -> bool:
    trainer = job.spec.trainer
    return trainer is not None and trainer.parallelism is not None and trainer.parallelism.strategy == "FSDP"


def _volumes(job: TrainingJob, rank: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    volumes: list[dict[str, Any]] = []
    mounts: list[dict[str, Any]] = []
    claim = checkpoint_claim_name(job)
    # DDP: only rank 0 writes checkpoints, so block storage (ReadWriteOnce) is enough; FSDP: every
    # rank writes its shards of each checkpoint
    if claim is not None and (rank == 0 or _sharded(job)):
        volumes.append({"name": "checkpoints", "persistentVolumeClaim": {"claimName": claim}})
        mounts.append({"name": "checkpoints", "mountPath": contract.CHECKPOINT_MOUNT})
    data = job.spec.storage.data
    if data is not None:
        volumes.append({"name": "data", "persistentVolumeClaim": {"claimName": data.claim_name, "readOnly": True}})
        mount: dict[str, Any] = {"name": "data", "mountPath": contract.DATA_MOUNT, "readOnly": True}
        if data.sub_path:
            mount["subPath"] = data.sub_path
        mounts.append(mount)
    shm = job.spec.resources.shared_memory
    if shm is not None:
        volumes.append({"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": str(shm)}})
        mounts.append({"name": "dshm", "mountPath": "/dev/shm"})
    return volumes, mounts


def rank_pod(job: TrainingJob, rank: int, attempt: int, settings: OperatorSettings) -> dict[str, Any]:
    """The pod of node rank ``rank`` in gang attempt ``attempt``."""
    spec = job.spec
    volumes, mounts = _volumes(job, rank)
    ports = [{"name": "metrics", "containerPort": contract.TRAINER_METRICS_PORT}]
    if rank == 0:
        ports.insert(0, {"name": "rendezvous", "containerPort": spec.master_port})
    container: dict[str, Any] = {
        "name": "trainer",
        "image": spec.image or settings.trainer_image,
        "imagePullPolicy": spec.image_pull_policy or settings.image_pull_policy,
        "command": list(spec.command or DEFAULT_COMMAND),
        "env": rank_environment(job, rank, attempt),
        "resources": resource_requirements(spec.resources),
        "ports": ports,
        "volumeMounts": mounts,
        "securityContext": restricted_security_context(),
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    if spec.args:
        container["args"] = list(spec.args)
    placement = spec.scheduling_policy.placement
    pod_spec: dict[str, Any] = {
        "hostname": rank_pod_name(job, rank),
        "subdomain": rendezvous_service_name(job),
        # the gang restarts as a whole; a lone rank restarting in place would hang the others
        "restartPolicy": "Never",
        **token_fields(rank, spec.pod_template.spec),
        "enableServiceLinks": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": TRAINER_UID,
            "runAsGroup": TRAINER_UID,
            "fsGroup": TRAINER_UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": volumes,
    }
    pod_spec.update(placement_fields(placement))
    scheduler = scheduler_name(job)
    if scheduler:
        pod_spec["schedulerName"] = scheduler
    if gates := scheduling_gates(job):
        pod_spec["schedulingGates"] = gates
    template = spec.pod_template
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": rank_pod_name(job, rank),
            "namespace": job.metadata["namespace"],
            "labels": {**template.labels, **gang_labels(job), **rank_labels(job, rank, attempt)},
            "annotations": {**template.annotations, **gang_annotations(job)},
            "ownerReferences": [owner_reference(job)],
        },
        "spec": merge_pod_spec(pod_spec, template.spec),
    }


def gang_pods(job: TrainingJob, attempt: int, settings: OperatorSettings) -> list[dict[str, Any]]:
    """Every rank's pod of one gang attempt."""
    return [rank_pod(job, rank, attempt, settings) for rank in range(job.spec.replicas)]
