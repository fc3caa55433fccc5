"""The one way the operator writes to and lists from the API server (kopf watches its resources).

Every call goes over ``ApiServer`` (one aiohttp session on kopf's event loop, which also carries
the rank pod watch) and one error policy: throttling and server errors are tried again there
(``apiserver.py``); here a conflict on create means the object exists (names are
deterministic), a missing object on delete is already gone, and any other error is raised,
a refused create as ``CreationRefusedError`` so its reason can go into status.
"""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import UTC, datetime
from typing import Any

import aiohttp

from aidc.compute.inference_account import inference_identity
from aidc.compute.trainer_account import trainer_identity
from aidc.contract import GROUP, OPERATOR_NAME, VERSION
from aidc.management.apiserver import ApiError, ApiServer
from aidc.management.metrics import OperatorMetrics
from aidc.management.observe import is_owned_by
from aidc.management.plan import Event, PodDeletion, Refusal

log = logging.getLogger(__name__)

# plurals of the kinds the operator creates; any other kind (a PodGroup) is kind.lower() + "s"
_PLURALS = {
    "Pod": "pods",
    "Service": "services",
    "PersistentVolumeClaim": "persistentvolumeclaims",
    "ServiceAccount": "serviceaccounts",
    "Role": "roles",
    "RoleBinding": "rolebindings",
    "ClusterRoleBinding": "clusterrolebindings",
    "Deployment": "deployments",
    "HorizontalPodAutoscaler": "horizontalpodautoscalers",
    "NetworkPolicy": "networkpolicies",
    "Event": "events",
    "VolumeSnapshot": "volumesnapshots",
}


def _path(body: dict[str, Any], plural: str) -> str:
    """The collection an object is created in: /api/v1/... or /apis/GROUP/VERSION/..., namespaced or not."""
    api_version = body.get("apiVersion") or "v1"
    base = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    namespace = body["metadata"].get("namespace")
    return f"{base}/namespaces/{namespace}/{plural}" if namespace else f"{base}/{plural}"


class CreationRefusedError(Exception):
    """The API server refused an object (not a conflict): its ``refusal`` goes to the decision."""

    def __init__(self, kind: str, name: str, status: int, message: str) -> None:
        self.refusal = Refusal(kind, name, status, message)
        super().__init__(str(self.refusal))
        self.kind, self.name, self.status, self.message = kind, name, status, message


class Cluster:
    """The operator's calls to the API server, each one request under one error policy."""

    def __init__(self, server: ApiServer, metrics: OperatorMetrics) -> None:
        self.server = server
        self.metrics = metrics
        # (ServiceAccount, namespace) of the identities created by this process
        self._identities: set[tuple[str, str]] = set()
        self._identity_tasks: dict[tuple[str, str], asyncio.Future[None]] = {}

    async def _send(
        self, verb: str, resource: str, method: str, path: str, body: dict[str, Any] | None, **kw: Any
    ) -> bytes:
        """A request, counted by verb, resource and outcome; an error answer raises ApiError."""
        try:
            answer = await self.server.request(method, path, body, **kw)
        except ApiError as error:
            self.metrics.api_requests.labels(verb, resource, str(error.status)).inc()
            raise
        self.metrics.api_requests.labels(verb, resource, "2xx").inc()
        return answer

    async def _delete(self, resource: str, path: str, body: dict[str, Any] | None = None) -> None:
        """Deletes what ``path`` names; one already gone is no error."""
        try:
            await self._send("delete", resource, "DELETE", path, body)
        except ApiError as error:
            if error.status != 404:
                raise

    async def create(self, body: dict[str, Any]) -> bool:
        """Creates ``body``; False when it already exists (names are deterministic)."""
        kind, name = body["kind"], body["metadata"]["name"]
        plural = _PLURALS.get(kind) or kind.lower() + "s"
        try:
            await self._send("create", kind.lower() if kind in _PLURALS else plural, "POST", _path(body, plural), body)
        except ApiError as error:
            if error.status == 409:
                return False
            raise CreationRefusedError(kind, name, error.status, error.message) from error
        return True

    async def create_owned(self, body: dict[str, Any]) -> bool:
        """:meth:`create` of an object with an owner; one of that name that another owner controls (or
        none) is refused, not leaned on: a user's own Service must not stand in for the operator's."""
        if await self.create(body):
            return True
        kind, meta = body["kind"], body["metadata"]
        owner = meta["ownerReferences"][0]
        plural = _PLURALS.get(kind) or kind.lower() + "s"
        answer = await self._send("get", plural, "GET", f"{_path(body, plural)}/{meta['name']}", None)
        if not is_owned_by(json.loads(answer), owner["uid"]):
            problem = f"a {kind} of that name exists that this {owner['kind']} does not own: delete or rename it"
            raise CreationRefusedError(kind, meta["name"], 409, problem)
        return False

    async def read(self, api_version: str, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        """The object as the API server has it; None when there is none, or its API is not served
        (``serves`` tells the two apart)."""
        collection = _path({"apiVersion": api_version, "metadata": {"namespace": namespace}}, plural)
        try:
            answer = await self._send("get", plural, "GET", f"{collection}/{name}", None)
        except ApiError as error:
            if error.status == 404:
                return None
            raise
        found: dict[str, Any] = json.loads(answer)
        return found

    async def serves(self, api_version: str, plural: str) -> bool:
        """Whether the API server serves ``plural`` in ``api_version`` (discovery, which every
        authenticated user may read): a CRD not installed is not served."""
        try:
            answer = await self._send("discover", api_version, "GET", f"/apis/{api_version}", None)
        except ApiError as error:
            if error.status == 404:
                return False
            raise
        resources = json.loads(answer).get("resources") or []
        return any(resource.get("name") == plural for resource in resources)

    async def ensure_trainer_identity(self, namespace: str) -> None:
        """The trainer's ServiceAccount, Role and RoleBinding in ``namespace``, once per process.

        The jobs of a burst in a new namespace all wait on the same creation instead of each
        sending the three creates (and getting conflicts back).
        """
        await self._ensure_identity(trainer_identity(namespace))

    async def ensure_inference_identity(self, namespace: str, reviewer_role: str) -> None:
        """The ServiceAccount ``aidc-inference`` of ``namespace`` and its binding to the reviewer role, once."""
        await self._ensure_identity(inference_identity(namespace, reviewer_role))

    async def _ensure_identity(self, objects: list[dict[str, Any]]) -> None:
        """Creates ``objects`` (a ServiceAccount first, then its RBAC) once per process and namespace."""
        meta = objects[0]["metadata"]
        key = (meta["name"], meta["namespace"])
        if key in self._identities:
            return
        pending = self._identity_tasks.get(key)
        if pending is None:
            pending = self._identity_tasks[key] = asyncio.ensure_future(self._create_identity(key, objects))
        try:
            await asyncio.shield(pending)
        finally:
            if pending.done():
                self._identity_tasks.pop(key, None)

    async def _create_identity(self, key: tuple[str, str], objects: list[dict[str, Any]]) -> None:
        # a Role is applied: one an older operator created with more verbs is narrowed
        for obj in objects:
            if obj["kind"] == "Role":
                await self.apply(obj)
            else:
                await self.create(obj)
        self._identities.add(key)

    async def apply(self, body: dict[str, Any]) -> None:
        """Server-side apply of an owned object the operator wants exactly so (fields it dropped go away)."""
        kind, meta = body["kind"], body["metadata"]
        path = f"{_path(body, _PLURALS[kind])}/{meta['name']}"
        params = {"fieldManager": OPERATOR_NAME, "force": "true"}
        await self._send(
            "apply", kind.lower(), "PATCH", path, body, content_type="application/apply-patch+yaml", params=params
        )

    async def remove(self, namespace: str, kind: str, name: str) -> None:
        """Deletes an owned object no longer wanted (an autoscaler after autoscaling was removed)."""
        api_version = {"HorizontalPodAutoscaler": "autoscaling/v2"}[kind]
        collection = _path({"apiVersion": api_version, "metadata": {"namespace": namespace}}, _PLURALS[kind])
        await self._delete(kind.lower(), f"{collection}/{name}")

    async def delete_pod(self, namespace: str, deletion: PodDeletion) -> None:
        options = {"gracePeriodSeconds": 0} if deletion.force else None
        await self._delete("pods", f"/api/v1/namespaces/{namespace}/pods/{deletion.name}", options)

    async def release_pod(self, namespace: str, name: str, finalizer: str) -> None:
        """Drops ``finalizer`` from a pod on its way out (by value: no index to race); one gone is no error."""
        await self._merge_into_pod(namespace, name, {"metadata": {"$deleteFromPrimitiveList/finalizers": [finalizer]}})

    async def ungate_pod(self, namespace: str, name: str, gate: str) -> None:
        """Lifts one scheduling gate of a pod (by name: the list merges by name); one gone is no error."""
        await self._merge_into_pod(namespace, name, {"spec": {"schedulingGates": [{"name": gate, "$patch": "delete"}]}})

    async def _merge_into_pod(self, namespace: str, name: str, body: dict[str, Any]) -> None:
        """A strategic merge patch of one pod; a pod already gone is no error."""
        try:
            await self._send(
                "patch", "pods", "PATCH", f"/api/v1/namespaces/{namespace}/pods/{name}", body,
                content_type="application/strategic-merge-patch+json",
            )  # fmt: skip
        except ApiError as error:
            if error.status != 404:
                raise

    async def owned_pod_names(self, namespace: str, selector: str, owner_uid: str) -> set[str]:
        """Names of the pods matching ``selector`` that ``owner_uid`` controls, as the API server has them now.

        Only their metadata is sent (``PartialObjectMetadataList``): the check needs names and
        owners, not eight full pods. Raises ``ApiError``, ``aiohttp.ClientError`` or ``TimeoutError``.
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
        await self._delete(plural, f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{plural}/{name}")

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
        except (ApiError, aiohttp.ClientError, TimeoutError) as error:
            log.warning(
                "could not post event %s on %s: %s", event.reason, meta["name"], getattr(error, "reason", error)
            )
