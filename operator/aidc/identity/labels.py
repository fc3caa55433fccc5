"""Labels and owner references on every object the operator creates."""

from __future__ import annotations

from typing import Any

from aidc import contract
from aidc.api.inferenceservice import InferenceService
from aidc.api.trainingjob import TrainingJob


def job_labels(job: TrainingJob, component: str = "trainer") -> dict[str, str]:
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


def owner_reference(resource: TrainingJob | InferenceService, controller: bool = True) -> dict[str, Any]:
    """An owner reference to a custom resource, so garbage collection follows it."""
    return {
        "apiVersion": contract.API_VERSION,
        "kind": resource.kind,
        "name": resource.metadata["name"],
        "uid": resource.metadata["uid"],
        "controller": controller,
        "blockOwnerDeletion": True,
    }


def serving_labels(isvc: InferenceService) -> dict[str, str]:
    """Labels of a served model's objects: the selector's, and the ``app.kubernetes.io/*`` set."""
    name = str(isvc.metadata["name"])
    return {
        **selector_labels(isvc),
        contract.LABEL_APP_NAME: contract.APP_INFERENCE_SERVICE,
        contract.LABEL_APP_INSTANCE: name,
        contract.LABEL_APP_COMPONENT: "server",
        contract.LABEL_APP_PART_OF: contract.APP_PART_OF,
        contract.LABEL_APP_MANAGED_BY: contract.OPERATOR_NAME,
    }


def selector_labels(isvc: InferenceService) -> dict[str, str]:
    """What the Deployment and the Service select the serving pods by."""
    return {contract.LABEL_SERVICE_NAME: str(isvc.metadata["name"])}
