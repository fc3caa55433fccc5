"""The rank pods of every gang, kept by the operator's own list-and-watch of labelled pods.

Pods outnumber everything else the operator sees eight to one, and kopf runs its whole
per-object machinery for each pod event (a worker task per pod, cause detection, handler
invocation, for an index and an event handler): at 8,000 pods that was most of the operator's
CPU. This watch parses each event once, keeps what the decisions read (a ``RankPod`` and the
pod's controller uid), and pokes the gang's worker. kopf still watches the custom resources
and everything else.

Scope follows kopf's: one cluster-wide watch when kopf runs cluster-wide, else one watch per
namespace, started when the first TrainingJob of that namespace is seen (kopf only delivers
the namespaces it serves, glob patterns included) and stopped when its last job is deleted.
A job's first pass waits until its namespace's pods are listed, as kopf's indexes made handlers
wait, so no pass ever decides from an empty view and creates a rank that exists.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, ValuesView
from typing import Any

import aiohttp

from aidc import contract
from aidc.management.apiserver import ApiServer
from aidc.management.metrics import OperatorMetrics
from aidc.management.observe import RankPod, rank_pod_from

log = logging.getLogger(__name__)

Key = tuple[str, str]  # (namespace, job name)
Entry = tuple[str | None, RankPod]  # (controller owner's uid, the pod)
SELECTOR = contract.LABEL_JOB_NAME
CLUSTER = ""  # the scope of a cluster-wide watch


class WatchRefusedError(Exception):
    """The API server answered a list or watch with an error."""


class GangIndex:
    """One scope's rank pods by gang, as the last list and the watch events since made them."""

    def __init__(self) -> None:
        self._gangs: dict[Key, dict[str, Entry]] = {}
        self._gang_of: dict[str, Key] = {}  # pod uid -> its gang

    def __contains__(self, key: object) -> bool:
        return key in self._gangs

    def get(self, key: Key) -> ValuesView[Entry] | None:
        pods = self._gangs.get(key)
        return None if pods is None else pods.values()

    def keys(self) -> Iterable[Key]:
        return self._gangs.keys()

    def apply(self, event: str, pod: dict[str, Any]) -> list[Key]:
        """One watch event (ADDED, MODIFIED, DELETED); the gangs whose view it changed.

        A pod's status changes more often than what a decision reads of it (kwok, like a
        kubelet, writes conditions and container states one by one): an event that leaves its
        ``RankPod`` as it was wakes no gang.
        """
        metadata = pod.get("metadata") or {}
        uid = str(metadata.get("uid", ""))
        job = (metadata.get("labels") or {}).get(contract.LABEL_JOB_NAME)
        key = None if event == "DELETED" or not job else (str(metadata.get("namespace", "")), str(job))
        rank = rank_pod_from(pod) if key is not None else None
        owner = next((r.get("uid") for r in metadata.get("ownerReferences") or () if r.get("controller")), None)
        old = self._gang_of.get(uid)
        if rank is not None and old is not None and old == key and self._gangs[old].get(uid) == (owner, rank):
            return []
        touched: list[Key] = []
        if old is not None:
            del self._gang_of[uid]
            self._drop(old, uid)
            touched.append(old)
        if key is None:
            return touched
        if key != old:
            touched.append(key)
        if rank is not None:  # a pod with the job label but no rank labels wakes the job, no more
            self._gangs.setdefault(key, {})[uid] = (owner, rank)
            self._gang_of[uid] = key
        return touched

    def replace(self, pods: Iterable[dict[str, Any]]) -> set[Key]:
        """A fresh list replaces everything; the gangs whose pods differ from before."""
        before = self._gangs
        self._gangs, self._gang_of = {}, {}
        for pod in pods:
            self.apply("ADDED", pod)
        return {key for key in before.keys() | self._gangs.keys() if before.get(key) != self._gangs.get(key)}

    def _drop(self, key: Key, uid: str) -> None:
        pods = self._gangs.get(key)
        if pods is not None:
            pods.pop(uid, None)
            if not pods:
                del self._gangs[key]


async def _lines(content: aiohttp.StreamReader) -> AsyncIterator[bytes]:
    """Newline-delimited watch events of any length (aiohttp's own line reader stops at 128 KiB)."""
    buffer = b""
    async for chunk in content.iter_any():
        buffer += chunk
        start, end = 0, buffer.find(b"\n")
        while end >= 0:
            if end > start:
                yield buffer[start:end]
            start, end = end + 1, buffer.find(b"\n", end + 1)
        buffer = buffer[start:]
    if buffer.strip():
        yield buffer


class RankPodWatch:
    """List, then watch, the labelled pods of one scope (a namespace, or the cluster)."""

    def __init__(
        self,
        server: ApiServer,
        scope: str,
        on_change: Callable[[Key], None],
        metrics: OperatorMetrics,
        timeout_seconds: int = 300,
    ) -> None:
        self.scope = scope
        self.index = GangIndex()
        self.synced = asyncio.Event()
        self.resource_version = ""
        self._server = server
        self._metrics = metrics
        self._path = "/api/v1/pods" if scope == CLUSTER else f"/api/v1/namespaces/{scope}/pods"
        self._on_change = on_change
        self._timeout = timeout_seconds

    async def run(self) -> None:
        backoff, reason = 1.0, "start"
        while True:
            try:
                self._metrics.pod_lists.labels(reason).inc()
                await self._list()
                self.synced.set()
                backoff = 1.0
                while await self._watch():
                    pass  # the server ended the watch in time: go on from the last version seen
                log.info("pod watch of %s expired at version %s; listing again", self._name, self.resource_version)
                reason = "expired"
            except asyncio.CancelledError:
                raise
            except Exception as error:  # an outage or a refusal: keep trying, never die
                log.warning("pod watch of %s failed (%s); again in %.0f s", self._name, error, backoff)
                reason = "error"
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 30.0)

    @property
    def _name(self) -> str:
        return "the cluster" if self.scope == CLUSTER else f"namespace {self.scope}"

    async def _list(self) -> None:
        pods: list[dict[str, Any]] = []
        params = {"labelSelector": SELECTOR, "limit": "500"}
        while True:
            async with self._server.stream(self._path, params, aiohttp.ClientTimeout(total=120)) as response:
                if response.status != 200:
                    raise WatchRefusedError(f"list: HTTP {response.status}: {(await response.text())[:300]}")
                page = json.loads(await response.read())
            pods.extend(page.get("items") or ())
            metadata = page.get("metadata") or {}
            if not metadata.get("continue"):
                break
            params = {**params, "continue": metadata["continue"]}
        for key in self.index.replace(pods):
            self._on_change(key)
        self.resource_version = str(metadata.get("resourceVersion", ""))

    async def _watch(self) -> bool:
        """Follow events until the server ends the watch (True) or the version expired (False)."""
        params = {
            "labelSelector": SELECTOR,
            "watch": "true",
            "allowWatchBookmarks": "true",
            "resourceVersion": self.resource_version,
            "timeoutSeconds": str(self._timeout),
        }
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=self._timeout + 30)
        async with self._server.stream(self._path, params, timeout) as response:
            if response.status == 410:
                return False
            if response.status != 200:
                raise WatchRefusedError(f"watch: HTTP {response.status}: {(await response.text())[:300]}")
            async for line in _lines(response.content):
                event = json.loads(line)
                kind, pod = event.get("type"), event.get("object") or {}
                if kind == "ERROR":
                    if pod.get("code") == 410:
                        return False
                    raise WatchRefusedError(f"watch: {pod.get('code')}: {pod.get('message')}")
                self._metrics.pod_events.labels(str(kind)).inc()
                if kind != "BOOKMARK":
                    for key in self.index.apply(str(kind), pod):
                        self._on_change(key)
                version = (pod.get("metadata") or {}).get("resourceVersion")
                if version:
                    self.resource_version = str(version)
        return True


class RankPods(Mapping[Key, Iterable[Entry]]):
    """Every gang's rank pods, over all the watches: ``pods[(namespace, job)]`` -> (owner uid, RankPod)."""

    def __init__(
        self, server: ApiServer, clusterwide: bool, on_change: Callable[[Key], None], metrics: OperatorMetrics
    ) -> None:
        self._server = server
        self._metrics = metrics
        self._clusterwide = clusterwide
        self._on_change = on_change
        self._watches: dict[str, RankPodWatch] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def _scope(self, namespace: str) -> str:
        return CLUSTER if self._clusterwide else namespace

    def __getitem__(self, key: Key) -> Iterable[Entry]:
        watch = self._watches.get(self._scope(key[0]))
        pods = watch.index.get(key) if watch is not None else None
        if pods is None:
            raise KeyError(key)
        return pods

    def __iter__(self) -> Iterator[Key]:
        for watch in list(self._watches.values()):
            yield from list(watch.index.keys())

    def __len__(self) -> int:
        return sum(1 for _ in self)

    async def ready(self, namespace: str) -> None:
        """Return once the pods of this namespace have been listed (starting its watch if need be)."""
        scope = self._scope(namespace)
        watch = self._watches.get(scope)
        if watch is None:
            watch = self._watches[scope] = RankPodWatch(self._server, scope, self._on_change, self._metrics)
            self._tasks[scope] = asyncio.create_task(watch.run(), name=f"pod watch {scope or '(cluster)'}")
        await watch.synced.wait()

    @property
    def scopes(self) -> set[str]:
        """The scopes watched now: namespaces, or ``CLUSTER``."""
        return set(self._watches)

    async def release(self, namespace: str) -> None:
        """No job of ``namespace`` is left: stop its watch (a cluster-wide one stays).

        A namespaced operator serving a glob pattern otherwise kept an idle watch, and the
        namespace's pods in memory, until it restarted. A job created there later lists again.
        """
        if self._clusterwide:
            return
        self._watches.pop(namespace, None)
        task = self._tasks.pop(namespace, None)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def stop(self) -> None:
        for task in self._tasks.values():
            task.cancel()
        for task in self._tasks.values():
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
