"""Leader election on a ``coordination.k8s.io/v1`` Lease, so two operator replicas never both reconcile.

The semantics are client-go's (and the official Python client's ``kubernetes.leaderelection``),
written for the operator's event loop and its one aiohttp client instead of a thread and the
official client's blocking calls:

- a candidate creates the Lease, renews it while its holder, and takes it over when it is free
  (no holder: the last one released it) or when its record has not changed for the record's
  ``leaseDurationSeconds`` *by the candidate's own clock*; the holder's timestamps are never
  compared with the local clock, so clock skew between nodes cannot hand the lease over early;
- every write carries the ``resourceVersion`` it read, so of two candidates that race, the API
  server lets one win (409 for the other);
- a holder that has not renewed for ``renew_deadline`` (shorter than the lease duration) gives up
  before anyone may take over, and the caller stops reconciling at once.

The decision of one round is pure (``next_step``, ``lease_spec``) and table-tested; ``LeaderElector``
only reads, decides and writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from typing import Any

import aiohttp

from aidc.management.apiserver import ApiError, ApiServer

log = logging.getLogger(__name__)

LEASES = "/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"
# client-go's factor: candidates spread their attempts so they do not ask in lockstep
JITTER = 1.2


@dataclass(frozen=True)
class LeaseTimings:
    """How long a lease lasts, how long its holder keeps trying to renew it, how often anyone tries."""

    lease_duration: int
    renew_deadline: float
    retry_period: float

    def check(self) -> None:
        """Refuses timings under which a holder could still be working when another takes over."""
        if not self.lease_duration > self.renew_deadline > JITTER * self.retry_period > 0:
            raise ValueError(
                "leader election needs lease duration > renew deadline > 1.2 x retry period > 0, got "
                f"{self.lease_duration} s, {self.renew_deadline} s, {self.retry_period} s"
            )


@dataclass(frozen=True)
class LeaseRecord:
    """The parts of a Lease that election reads."""

    holder: str
    duration_seconds: int
    acquire_time: str | None
    renew_time: str | None
    transitions: int
    resource_version: str | None = None

    @classmethod
    def of(cls, lease: dict[str, Any]) -> LeaseRecord:
        spec = lease.get("spec") or {}
        return cls(
            holder=str(spec.get("holderIdentity") or ""),
            duration_seconds=int(spec.get("leaseDurationSeconds") or 0),
            acquire_time=spec.get("acquireTime"),
            renew_time=spec.get("renewTime"),
            transitions=int(spec.get("leaseTransitions") or 0),
            resource_version=(lease.get("metadata") or {}).get("resourceVersion"),
        )

    def content(self) -> tuple[Any, ...]:
        """What changes when anyone writes the record (the resourceVersion aside)."""
        return (self.holder, self.duration_seconds, self.acquire_time, self.renew_time, self.transitions)


class Step(Enum):
    """What a candidate does in one round."""

    CREATE = "create"  # no Lease yet
    RENEW = "renew"  # this candidate holds it
    TAKE_OVER = "take over"  # free, or its holder stopped renewing
    WAIT = "wait"  # another holder renews it


def next_step(record: LeaseRecord | None, identity: str, unchanged_for: float) -> Step:
    """The round's step; ``unchanged_for``: seconds since this candidate saw the record change."""
    if record is None:
        return Step.CREATE
    if record.holder == identity:
        return Step.RENEW
    if record.holder and unchanged_for < record.duration_seconds:
        return Step.WAIT
    return Step.TAKE_OVER


def micro_time(moment: datetime) -> str:
    """A Lease's MicroTime: RFC 3339 in UTC with microseconds."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def lease_spec(step: Step, record: LeaseRecord | None, identity: str, now: datetime, duration: int) -> dict[str, Any]:
    """The spec ``step`` writes: a renewal keeps the acquire time, a take-over counts a transition."""
    stamp = micro_time(now)
    acquired = record.acquire_time if step is Step.RENEW and record is not None else None
    transitions = record.transitions if record is not None else 0
    if step is Step.TAKE_OVER:
        transitions += 1  # as client-go counts: the holder changed (a released lease too)
    return {
        "holderIdentity": identity,
        "leaseDurationSeconds": duration,
        "acquireTime": acquired or stamp,
        "renewTime": stamp,
        "leaseTransitions": transitions,
    }


def released_spec(record: LeaseRecord, now: datetime) -> dict[str, Any]:
    """The spec a holder leaves on a graceful stop: no holder, so a standby takes over at its next try."""
    stamp = micro_time(now)
    return {"leaseDurationSeconds": 1, "acquireTime": stamp, "renewTime": stamp, "leaseTransitions": record.transitions}


# what a round may meet on the way to the API server; anything else is a bug and ends the process
TRANSIENT = (ApiError, aiohttp.ClientError, TimeoutError, OSError, ValueError)


class LeaderElector:
    """One candidate for one Lease: ``acquire`` waits until it leads, ``hold`` renews until it no longer does."""

    def __init__(
        self,
        server: ApiServer,
        namespace: str,
        name: str,
        identity: str,
        timings: LeaseTimings,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.server, self.namespace, self.name, self.identity, self.timings = server, namespace, name, identity, timings
        self._clock = clock
        self.observed: LeaseRecord | None = None
        self._observed_at = clock()

    @property
    def _path(self) -> str:
        return f"{LEASES.format(namespace=self.namespace)}/{self.name}"

    def _observe(self, record: LeaseRecord | None) -> None:
        """Remembers when the record last changed, by this process's clock (see the module)."""
        if record is None or self.observed is None or record.content() != self.observed.content():
            self._observed_at = self._clock()
        self.observed = record

    async def _read(self) -> LeaseRecord | None:
        try:
            return LeaseRecord.of(json.loads(await self.server.request("GET", self._path, None)))
        except ApiError as error:
            if error.status == 404:
                return None
            raise

    async def _write(self, record: LeaseRecord | None, spec: dict[str, Any]) -> LeaseRecord | None:
        """Creates or replaces the Lease; None when another candidate wrote it first (409)."""
        metadata: dict[str, Any] = {"name": self.name, "namespace": self.namespace}
        if record is not None:
            metadata["resourceVersion"] = record.resource_version
        body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": metadata, "spec": spec}
        method, path = ("POST", LEASES.format(namespace=self.namespace)) if record is None else ("PUT", self._path)
        try:
            return LeaseRecord.of(json.loads(await self.server.request(method, path, body)))
        except ApiError as error:
            if error.status == 409:
                return None
            raise

    async def attempt(self) -> bool:
        """One round: read, decide, write. True when this candidate holds the lease afterwards."""
        record = await self._read()
        self._observe(record)
        step = next_step(record, self.identity, self._clock() - self._observed_at)
        if step is Step.WAIT:
            return False
        spec = lease_spec(step, record, self.identity, datetime.now(UTC), self.timings.lease_duration)
        written = await self._write(record, spec)
        if written is None:
            return False
        if step is not Step.RENEW:
            log.info("%s leads: %s the lease %s/%s", self.identity, step.value, self.namespace, self.name)
        self._observe(written)
        return True

    async def acquire(self, stop: asyncio.Event) -> bool:
        """Tries every retry period (with jitter) until this candidate leads (True) or ``stop`` is set (False)."""
        while not stop.is_set():
            try:
                if await self.attempt():
                    return True
            except TRANSIENT as error:
                log.warning("leader election: %s", error)
            pause = self.timings.retry_period * random.uniform(1.0, JITTER)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=pause)
        return False

    async def hold(self) -> None:
        """Renews every retry period; returns once the lease is lost: another candidate holds it, or no
        renewal succeeded within the renew deadline (so this one stops before anyone may take over)."""
        renewed = self._clock()
        while True:
            left = self.timings.renew_deadline - (self._clock() - renewed)
            await asyncio.sleep(min(self.timings.retry_period, max(left, 0.0)))
            left = self.timings.renew_deadline - (self._clock() - renewed)
            if left <= 0:
                log.error("%s could not renew the lease within %s s", self.identity, self.timings.renew_deadline)
                return
            try:
                held = await asyncio.wait_for(self.attempt(), timeout=left)
            except TRANSIENT as error:
                log.warning("leader election: renewing: %s", error)
                continue
            if held:
                renewed = self._clock()
            elif self.observed is not None and self.observed.holder not in ("", self.identity):
                log.error("%s lost the lease to %s", self.identity, self.observed.holder)
                return

    async def release(self) -> None:
        """Frees the lease on a graceful stop, if this candidate still holds it; best effort."""
        try:
            record = await self._read()
            if record is not None and record.holder == self.identity:
                await self._write(record, released_spec(record, datetime.now(UTC)))
                log.info("%s released the lease %s/%s", self.identity, self.namespace, self.name)
        except TRANSIENT as error:
            log.warning("leader election: releasing: %s", error)
