"""A thin client for the few API calls a kubelet makes, in plain dicts.

The agent reads pod specs exactly as the API returns them (camelCase, like the YAML people
write), so it talks JSON over the official client's connection and authentication instead of
its generated models. Every call is one request; callers decide whether to retry.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from kubernetes import client, watch
from kubernetes import config as kube_config

JSON = dict[str, Any]
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"


class ApiError(RuntimeError):
    """A request the API server answered with an error status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status


def quote(segment: str) -> str:
    return urllib.parse.quote(segment, safe="")


class Kube:
    """JSON requests against one API server."""

    def __init__(self, api: client.ApiClient) -> None:
        self.api = api

    @classmethod
    def from_kubeconfig(cls, path: Path) -> Kube:
        api: client.ApiClient = kube_config.new_client_from_config(config_file=str(path))  # type: ignore[no-untyped-call]
        return cls(api)

    @property
    def server(self) -> str:
        """The API server's URL, as the kubeconfig names it."""
        return str(self.api.configuration.host)

    def request(
        self,
        method: str,
        path: str,
        *,
        query: dict[str, Any] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        timeout: float = 15.0,
    ) -> JSON:
        """One request; the decoded JSON answer, or :class:`ApiError`."""
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type
        params = [(k, v) for k, v in (query or {}).items() if v is not None]
        method, url, headers, body_text, _ = self.api.param_serialize(
            method, path, query_params=params, header_params=headers, body=body, auth_settings=["BearerToken"]
        )
        response = self.api.call_api(method, url, headers, body_text, _request_timeout=timeout)
        data = response.read() or b"{}"  # type: ignore[no-untyped-call]
        if response.status >= 400:
            try:
                message = json.loads(data).get("message", "")
            except ValueError:
                message = data[:300].decode(errors="replace")
            raise ApiError(response.status, message)
        result: JSON = json.loads(data)
        return result

    # -- the calls a node makes ------------------------------------------------------------------

    def get(self, path: str) -> JSON | None:
        """The object at ``path``, or None when it does not exist."""
        try:
            return self.request("GET", path)
        except ApiError as error:
            if error.status == 404:
                return None
            raise

    def patch(self, path: str, body: JSON, content_type: str = MERGE_PATCH) -> JSON:
        return self.request("PATCH", path, body=body, content_type=content_type)

    def list_node_pods(self, node: str) -> JSON:
        """Every pod bound to ``node`` (the kubelet's own view), with the list's resourceVersion."""
        return self.request("GET", "/api/v1/pods", query={"fieldSelector": f"spec.nodeName={node}"})

    def watch_node_pods(self, node: str, resource_version: str, timeout_seconds: int) -> Iterator[JSON]:
        """Pod events for ``node`` after ``resource_version``, until the server ends the watch."""
        core = client.CoreV1Api(self.api)
        stream = watch.Watch().stream(  # type: ignore[no-untyped-call]
            core.list_pod_for_all_namespaces,
            field_selector=f"spec.nodeName={node}",
            resource_version=resource_version,
            timeout_seconds=timeout_seconds,
            allow_watch_bookmarks=True,
            deserialize=False,
        )
        yield from stream

    def pod_status(self, namespace: str, name: str, status: JSON) -> JSON:
        """Strategic-merge the pod's status, as a kubelet does: conditions merge by type, containers by name."""
        path = f"/api/v1/namespaces/{quote(namespace)}/pods/{quote(name)}/status"
        return self.patch(path, {"status": status}, STRATEGIC_MERGE_PATCH)

    def delete_pod(self, namespace: str, name: str, uid: str) -> None:
        """Finish a deletion (grace 0), only for the pod with this uid: a replacement of the same name stays."""
        body = {"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": 0, "preconditions": {"uid": uid}}
        try:
            self.request("DELETE", f"/api/v1/namespaces/{quote(namespace)}/pods/{quote(name)}", body=body)
        except ApiError as error:
            if error.status not in (404, 409):
                raise

    def service_account_token(
        self, namespace: str, account: str, pod: JSON, audiences: list[str], seconds: int
    ) -> JSON:
        """A TokenRequest bound to ``pod``, as the kubelet asks for a projected token."""
        spec: JSON = {
            "expirationSeconds": seconds,
            "boundObjectRef": {
                "kind": "Pod",
                "apiVersion": "v1",
                "name": pod["metadata"]["name"],
                "uid": pod["metadata"]["uid"],
            },
        }
        if audiences:
            spec["audiences"] = audiences
        path = f"/api/v1/namespaces/{quote(namespace)}/serviceaccounts/{quote(account)}/token"
        return self.request(
            "POST", path, body={"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec}
        )

    def event(self, pod: JSON, reason: str, message: str, kind: str = "Normal", component: str = "kubelet") -> None:
        """Record an event on ``pod`` (best effort: an event never fails the pod)."""
        meta = pod["metadata"]
        now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
            "involvedObject": {
                "kind": "Pod",
                "apiVersion": "v1",
                "namespace": meta["namespace"],
                "name": meta["name"],
                "uid": meta["uid"],
            },
            "reason": reason,
            "message": message,
            "type": kind,
            "source": {"component": component, "host": pod.get("spec", {}).get("nodeName", "")},
            "count": 1,
            "firstTimestamp": now,
            "lastTimestamp": now,
        }
        with contextlib.suppress(Exception):  # events are advisory: one never fails a pod
            self.request("POST", f"/api/v1/namespaces/{quote(meta['namespace'])}/events", body=body, timeout=5)
