"""Small helpers for cluster tests: create and read aidc resources and the pods they own."""

from __future__ import annotations

import threading
import time
from typing import Any

from kubernetes import client, watch

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


class Bindings:
    """When each pod of a namespace was first seen bound to a node, from a watch run in a thread.

    A watch sees every change of every pod, so a pod bound for an instant and deleted right after
    is caught too (a list every so often could miss it). ``bound`` maps a pod's name to
    (``time.monotonic()`` when its ``spec.nodeName`` was first seen, the node).
    """

    def __init__(self, kube: client.ApiClient, namespace: str, label_selector: str = "aidc.io/job-name") -> None:
        self.bound: dict[str, tuple[float, str]] = {}
        self.seen: set[str] = set()
        self.error: Exception | None = None
        self._core, self._namespace, self._selector = client.CoreV1Api(kube), namespace, label_selector
        listed = self._core.list_namespaced_pod(namespace, label_selector=label_selector)
        for pod in listed.items:
            self._record(pod)
        self._version = listed.metadata.resource_version
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"bindings of {namespace}")
        self._thread.start()

    def _record(self, pod: client.V1Pod) -> None:
        self.seen.add(pod.metadata.name)
        if pod.spec.node_name and pod.metadata.name not in self.bound:
            self.bound[pod.metadata.name] = (time.monotonic(), pod.spec.node_name)

    def _run(self) -> None:
        try:
            self._follow()
        except Exception as error:  # reported by stop(): a dead watch must not pass for "nothing bound"
            self.error = error

    def _follow(self) -> None:
        while not self._stopped.is_set():
            stream = watch.Watch().stream(
                self._core.list_namespaced_pod, self._namespace, label_selector=self._selector,
                resource_version=self._version, timeout_seconds=1, allow_watch_bookmarks=True,
            )  # fmt: skip
            for event in stream:
                pod = event["object"]
                self._version = pod.metadata.resource_version
                if event["type"] in ("ADDED", "MODIFIED", "DELETED"):
                    self._record(pod)

    def of(self, prefix: str) -> dict[str, tuple[float, str]]:
        """The bindings of the pods whose names start with ``prefix`` (a job's ranks: ``"job-"``)."""
        return {name: bound for name, bound in self.bound.items() if name.startswith(prefix)}

    def stop(self) -> None:
        """End the watch; fails if it broke off, since then it may have missed a binding."""
        self._stopped.set()
        self._thread.join(10)
        if self.error is not None:
            raise AssertionError(f"the watch of {self._namespace}'s pods failed: {self.error!r}")
