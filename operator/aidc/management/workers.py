"""One coalescing worker per custom resource.

Watch events (of the resource and of the pods it owns) only *poke* its worker; the worker
reconciles once for any number of pokes that arrived meanwhile, so a burst of pod events
becomes one pass and one status write. Passes of one resource never overlap; passes of
different resources run concurrently. Each worker also wakes on its own after the requeue
interval its last pass asked for (backoff, timeouts) or the resync interval (safety net).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

Key = tuple[str, str]  # (namespace, name)


@dataclass
class Memory:
    """What a worker remembers between passes (lost on restart, by design harmless)."""

    # pod name -> loop time of creation, until the watch delivers the pod
    expected: dict[str, float] = field(default_factory=dict)
    # keys of supporting objects known to exist (pod groups: their CRD may not be watchable)
    ensured: set[str] = field(default_factory=set)
    phase: str | None = None
    # a status decided but not written yet (see OperatorSettings.status_batch_seconds), the
    # server's status it was decided from, and since when (loop time) it waits
    unwritten: dict[str, Any] | None = None
    unwritten_base: dict[str, Any] | None = None
    unwritten_since: float = 0.0
    # the last job parsed, and the resourceVersion and status object it was parsed from
    parsed: tuple[str, object, Any] | None = None
    # the last spec parsed, by (uid, generation)
    spec: tuple[tuple[Any, Any], Any] | None = None


@dataclass(frozen=True)
class Held:
    """One resource as its worker holds it: the latest spec, and the newest status decided (written or not)."""

    namespace: str
    name: str
    spec: dict[str, Any]
    status: dict[str, Any]


Reconcile = Callable[[dict[str, Any], Memory], Awaitable[tuple[dict[str, Any] | None, float | None]]]


def _slim(body: dict[str, Any]) -> dict[str, Any]:
    """The body without ``metadata.managedFields``: no pass reads them, and with a thousand jobs
    their copies were a good part of the operator's memory."""
    metadata = body.get("metadata")
    if not isinstance(metadata, dict) or "managedFields" not in metadata:
        return body
    return {**body, "metadata": {k: v for k, v in metadata.items() if k != "managedFields"}}


def _generation(body: dict[str, Any]) -> Any:
    return (body.get("metadata") or {}).get("generation")


def _version(body: dict[str, Any] | None) -> int:
    try:
        return int((body or {}).get("metadata", {}).get("resourceVersion", 0))
    except (TypeError, ValueError):
        return 0


@dataclass
class _Worker:
    body: dict[str, Any]
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    memory: Memory = field(default_factory=Memory)
    task: asyncio.Task[None] | None = None
    started: bool = False  # past the ready gate
    busy: bool = False  # woken: settling or in a pass


class Workers:
    """The workers of one kind of resource."""

    def __init__(
        self,
        kind: str,
        reconcile: Reconcile,
        resync_seconds: float,
        on_error: Callable[[str], None],
        settle_seconds: float = 0.0,
        ready: Callable[[Key], Awaitable[None]] | None = None,
    ) -> None:
        self.kind = kind
        self._ready = ready
        self._reconcile = reconcile
        self._resync = resync_seconds
        self._on_error = on_error
        self._settle = settle_seconds
        self._workers: dict[Key, _Worker] = {}

    def __len__(self) -> int:
        return len(self._workers)

    def serves(self, namespace: str) -> bool:
        """Whether any resource of ``namespace`` has a worker."""
        return any(key[0] == namespace for key in self._workers)

    def held(self) -> list[Held]:
        """Every resource as its worker holds it; safe from another thread (the metrics endpoint's)."""
        found = []
        for (namespace, name), worker in self._workers.copy().items():
            body, memory = worker.body, worker.memory
            status = memory.unwritten or body.get("status") or {}
            if memory.phase and status.get("phase") != memory.phase:
                status = {**status, "phase": memory.phase}
            found.append(Held(namespace, name, body.get("spec") or {}, status))
        return found

    def offer(self, key: Key, body: dict[str, Any]) -> None:
        """A version of the resource: keep the newest and wake its worker.

        A version the worker holds already wakes nobody: most are the worker's own status
        writes coming back through the watch (each pass keeps the body its write returned),
        and a pass for them would decide again what was just decided.
        """
        body = _slim(body)
        worker = self._workers.get(key)
        if worker is None:
            worker = self._workers[key] = _Worker(body=body)
            worker.task = asyncio.create_task(self._run(key, worker), name=f"{self.kind}/{key[0]}/{key[1]}")
        else:
            offered, held = _version(body), _version(worker.body)
            if offered and offered <= held:
                return
            worker.body = body
        worker.wake.set()

    def poke(self, key: Key) -> None:
        """Something the resource owns changed: reconcile soon."""
        worker = self._workers.get(key)
        if worker is not None:
            worker.wake.set()

    async def forget(self, key: Key) -> None:
        """The resource is gone: stop its worker."""
        worker = self._workers.pop(key, None)
        if worker is not None and worker.task is not None:
            worker.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await worker.task

    async def stop(self, grace_seconds: float = 10.0) -> None:
        """Stop every worker; for each one already woken (poked, settling, or in a pass), make one
        more pass here, in the stopping task.

        So a graceful stop loses nothing a worker was told of: a worker settling when the operator
        stopped has seen a gang come up but not recorded it. The pass is made here rather than left
        to the worker's own task because kopf's shutdown may cancel that task first. A pass cut
        short by the cancellation is simply made again: passes are idempotent.
        """
        woken = [(key, w) for key, w in self._workers.items() if w.started and (w.busy or w.wake.is_set())]
        for key in list(self._workers):
            await self.forget(key)
        if woken:
            await asyncio.wait([asyncio.ensure_future(self._pass(key, w)) for key, w in woken], timeout=grace_seconds)

    async def _run(self, key: Key, worker: _Worker) -> None:
        timeout: float = 0
        first = True
        if self._ready is not None:
            await self._ready(key)  # what the passes read is not there yet (a watch's first list)
        worker.started = True
        loop = asyncio.get_running_loop()
        while True:
            if not worker.wake.is_set():
                timer = loop.call_later(timeout, worker.wake.set)  # cheaper than wait_for's task
                await worker.wake.wait()
                timer.cancel()
            worker.busy = True
            if self._settle and not first:
                # the events of a gang come in bursts (8 pods created, bound, started): let the
                # rest of the burst arrive, so it is one pass rather than one per event
                await asyncio.sleep(self._settle)
            first = False
            worker.wake.clear()
            requeue = await self._pass(key, worker)
            worker.busy = False
            timeout = min(requeue, self._resync) if requeue is not None else self._resync

    async def _pass(self, key: Key, worker: _Worker) -> float | None:
        """One reconcile; what it asks for: seconds until the next pass, if any."""
        base = worker.body
        try:
            updated, requeue = await self._reconcile(base, worker.memory)
        except asyncio.CancelledError:
            raise
        except Exception:  # a bug or an API outage must not kill the worker
            log.exception("reconciling %s %s/%s failed; retrying", self.kind, *key)
            self._on_error(self.kind)
            updated, requeue = None, 5.0
        if updated is not None and _version(updated) >= _version(worker.body):
            if _generation(updated) != _generation(base):
                # the spec changed while this pass decided from the old one; the watch's copy of
                # that change is no newer than the body kept here, so it would wake nobody
                worker.wake.set()
            worker.body = _slim(updated)
        return requeue
