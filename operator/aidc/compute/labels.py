"""Labels and owner references every object of a TrainingJob carries."""

from __future__ import annotations

from typing import Any

from aidc import contract
from aidc.api.common import API_VERSION


def job_labels(job: Any, component: str = "trainer") -> dict[str, str]:
    """Labels that find a job's objects (``aidc.io/job-name``) and describe them (``app.kubernetes.io/*``)."""
    name = str(job.metadata["name"])
    return {
        contract.LABEL_JOB_NAME: name,
        "app.kubernetes.io/name": "aidc-trainingjob",
        "app.kubernetes.io/instance": name,
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/part-of": "aidc",
        "app.kubernetes.io/managed-by": "aidc-operator",
    }


def owner_reference(resource: Any, controller: bool = True) -> dict[str, Any]:
    """An owner reference to a custom resource, so garbage collection follows it."""
    return {
        "apiVersion": API_VERSION,
        "kind": resource.kind,
        "name": resource.metadata["name"],
        "uid": resource.metadata["uid"],
        "controller": controller,
        "blockOwnerDeletion": True,
    }
