"""The serving Deployment and its autoscaler: the model server of the trainer image, the model mounted read-only."""

from __future__ import annotations

import math
from typing import Any

from aidc import contract
from aidc.api.inferenceservice import InferenceService, ServedModel
from aidc.compute.inference_account import INFERENCE_SERVICE_ACCOUNT
from aidc.compute.podspec import merge_pod_spec, placement_fields, resource_requirements, restricted_security_context
from aidc.identity.fingerprint import spec_hash
from aidc.identity.labels import owner_reference, selector_labels, serving_labels
from aidc.settings import OperatorSettings

SERVER_COMMAND = ["python", "-m", "aidc_trainer.serving"]
SERVER_UID = 1000
SCRATCH_SIZE = "1Gi"  # /tmp of a server pod (emptyDir; the root file system is read-only)
PROBE_PERIOD_SECONDS = 5
# a model loads at roughly this rate from a claim (conservative for network block storage)
LOAD_BYTES_PER_SECOND = 50 * 1024 * 1024
BASE_STARTUP_SECONDS = 60


def model_name(isvc: InferenceService) -> str:
    return isvc.spec.model.name or str(isvc.metadata["name"])


def startup_failure_threshold(model: ServedModel) -> int:
    """Probe attempts before a loading server is restarted: a minute plus the time to read the weights."""
    seconds = BASE_STARTUP_SECONDS + (model.size_bytes or 0) / LOAD_BYTES_PER_SECOND
    return max(1, math.ceil(seconds / PROBE_PERIOD_SECONDS))


def _probe(isvc: InferenceService, path: str, **extra: int) -> dict[str, Any]:
    """A probe of an open health route, over HTTPS when the server serves it (the kubelet skips verifying).

    HTTP is the API server's default and stays implicit: naming it would change the spec hash of
    every existing Deployment and roll all serving pods on an operator upgrade.
    """
    action = {"path": path, "port": "http"}
    if isvc.spec.tls is not None:
        action["scheme"] = "HTTPS"
    return {"httpGet": action, "periodSeconds": PROBE_PERIOD_SECONDS, **extra}


def server_environment(isvc: InferenceService, model: ServedModel | None = None) -> list[dict[str, Any]]:
    """The model server's settings (names in the contract); the user's ``env`` overrides ours by name.
    A language model's server must serve the OpenAI routes, so its readiness covers them."""
    spec = isvc.spec
    env = [
        {"name": contract.ENV_MODEL_DIR, "value": contract.MODEL_MOUNT},
        {"name": contract.ENV_MODEL_NAME, "value": model_name(isvc)},
        {"name": contract.ENV_HTTP_PORT, "value": str(contract.SERVER_PORT)},
        {"name": contract.ENV_MAX_BATCH_SIZE, "value": str(spec.batching.max_batch_size)},
        {"name": contract.ENV_MAX_DELAY_MS, "value": str(spec.batching.max_delay_ms)},
        {"name": contract.ENV_MAX_REQUEST_BYTES, "value": str(spec.max_request_bytes)},
        {"name": contract.ENV_PYTHON_UNBUFFERED, "value": "1"},
        *_security_environment(isvc),
    ]
    if spec.workers is not None:  # only when named: the server's own default needs no variable
        env.append({"name": contract.ENV_SERVER_WORKERS, "value": str(spec.workers)})
    if model is not None and serves_openai(model):
        env.append({"name": contract.ENV_OPENAI, "value": contract.OPENAI_REQUIRED})
    overridden = {e.name for e in spec.env}
    return [e for e in env if e["name"] not in overridden] + [e.to_wire() for e in spec.env]


def serves_openai(model: ServedModel) -> bool:
    """A language model's server must answer the OpenAI routes too."""
    return model.task == "language-model"


def _security_environment(isvc: InferenceService) -> list[dict[str, Any]]:
    """Auth and TLS settings: the key straight from the user's Secret (the operator never reads it)."""
    auth = isvc.spec.auth
    env: list[dict[str, Any]] = []
    if auth is not None and auth.api_key is not None:
        key_ref = {"name": auth.api_key.secret_name, "key": auth.api_key.key}
        env += [
            {"name": contract.ENV_AUTH, "value": contract.AUTH_API_KEY},
            {"name": contract.ENV_API_KEY, "valueFrom": {"secretKeyRef": key_ref}},
        ]
    elif auth is not None and auth.kubernetes is not None:
        env += [
            {"name": contract.ENV_AUTH, "value": contract.AUTH_KUBERNETES},
            {"name": contract.ENV_AUTH_NAMESPACE, "value": str(isvc.metadata["namespace"])},
            {"name": contract.ENV_AUTH_NAME, "value": str(isvc.metadata["name"])},
        ]
        if auth.kubernetes.audiences:
            env.append({"name": contract.ENV_AUTH_AUDIENCES, "value": ",".join(auth.kubernetes.audiences)})
    if isvc.spec.tls is not None:
        env += [
            {"name": contract.ENV_TLS_CERT_FILE, "value": f"{contract.TLS_MOUNT}/tls.crt"},
            {"name": contract.ENV_TLS_KEY_FILE, "value": f"{contract.TLS_MOUNT}/tls.key"},
        ]
    return env


def _server_container(isvc: InferenceService, model: ServedModel, settings: OperatorSettings) -> dict[str, Any]:
    spec = isvc.spec
    mount: dict[str, Any] = {"name": "model", "mountPath": contract.MODEL_MOUNT, "readOnly": True}
    if model.path:
        mount["subPath"] = model.path
    # the root file system is read-only; libraries that need a scratch file (transformers loading a
    # pretrained export, tempfile users) get an emptyDir at /tmp
    mounts = [mount, {"name": "tmp", "mountPath": "/tmp"}]
    if spec.tls is not None:
        mounts.append({"name": "tls", "mountPath": contract.TLS_MOUNT, "readOnly": True})
    return {
        "name": "server",
        "image": spec.image or settings.trainer_image,
        "imagePullPolicy": settings.image_pull_policy,
        "command": list(SERVER_COMMAND),
        "env": server_environment(isvc, model),
        "ports": [{"name": "http", "containerPort": contract.SERVER_PORT}],
        "resources": resource_requirements(spec.resources),
        "volumeMounts": mounts,
        "startupProbe": _probe(isvc, "/v2/health/ready", failureThreshold=startup_failure_threshold(model)),
        "readinessProbe": _probe(isvc, "/v2/health/ready", failureThreshold=2),
        "livenessProbe": _probe(isvc, "/v2/health/live", failureThreshold=3, periodSeconds=10),
        "securityContext": {**restricted_security_context(), "readOnlyRootFilesystem": True},
    }


def _server_pod_spec(isvc: InferenceService, model: ServedModel, settings: OperatorSettings) -> dict[str, Any]:
    """The server's pod spec, the model's claim read-only, the user's podTemplate merged in.

    Only a server that reviews its callers' tokens gets an API token of its own (``aidc-inference``).
    """
    volumes: list[dict[str, Any]] = [
        {"name": "model", "persistentVolumeClaim": {"claimName": model.claim_name, "readOnly": True}},
        {"name": "tmp", "emptyDir": {"sizeLimit": SCRATCH_SIZE}},
    ]
    if isvc.spec.tls is not None:
        items = [{"key": "tls.crt", "path": "tls.crt"}, {"key": "tls.key", "path": "tls.key"}]
        volumes.append({"name": "tls", "secret": {"secretName": isvc.spec.tls.secret_name, "items": items}})
    reviews_tokens = isvc.spec.auth is not None and isvc.spec.auth.kubernetes is not None
    pod_spec: dict[str, Any] = {
        "containers": [_server_container(isvc, model, settings)],
        "volumes": volumes,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": SERVER_UID,
            "runAsGroup": SERVER_UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "enableServiceLinks": False,
        "automountServiceAccountToken": reviews_tokens,
    }
    if reviews_tokens:
        pod_spec["serviceAccountName"] = INFERENCE_SERVICE_ACCOUNT
    pod_spec.update(placement_fields(isvc.spec.placement))
    return merge_pod_spec(pod_spec, isvc.spec.pod_template.spec)


def serving_deployment(isvc: InferenceService, model: ServedModel, settings: OperatorSettings) -> dict[str, Any]:
    """The Deployment of the model server; changing the model changes the template, which rolls it."""
    spec = isvc.spec
    labels = serving_labels(isvc)
    template = spec.pod_template
    deployment_spec: dict[str, Any] = {
        "selector": {"matchLabels": selector_labels(isvc)},
        "template": {
            "metadata": {
                "labels": {**template.labels, **labels},
                "annotations": {**template.annotations, contract.ANNOTATION_MODEL_URI: model.uri},
            },
            "spec": _server_pod_spec(isvc, model, settings),
        },
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
        "revisionHistoryLimit": 5,
    }
    if spec.autoscaling is None:
        deployment_spec["replicas"] = 1 if spec.replicas is None else spec.replicas
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": str(isvc.metadata["name"]),
            "namespace": isvc.metadata["namespace"],
            "labels": labels,
            "annotations": {contract.ANNOTATION_SPEC_HASH: spec_hash(deployment_spec)},
            "ownerReferences": [owner_reference(isvc)],
        },
        "spec": deployment_spec,
    }


def autoscaler(isvc: InferenceService) -> dict[str, Any] | None:
    """An autoscaling/v2 HorizontalPodAutoscaler, or None with fixed replicas."""
    scaling = isvc.spec.autoscaling
    if scaling is None:
        return None
    name = str(isvc.metadata["name"])
    spec = {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
        "minReplicas": scaling.min_replicas,
        "maxReplicas": scaling.max_replicas,
        "metrics": [{
            "type": "Resource",
            "resource": {
                "name": scaling.metric,
                "target": {"type": "Utilization", "averageUtilization": scaling.target_utilization_percent},
            },
        }],
    }  # fmt: skip
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {
            "name": name,
            "namespace": isvc.metadata["namespace"],
            "labels": serving_labels(isvc),
            "annotations": {contract.ANNOTATION_SPEC_HASH: spec_hash(spec)},
            "ownerReferences": [owner_reference(isvc)],
        },
        "spec": spec,
    }
