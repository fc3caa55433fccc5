"""The ClusterIP Service in front of a model server, and the URL it gives the model."""

from __future__ import annotations

from typing import Any

from aidc import contract
from aidc.api.inferenceservice import InferenceService
from aidc.identity.labels import owner_reference, selector_labels, serving_labels


def inference_url(isvc: InferenceService, cluster_domain: str) -> str:
    """The in-cluster base URL (https with ``spec.tls``); the v2 protocol lives under /v2/models/<name>."""
    scheme = "https" if isvc.spec.tls is not None else "http"
    return (
        f"{scheme}://{isvc.metadata['name']}.{isvc.metadata['namespace']}.svc.{cluster_domain}:{contract.SERVER_PORT}"
    )


def serving_service(isvc: InferenceService) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": str(isvc.metadata["name"]),
            "namespace": isvc.metadata["namespace"],
            "labels": serving_labels(isvc),
            "ownerReferences": [owner_reference(isvc)],
        },
        "spec": {
            "type": "ClusterIP",
            "selector": selector_labels(isvc),
            "ports": [{"name": "http", "port": contract.SERVER_PORT, "targetPort": "http"}],
        },
    }
