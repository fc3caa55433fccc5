"""The one place tests build TrainingJob and InferenceService bodies.

A spec change (a new required field, a renamed default) touches this file, not every test.
``*_body`` gives the dict a test sends to the API server or feeds the reconcilers: only
``metadata.name`` unless told more, since the API server fills in the rest. The model
functions parse a body as the operator would, with the metadata the API server would have added.
``spec`` is merged over the defaults key by key (a given key replaces the default's).
"""

from __future__ import annotations

from typing import Any

from aidc.api import InferenceService, TrainingJob
from aidc.contract import API_VERSION

TRAINING_JOB_SPEC: dict[str, Any] = {"replicas": 2, "trainer": {"task": "classifier"}}
INFERENCE_SERVICE_SPEC: dict[str, Any] = {"model": {"fromTrainingJob": {"name": "digits"}}}
# what the API server adds to a new object, as far as the operator reads it
SERVER_METADATA: dict[str, Any] = {"namespace": "ml", "generation": 1}


def _body(
    kind: str,
    defaults: dict[str, Any],
    name: str | None,
    spec: dict[str, Any] | None,
    status: dict[str, Any] | None,
    metadata: dict[str, Any],
) -> dict[str, Any]:
    meta = {"name": name, **metadata} if name is not None else dict(metadata)
    body: dict[str, Any] = {"apiVersion": API_VERSION, "kind": kind, "metadata": meta}
    if spec is not None or defaults:
        body["spec"] = {**defaults, **(spec or {})}
    if status is not None:
        body["status"] = status
    return body


def training_job_body(
    name: str | None = "mnist",
    spec: dict[str, Any] | None = None,
    status: dict[str, Any] | None = None,
    *,
    pod_annotations: dict[str, str] | None = None,
    **metadata: Any,
) -> dict[str, Any]:
    """A TrainingJob of two classifier ranks; ``pod_annotations`` go on every pod (kwok's exit hooks)."""
    body = _body("TrainingJob", TRAINING_JOB_SPEC, name, spec, status, metadata)
    if pod_annotations:
        template = dict(body["spec"].get("podTemplate") or {})
        template["annotations"] = dict(pod_annotations)
        body["spec"]["podTemplate"] = template
    return body


def inference_service_body(
    name: str | None = "digits",
    spec: dict[str, Any] | None = None,
    status: dict[str, Any] | None = None,
    **metadata: Any,
) -> dict[str, Any]:
    """An InferenceService of the model TrainingJob ``digits`` exports."""
    return _body("InferenceService", INFERENCE_SERVICE_SPEC, name, spec, status, metadata)


def status_only(kind: str, status: dict[str, Any] | None, generation: int = 1) -> dict[str, Any]:
    """An object as a health check sees it: kind, generation and status, no spec."""
    return _body(kind, {}, None, None, status, {"generation": generation})


def training_job(
    spec: dict[str, Any] | None = None, status: dict[str, Any] | None = None, name: str = "mnist", **metadata: Any
) -> TrainingJob:
    """The parsed ``TrainingJob`` (uid ``u-1`` in namespace ``ml``, generation 1 unless told)."""
    meta = {**SERVER_METADATA, "uid": "u-1", **metadata}
    return TrainingJob.model_validate(training_job_body(name, spec, status, **meta))


def inference_service(
    spec: dict[str, Any] | None = None, status: dict[str, Any] | None = None, name: str = "digits", **metadata: Any
) -> InferenceService:
    """The parsed ``InferenceService`` (uid ``u-2`` in namespace ``ml``, generation 1 unless told)."""
    meta = {**SERVER_METADATA, "uid": "u-2", **metadata}
    return InferenceService.model_validate(inference_service_body(name, spec, status, **meta))
