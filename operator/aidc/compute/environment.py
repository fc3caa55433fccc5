"""The environment every rank gets: torch.distributed's variables, torchrun's PET_* and aidc's own.

A user's own ``command`` gets the same environment, so any torchrun-compatible script runs.
"""

from __future__ import annotations

import json
from typing import Any

from aidc import contract
from aidc.api.trainingjob import TrainingJob
from aidc.identity.names import checkpoint_dir, master_address

HEARTBEAT_SECONDS = 5


def _var(name: str, value: object) -> dict[str, Any]:
    return {"name": name, "value": str(value)}


def _field_ref(name: str, path: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}}


def rank_environment(job: TrainingJob, rank: int, attempt: int) -> list[dict[str, Any]]:
    """Environment of the pod of node rank ``rank``; the user's ``env`` overrides ours by name."""
    spec = job.spec
    nnodes, nproc = spec.replicas, spec.procs_per_replica
    master = master_address(job)
    env = [
        _var(contract.ENV_MASTER_ADDR, master),
        _var(contract.ENV_MASTER_PORT, spec.master_port),
        _var(contract.ENV_WORLD_SIZE, nnodes * nproc),
        _var(contract.ENV_RANK, rank * nproc),
        _var(contract.ENV_NODE_RANK, rank),
        _var(contract.ENV_NNODES, nnodes),
        _var(contract.ENV_NPROC_PER_NODE, nproc),
        _var(contract.ENV_LOCAL_WORLD_SIZE, nproc),
        _var(contract.ENV_PET_NNODES, nnodes),
        _var(contract.ENV_PET_NPROC_PER_NODE, nproc),
        _var(contract.ENV_PET_NODE_RANK, rank),
        _var(contract.ENV_PET_MASTER_ADDR, master),
        _var(contract.ENV_PET_MASTER_PORT, spec.master_port),
        _var(contract.ENV_PYTHON_UNBUFFERED, "1"),
        _var(contract.ENV_JOB_NAME, job.metadata["name"]),
        _var(contract.ENV_GANG_ATTEMPT, attempt),
        _field_ref(contract.ENV_POD_NAME, "metadata.name"),
        _field_ref(contract.ENV_POD_NAMESPACE, "metadata.namespace"),
        _var(contract.ENV_HEARTBEAT_SECONDS, HEARTBEAT_SECONDS),
        _var(contract.ENV_METRICS_PORT, contract.TRAINER_METRICS_PORT if rank == 0 else 0),
    ]
    if spec.storage.checkpoints is not None:
        policy = spec.checkpoint_policy
        env += [
            _var(contract.ENV_CHECKPOINT_DIR, checkpoint_dir(job)),
            _var(contract.ENV_CHECKPOINT_EVERY_STEPS, policy.every_steps),
            _var(contract.ENV_CHECKPOINT_EVERY_SECONDS, policy.every_seconds),
            _var(contract.ENV_CHECKPOINT_KEEP, policy.keep),
        ]
    if spec.storage.data is not None:
        env.append(_var(contract.ENV_DATA_DIR, contract.DATA_MOUNT))
    if spec.trainer is not None:
        config = spec.trainer.model_dump(mode="json", by_alias=True, exclude_none=True)
        env.append(_var(contract.ENV_TRAINER_CONFIG, json.dumps(config, sort_keys=True, separators=(",", ":"))))
    user = [item.to_wire() for item in spec.env]
    overridden = {item["name"] for item in user}
    return [item for item in env if item["name"] not in overridden] + user
