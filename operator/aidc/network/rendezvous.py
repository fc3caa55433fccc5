"""The headless Service that gives every rank a stable DNS name (``<job>-<rank>.<job>-gang.<ns>.svc``).

Its name and rank 0's address are in ``aidc.identity.names``: the ranks' pods need them too.
"""

from __future__ import annotations

from typing import Any

from aidc import contract
from aidc.api.trainingjob import TrainingJob
from aidc.identity.labels import job_labels, owner_reference
from aidc.identity.names import rendezvous_service_name


def rendezvous_service(job: TrainingJob) -> dict[str, Any]:
    """Headless, and publishing not-ready addresses: ranks must resolve each other before any is ready."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": rendezvous_service_name(job),
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
