"""Resources that must be rejected, with the words the rejection must contain.

One table serves two tests: the pydantic models reject each case (unit), and the API server
rejects the same case through the generated CRD's schema or CEL rules (cluster). If the two
ever disagree, the models and the CRDs have drifted.
"""

from __future__ import annotations

import copy
from typing import Any

from tests.factories import inference_service_body, training_job_body

TRAINING_JOB: dict[str, Any] = training_job_body("ok")
INFERENCE_SERVICE: dict[str, Any] = inference_service_body("ok")


def _with(base: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    body = copy.deepcopy(base)
    *parents, leaf = path.split(".")
    node = body
    for key in parents:
        node = node.setdefault(key, {})
    if value is _DELETE:
        node.pop(leaf, None)
    else:
        node[leaf] = value
    return body


_DELETE = object()

# (id, body) that must be admitted: both tests of the table also check these go through
VALID: list[tuple[str, dict[str, Any]]] = [
    ("classifier-defaults", TRAINING_JOB),
    ("language-model-without-dataset", _with(TRAINING_JOB, "spec.trainer", {"task": "language-model"})),
    ("gan-without-dataset", _with(TRAINING_JOB, "spec.trainer", {"task": "gan"})),
    ("inference-service", INFERENCE_SERVICE),
    ("inference-kubernetes-auth", _with(INFERENCE_SERVICE, "spec.auth", {"kubernetes": {}})),
    (
        "inference-api-key-and-tls",
        _with(
            _with(INFERENCE_SERVICE, "spec.auth", {"apiKey": {"secretName": "keys", "key": "api-key"}}),
            "spec.tls",
            {"secretName": "serving-tls"},
        ),
    ),
]

# (id, body, words that the message must contain: the field's name and the problem)
INVALID: list[tuple[str, dict[str, Any], list[str]]] = [
    (
        "auth-both",
        _with(INFERENCE_SERVICE, "spec.auth", {"kubernetes": {}, "apiKey": {"secretName": "k", "key": "k"}}),
        ["auth", "exactly one of kubernetes or apiKey"],
    ),
    ("auth-neither", _with(INFERENCE_SERVICE, "spec.auth", {}), ["auth", "exactly one of kubernetes or apiKey"]),
    ("api-key-without-key", _with(INFERENCE_SERVICE, "spec.auth", {"apiKey": {"secretName": "k"}}), ["key"]),
    ("tls-without-secret", _with(INFERENCE_SERVICE, "spec.tls", {}), ["secretName"]),
    ("zero-replicas", _with(TRAINING_JOB, "spec.replicas", 0), ["replicas"]),
    ("unknown-task", _with(TRAINING_JOB, "spec.trainer.task", "poetry"), ["task"]),
    ("no-trainer-no-command", _with(TRAINING_JOB, "spec.trainer", _DELETE), ["spec.trainer is required"]),
    (
        "claim-named-and-sized",
        _with(TRAINING_JOB, "spec.storage", {"checkpoints": {"claimName": "mine", "size": "10Gi"}}),
        ["either claimName", "or size"],
    ),
    (
        "claim-neither",
        _with(TRAINING_JOB, "spec.storage", {"checkpoints": {"reclaimPolicy": "Delete"}}),
        ["either claimName"],
    ),
    (
        "npz-without-path",
        _with(TRAINING_JOB, "spec.trainer", {"task": "classifier", "dataset": {"source": "npz"}}),
        ["dataset.path is required"],
    ),
    (
        "lm-on-digits",
        _with(TRAINING_JOB, "spec.trainer", {"task": "language-model", "dataset": {"source": "digits"}}),
        ["language-model task"],
    ),
    (
        "heads-not-dividing",
        _with(
            TRAINING_JOB,
            "spec.trainer",
            {"task": "language-model", "dataset": {"source": "synthetic"}, "languageModel": {"heads": 3}},
        ),
        ["multiple of languageModel.heads"],
    ),
    ("bad-precision", _with(TRAINING_JOB, "spec.trainer.precision", "int4"), ["precision"]),
    ("negative-backoff", _with(TRAINING_JOB, "spec.failurePolicy", {"backoffLimit": -1}), ["backoffLimit"]),
    ("bad-gang-scheduler", _with(TRAINING_JOB, "spec.schedulingPolicy", {"gangScheduler": "Slurm"}), ["gangScheduler"]),
    ("job-name-too-long", _with(TRAINING_JOB, "metadata.name", "a" * 53), ["metadata.name", "52"]),
    ("job-name-starts-with-digit", _with(TRAINING_JOB, "metadata.name", "1abc"), ["metadata.name"]),
    (
        "env-value-and-from",
        _with(TRAINING_JOB, "spec.env", [{"name": "A", "value": "1", "valueFrom": {}}]),
        ["valueFrom"],
    ),
    (
        "max-below-min",
        _with(INFERENCE_SERVICE, "spec.autoscaling", {"minReplicas": 3, "maxReplicas": 2}),
        ["maxReplicas must be greater than or equal to minReplicas"],
    ),
    (
        "storage-uri-not-pvc",
        _with(INFERENCE_SERVICE, "spec.model", {"storageUri": "s3://bucket/model"}),
        ["storageUri"],
    ),
    (
        "both-model-sources",
        _with(INFERENCE_SERVICE, "spec.model", {"storageUri": "pvc://models/a", "fromTrainingJob": {"name": "x"}}),
        ["either fromTrainingJob or storageUri"],
    ),
    (
        "replicas-and-autoscaling",
        _with(
            INFERENCE_SERVICE, "spec", {**INFERENCE_SERVICE["spec"], "replicas": 2, "autoscaling": {"maxReplicas": 4}}
        ),
        ["either replicas or autoscaling"],
    ),
    ("zero-batch", _with(INFERENCE_SERVICE, "spec.batching", {"maxBatchSize": 0}), ["maxBatchSize"]),
]
