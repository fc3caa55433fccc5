"""The thin layer that talks to the API server: create-or-ignore, delete, status patches, events.

Creates, status patches and events (the calls made per pod and per job) go over aiohttp on the
event loop (``apiserver.py``); the rare calls use the official client in a bounded thread pool,
never blocking kopf's event loop.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, TypeVar

import aiohttp
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from aidc.compute.trainer_account import trainer_identity
from aidc.contract import GROUP, OPERATOR_NAME, VERSION
from aidc.management import metrics
from aidc.management.apiserver import ApiServer
from aidc.management.observe import is_owned_by
from aidc.management.plan import Event, PodDeletion

log = logging.getLogger(__name__)
T = TypeVar("T")

# plurals of the kinds the operator creates; any other kind (a PodGroup) is kind.lower() + "s"
_PLURALS = {
    "Pod": "pods",
    "Service": "services",
    "PersistentVolumeClaim": "persistentvolumeclaims",
    "ServiceAccount": "serviceaccounts",
    "Role": "roles",
    "RoleBinding": "rolebindings",
    "Deployment": "deployments",
    "HorizontalPodAutoscaler": "horizontalpodautoscalers",
    "Event": "events",
}


def _path(body: dict[str, Any], plural: str) -> str:
    """The collection a namespaced object is created in: /api/v1/... or /apis/GROUP/VERSION/..."""
    api_version = body.get("apiVersion") or "v1"
    base = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    return f"{base}/namespaces/{body['metadata']['namespace']}/{plural}"


class CreationRefusedError(Exception):
    """The API server refused an object (not a conflict): the reason goes into status."""

    def __init__(self, kind: str, name: str, status: int, message: str) -> None:
        super().__init__(f"creating {kind} {name} was refused ({status}): {message}")
        self.kind, self.name, self.status, self.message = kind, name, status, message


def _reason(answer: bytes) -> str:
    """The ``reason`` of a Status answer (Conflict, Forbidden, Invalid), as the client's exceptions carry one."""
    try:
        return str(json.loads(answer).get("reason") or "")
    except (ValueError, AttributeError):
        return ""


def _api_message(error: ApiException) -> str:
    try:
        return str(json.loads(error.body or "{}").get("message") or error.reason)
    except ValueError:
        return str(error.reason)


class Cluster:
    """Async facade over the official client, sized for many concurrent reconciles."""

    def __init__(self, api: client.ApiClient, server: ApiServer, max_concurrency: int) -> None:
        self.api = api
        self.server = server
        self.core = client.CoreV1Api(api)
        self.custom = client.CustomObjectsApi(api)
        self.apps = client.AppsV1Api(api)
        self.autoscaling = client.AutoscalingV2Api(api)
        self._identities: set[str] = set()
        self._identity_tasks: dict[str, asyncio.Future[None]] = {}
        self._pool = ThreadPoolExecutor(max_workers=max_concurrency, thread_name_prefix="aidc-api")

    async def _call(self, verb: str, resource: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        try:
            result = await loop.run_in_executor(self._pool, lambda: fn(*args, **kwargs))
        except ApiException as error:
            metrics.API_REQUESTS.labels(verb, resource, str(error.status)).inc()
            raise
        metrics.API_REQUESTS.labels(verb, resource, "2xx").inc()
        return result

    async def _send(
        self, verb: str, resource: str, method: str, path: str, body: dict[str, Any] | None, **kw: Any
    ) -> bytes:
        """A request over ``ApiServer``, counted like the client's; a refusal raises ApiException."""
        status, answer = await self.server.send(method, path, body, **kw)
        if not 200 <= status <= 299:
            metrics.API_REQUESTS.labels(verb, resource, str(status)).inc()
            raise ApiException(status=status, reason=_reason(answer), body=answer.decode(errors="replace"))
        metrics.API_REQUESTS.labels(verb, resource, "2xx").inc()
        return answer

    async def create(self, body: dict[str, Any]) -> bool:
        """Creates ``body``; False when it already exists (names are deterministic)."""
        kind, name = body["kind"], body["metadata"]["name"]
        plural = _PLURALS.get(kind) or kind.lower() + "s"
        try:
            await self._send("create", kind.lower() if kind in _PLURALS else plural, "POST", _path(body, plural), body)
        except ApiException as error:
            if error.status == 409:
                return False
            raise CreationRefusedError(kind, name, error.status or 0, _api_message(error)) from error
        return True

    async def ensure_trainer_identity(self, namespace: str) -> None:
        """The trainer's ServiceAccount, Role and RoleBinding in ``namespace``, once per process.

        The jobs of a burst in a new namespace all wait on the same creation instead of each
        sending the three creates (and getting conflicts back).
        """
        if namespace in self._identities:
            return
        pending = self._identity_tasks.get(namespace)
        if pending is None:
            pending = self._identity_tasks[namespace] = asyncio.ensure_future(self._create_identity(namespace))
        try:
            await asyncio.shield(pending)
        finally:
            if pending.done():
                self._identity_tasks.pop(namespace, None)

    async def _create_identity(self, namespace: str) -> None:
        for obj in trainer_identity(namespace):
            await self.create(obj)
        self._identities.add(namespace)

    async def apply(self, body: dict[str, Any]) -> None:
        """Server-side apply of an owned object the operator wants exactly so (fields it dropped go away)."""
        kind, meta = body["kind"], body["metadata"]
        appliers: dict[str, Callable[..., Any]] = {
            "Deployment": self.apps.patch_namespaced_deployment,
            "HorizontalPodAutoscaler": self.autoscaling.patch_namespaced_horizontal_pod_autoscaler,
        }
        await self._call(
            "apply",
            kind.lower(),
            appliers[kind],
            meta["name"],
            meta["namespace"],
            body,
            field_manager=OPERATOR_NAME,
            force=True,
            _content_type="application/apply-patch+yaml",
        )

    async def remove(self, namespace: str, kind: str, name: str) -> None:
        removers: dict[str, Callable[..., Any]] = {
            "HorizontalPodAutoscaler": self.autoscaling.delete_namespaced_horizontal_pod_autoscaler,
        }
        try:
            await self._call("delete", kind.lower(), removers[kind], name, namespace)
        except ApiException as error:
            if error.status != 404:
                raise

    async def delete_pod(self, namespace: str, deletion: PodDeletion) -> None:
        options = client.V1DeleteOptions(grace_period_seconds=0) if deletion.force else None
        try:
            await self._call("delete", "pods", self.core.delete_namespaced_pod, deletion.name, namespace, body=options)
        except ApiException as error:
            if error.status != 404:
                raise

    async def owned_pod_names(self, namespace: str, selector: str, owner_uid: str) -> set[str]:
        """Names of the pods matching ``selector`` that ``owner_uid`` controls, as the API server has them now.

        Only their metadata is sent (``PartialObjectMetadataList``): the check needs names and
        owners, not eight full pods. Raises ``ApiException``, ``aiohttp.ClientError`` or ``TimeoutError``.
        """
        answer = await self._send(
            "list",
            "pods",
            "GET",
            f"/api/v1/namespaces/{namespace}/pods",
            None,
            params={"labelSelector": selector},
            accept="application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json",
        )
        items = json.loads(answer).get("items") or []
        return {str(item["metadata"]["name"]) for item in items if is_owned_by(item, owner_uid)}

    async def patch_status(self, plural: str, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        """Merge-patches the status subresource; returns the object as the API server now has it."""
        path = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{plural}/{name}/status"
        answer = await self._send(
            "patch", f"{plural}/status", "PATCH", path, {"status": patch}, content_type="application/merge-patch+json"
        )
        result: dict[str, Any] = json.loads(answer)
        return result

    async def delete_custom(self, plural: str, namespace: str, name: str) -> None:
        try:
            await self._call(
                "delete", plural, self.custom.delete_namespaced_custom_object, GROUP, VERSION, namespace, plural, name
            )
        except ApiException as error:
            if error.status != 404:
                raise

    async def post_event(self, owner: dict[str, Any], event: Event) -> None:
        """A core/v1 Event on the custom resource; failures are logged, never fatal."""
        meta = owner["metadata"]
        now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        body = {
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
            "involvedObject": {
                "apiVersion": owner.get("apiVersion"),
                "kind": owner.get("kind"),
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta.get("uid"),
            },
            "type": event.type,
            "reason": event.reason,
            "message": event.message[:1024],
            "source": {"component": OPERATOR_NAME},
            "reportingComponent": OPERATOR_NAME,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        try:
            await self._send("create", "events", "POST", _path(body, "events"), body)
        except (ApiException, aiohttp.ClientError, TimeoutError) as error:
            log.warning(
                "could not post event %s on %s: %s", event.reason, meta["name"], getattr(error, "reason", error)
            )
