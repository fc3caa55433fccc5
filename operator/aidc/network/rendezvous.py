"""The headless Service that gives every rank a stable DNS name (``<job>-<rank>.<job>-gang.<ns>.svc``)."""

from __future__ import annotations

from typing import Any

from aidc import contract
from aidc.api.trainingjob import TrainingJob
from aidc.compute.labels import job_labels, owner_reference


def service_name(job: TrainingJob) -> str:
    """``<job>-gang``; pods use it as their ``subdomain``. Not the job's own name: that is left to an
    InferenceService serving the job's model, whose Service is named after it."""
    return f"{job.metadata['name']}-gang"


def master_address(job: TrainingJob) -> str:
    """Rank 0's hostname through the headless Service; stable across gang restarts."""
    name = str(job.metadata["name"])
    return f"{name}-0.{service_name(job)}.{job.metadata['namespace']}.svc"


def rendezvous_service(job: TrainingJob) -> dict[str, Any]:
    """Headless, and publishing not-ready addresses: ranks must resolve each other before any is ready."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": service_name(job),
            "namespace": job.metadata["namespace"],
            "labels": job_labels(job, component="rendezvous"),
            "ownerReferences": [owner_reference(job)],
        },
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": {contract.LABEL_JOB_NAME: str(job.metadata["name"])},
            "ports": [{"name": "rendezvous", "port": job.spec.master_port, "targetPort": job.spec.master_port}],
        },
    }
