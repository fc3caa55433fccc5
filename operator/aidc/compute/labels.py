"""Labels and owner references every object of a TrainingJob carries."""

from __future__ import annotations

from typing import Any

from aidc import contract


def job_labels(job: Any, component: str = "trainer") -> dict[str, str]:
    """Labels that find a job's objects (``aidc.io/job-name``) and describe them (``app.kubernetes.io/*``)."""
    name = str(job.metadata["name"])
    return {
        contract.LABEL_JOB_NAME: name,
        contract.LABEL_APP_NAME: contract.APP_TRAINING_JOB,
        contract.LABEL_APP_INSTANCE: name,
        contract.LABEL_APP_COMPONENT: component,
        contract.LABEL_APP_PART_OF: contract.APP_PART_OF,
        contract.LABEL_APP_MANAGED_BY: contract.OPERATOR_NAME,
    }


def owner_reference(resource: Any, controller: bool = True) -> dict[str, Any]:
    """An owner reference to a custom resource, so garbage collection follows it."""
    return {
        "apiVersion": contract.API_VERSION,
        "kind": resource.kind,
        "name": resource.metadata["name"],
        "uid": resource.metadata["uid"],
        "controller": controller,
        "blockOwnerDeletion": True,
    }
