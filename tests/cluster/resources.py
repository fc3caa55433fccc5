"""Small helpers for cluster tests: create and read aidc resources and the pods they own."""

from __future__ import annotations

from typing import Any

from kubernetes import client

from aidc.contract import GROUP, VERSION


def create(kube: client.ApiClient, namespace: str, plural: str, body: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = client.CustomObjectsApi(kube).create_namespaced_custom_object(
        GROUP, VERSION, namespace, plural, body
    )
    return result


def get(kube: client.ApiClient, namespace: str, plural: str, name: str) -> dict[str, Any]:
    result: dict[str, Any] = client.CustomObjectsApi(kube).get_namespaced_custom_object(
        GROUP, VERSION, namespace, plural, name
    )
    return result


def patch_spec(kube: client.ApiClient, namespace: str, plural: str, name: str, spec: dict[str, Any]) -> None:
    client.CustomObjectsApi(kube).patch_namespaced_custom_object(
        GROUP, VERSION, namespace, plural, name, {"spec": spec}
    )


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any] | None:
    return next((c for c in (obj.get("status") or {}).get("conditions", []) if c["type"] == type_), None)


def condition_is(obj: dict[str, Any], type_: str, reason: str | None = None) -> bool:
    found = condition(obj, type_)
    return found is not None and found["status"] == "True" and (reason is None or found["reason"] == reason)


def pods(kube: client.ApiClient, namespace: str, job: str) -> list[client.V1Pod]:
    items = client.CoreV1Api(kube).list_namespaced_pod(namespace, label_selector=f"aidc.io/job-name={job}").items
    return sorted(items, key=lambda p: p.metadata.name)


def annotate_pod(kube: client.ApiClient, namespace: str, name: str, annotations: dict[str, str]) -> None:
    client.CoreV1Api(kube).patch_namespaced_pod(name, namespace, {"metadata": {"annotations": annotations}})


def exit_pod(kube: client.ApiClient, namespace: str, name: str, code: int, after: str = "1s") -> None:
    """Makes kwok end the pod's containers with ``code`` (see hack/README.md)."""
    annotate_pod(kube, namespace, name, {"aidc.io/kwok-exit-code": str(code), "aidc.io/kwok-exit-after": after})
