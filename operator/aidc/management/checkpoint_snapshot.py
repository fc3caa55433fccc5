"""The backup of a succeeded job's checkpoints: one VolumeSnapshot, and what status says of it.

Pure, like the rest of the decision: the reconciler looks the snapshot up by its deterministic
name (``snapshot_to_look_up``), ``take_snapshot`` decides from what it found, and a create the
API server refused comes back through ``snapshot_refused``. The condition ``SnapshotTaken``:

- no snapshot yet → it is created: False, ``SnapshotPending`` until the snapshot controller
  reports ``readyToUse`` (True, ``SnapshotReady``) or an error (False, ``SnapshotFailed``: the
  controller keeps trying, so the operator keeps looking);
- the snapshot.storage.k8s.io API is not served → False, ``SnapshotAPIUnavailable`` (looked at
  again every resync: installing the CRDs later still takes the snapshot); the job stays Succeeded;
- the create or the read refused → False, ``SnapshotRefused``, tried again;
- another object holds the name → False, ``SnapshotNameTaken``;
- the snapshot was taken and later deleted → False, ``SnapshotDeleted``: it is never taken twice,
  since the checkpoints may have changed since the job succeeded.

No controller pokes the operator when a snapshot changes (it only gets and creates them), so a
pending snapshot is looked at again, more rarely the longer it has been pending.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from aidc.api.trainingjob import SnapshotStatus, TrainingJob, TrainingJobStatus
from aidc.identity.names import checkpoint_claim_name, checkpoint_snapshot_name
from aidc.management.conditions import find_condition, set_condition
from aidc.management.observe import parse_time
from aidc.management.plan import Event, Plan
from aidc.management.status_draft import StatusDraft, generation_of
from aidc.settings import OperatorSettings
from aidc.storage.snapshots import SNAPSHOT_API_VERSION, checkpoint_snapshot, is_snapshot_of, snapshot_request

CONDITION = "SnapshotTaken"
# nothing more to learn: the snapshot is ready, or gone for good
SETTLED = frozenset({"SnapshotReady", "SnapshotDeleted"})
WARNINGS = frozenset(
    {"SnapshotAPIUnavailable", "SnapshotRefused", "SnapshotFailed", "SnapshotNameTaken", "SnapshotDeleted"}
)
RETRY_SECONDS = 30
MIN_POLL_SECONDS = 5


@dataclass(frozen=True)
class SnapshotLookup:
    """What the API server answered for the snapshot's name in this pass."""

    found: dict[str, Any] | None = None
    api_available: bool = True
    problem: str | None = None  # the read was refused: why


def snapshot_to_look_up(job: TrainingJob) -> str | None:
    """The snapshot a pass must look up: None unless the job succeeded and asked for one not yet settled."""
    if snapshot_request(job) is None or job.status is None or job.status.phase != "Succeeded":
        return None
    taken = find_condition(job.status.conditions, CONDITION)
    if taken is not None and taken.reason in SETTLED:
        return None
    return checkpoint_snapshot_name(job)


def holds_deletion(job: TrainingJob) -> bool:
    """Whether ttlSecondsAfterFinished must wait: the job succeeded, asked for a snapshot, and its
    status does not say yet what became of it (deleting the job now would never take it)."""
    status = job.status
    if snapshot_request(job) is None or status is None or status.phase != "Succeeded":
        return False
    return find_condition(status.conditions, CONDITION) is None


def take_snapshot(
    draft: StatusDraft[TrainingJobStatus], job: TrainingJob, lookup: SnapshotLookup | None, settings: OperatorSettings
) -> None:
    """The snapshot's part of a finished job's pass, from what ``lookup`` found."""
    if lookup is None or snapshot_request(job) is None or draft.old.phase != "Succeeded":
        return
    name = checkpoint_snapshot_name(job)
    if lookup.problem is not None:
        _report(draft, False, "SnapshotRefused", lookup.problem)
        draft.plan.requeue(RETRY_SECONDS)
    elif not lookup.api_available:
        message = (
            f"the {SNAPSHOT_API_VERSION} API is not served, so the checkpoints were not backed up: install the "
            "CSI snapshot CRDs and controller (external-snapshotter); the job succeeded all the same"
        )
        _report(draft, False, "SnapshotAPIUnavailable", message)
        draft.plan.requeue(settings.resync_seconds)
    elif lookup.found is None and draft.old.snapshot is not None:
        message = f"VolumeSnapshot {name} was deleted; the operator takes a job's snapshot only once"
        _report(draft, False, "SnapshotDeleted", message)
    elif lookup.found is None:
        _create(draft, job, settings)
    elif not is_snapshot_of(lookup.found, job):
        message = f"a VolumeSnapshot {name} exists that this job did not take: delete or rename it"
        _report(draft, False, "SnapshotNameTaken", message)
        draft.plan.requeue(settings.resync_seconds)
    else:
        _record(draft, job, lookup.found, settings)


def _create(draft: StatusDraft[TrainingJobStatus], job: TrainingJob, settings: OperatorSettings) -> None:
    snapshot = checkpoint_snapshot(job)
    if snapshot is None:
        return
    draft.plan.create.append(snapshot)
    draft.update(snapshot=_snapshot_status(job, snapshot))
    _pending(draft, job, settings)


def _record(
    draft: StatusDraft[TrainingJobStatus], job: TrainingJob, found: dict[str, Any], settings: OperatorSettings
) -> None:
    """The snapshot as its controller reports it, into status.snapshot and the condition."""
    snapshot = _snapshot_status(job, found)
    draft.update(snapshot=snapshot)
    which = f"VolumeSnapshot {snapshot.name} of claim {snapshot.claim_name}"
    if snapshot.ready_to_use:
        size = f" (restoreSize {snapshot.restore_size})" if snapshot.restore_size else ""
        _report(draft, True, "SnapshotReady", f"{which} is ready to use{size}")
    elif snapshot.error:
        _report(draft, False, "SnapshotFailed", f"{which}: the snapshot controller reports: {snapshot.error}")
        draft.plan.requeue(_poll_seconds(draft, settings))
    else:
        _pending(draft, job, settings)


def _snapshot_status(job: TrainingJob, snapshot: dict[str, Any]) -> SnapshotStatus:
    spec, reported = snapshot.get("spec") or {}, snapshot.get("status") or {}
    ready, size = reported.get("readyToUse"), reported.get("restoreSize")
    return SnapshotStatus(
        name=checkpoint_snapshot_name(job),
        claim_name=str(checkpoint_claim_name(job)),
        volume_snapshot_class_name=spec.get("volumeSnapshotClassName"),
        ready_to_use=ready if isinstance(ready, bool) else None,
        creation_time=parse_time(reported.get("creationTime")),
        restore_size=str(size) if size is not None else None,
        error=(reported.get("error") or {}).get("message") or None,
    )


def _pending(draft: StatusDraft[TrainingJobStatus], job: TrainingJob, settings: OperatorSettings) -> None:
    message = (
        f"VolumeSnapshot {checkpoint_snapshot_name(job)} of claim {checkpoint_claim_name(job)}: waiting for "
        "the snapshot controller to report readyToUse"
    )
    _report(draft, False, "SnapshotPending", message)
    draft.plan.requeue(_poll_seconds(draft, settings))


def _poll_seconds(draft: StatusDraft[TrainingJobStatus], settings: OperatorSettings) -> float:
    """A quarter of the time since the job succeeded, between MIN_POLL_SECONDS and the resync interval."""
    finished = draft.old.completion_time or draft.now
    waited = (draft.now - finished).total_seconds()
    return float(min(max(waited / 4, MIN_POLL_SECONDS), max(settings.resync_seconds, MIN_POLL_SECONDS)))


def _report(draft: StatusDraft[TrainingJobStatus], taken: bool, reason: str, message: str) -> None:
    """The condition; a new reason is also an Event."""
    before = find_condition(draft.old.conditions, CONDITION)
    if before is None or before.reason != reason:
        draft.event(reason, message, warning=reason in WARNINGS)
    draft.condition(CONDITION, taken, reason, message)


def snapshot_refused(job: TrainingJob, plan: Plan, code: int, message: str, now: datetime) -> Plan:
    """``plan`` once the API server refused the snapshot's create: status keeps no snapshot that was
    not made, and the condition says why (404: the API went away between the look and the create)."""
    before = job.status or TrainingJobStatus()
    status = TrainingJobStatus.model_validate(plan.status or before.to_wire())
    reason = "SnapshotAPIUnavailable" if code == 404 else "SnapshotRefused"
    text = f"creating VolumeSnapshot {checkpoint_snapshot_name(job)} was refused ({code}): {message}"
    generation = generation_of(job.metadata)
    conditions = set_condition(list(status.conditions), CONDITION, "False", reason, text, generation, now)
    answer = replace(
        plan,
        status=status.model_copy(update={"conditions": conditions, "snapshot": before.snapshot}).to_wire(),
        events=[*(e for e in plan.events if e.reason != "SnapshotPending"), Event("Warning", reason, text)],
    )
    answer.requeue(RETRY_SECONDS)
    return answer
