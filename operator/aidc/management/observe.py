"""What the operator needs to know about a pod, read from its Kubernetes form once.

Everything the decision function looks at is here, as plain values, so decisions can be
tested with tables of ``RankPod`` values instead of whole pod objects.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from aidc import contract
from aidc.compute.scheduling import GANG_GATE, KUEUE_FINALIZER, KUEUE_TERMINATION

IMAGE_PULL_REASONS = frozenset({"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"})


def parse_time(value: Any) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


@dataclass(frozen=True, slots=True)
class RankPod:
    """One observed pod of a gang (slotted: the index holds one per pod of the fleet)."""

    name: str
    rank: int
    attempt: int
    phase: str = "Pending"
    created: datetime | None = None
    deletion: datetime | None = None  # deletionTimestamp: when the grace period ends
    scheduled: bool = False
    unschedulable: str | None = None  # the scheduler's message
    gated: bool = False  # a scheduling gate other than the operator's: the gang scheduler's (Kueue's admission)
    gang_gated: bool = False  # the operator's own gate (GANG_GATE): lifted once no rank is gated
    image_pull_error: str | None = None
    exit_code: int | None = None
    reason: str | None = None  # Evicted, OOMKilled, DeadlineExceeded, ...
    message: str | None = None  # termination message
    finished_at: datetime | None = None  # the trainer container's finishedAt
    disrupted: str | None = None  # DisruptionTarget reason: node lost, preempted
    progress: dict[str, Any] | None = None
    # Kueue stopped the pod (TerminationTarget): its reason (WorkloadEvictedDueToPreempted, ...) and message
    stopped_by_queue: str | None = None
    stop_message: str | None = None
    held_by_queue: bool = False  # carries Kueue's finalizer: it stays until someone releases it

    @property
    def deleting(self) -> bool:
        return self.deletion is not None

    @property
    def running(self) -> bool:
        return self.phase == "Running" and not self.deleting

    @property
    def finished(self) -> bool:
        return self.phase in ("Succeeded", "Failed")

    @property
    def completed_run(self) -> bool:
        """The rank exited 0, or its trainer wrote a summary of a completed run and crashed after it
        (a collective library that aborts on the way out: exit 134): its work is done either way."""
        return self.phase == "Succeeded" or (self.phase == "Failed" and _says_completed(self.message))


def _says_completed(message: str | None) -> bool:
    """Whether a termination message is the trainer's summary of a completed run."""
    if not message or not message.lstrip().startswith("{"):
        return False
    try:
        summary = json.loads(message)
    except ValueError:
        return False
    if not isinstance(summary, dict):
        return False
    return summary.get("exitCode") == contract.EXIT_OK and summary.get("reason") == "Completed"


def _trainer_status(status: dict[str, Any]) -> dict[str, Any]:
    statuses = status.get("containerStatuses") or []
    return next((s for s in statuses if s.get("name") == "trainer"), statuses[0] if statuses else {})


def rank_pod_from(pod: dict[str, Any]) -> RankPod | None:
    """A RankPod from a pod object, or None when the pod is not a rank (no rank/attempt labels)."""
    metadata = pod.get("metadata") or {}
    labels = metadata.get("labels") or {}
    try:
        rank = int(labels[contract.LABEL_REPLICA_INDEX])
        attempt = int(labels[contract.LABEL_GANG_ATTEMPT])
    except (KeyError, TypeError, ValueError):
        return None
    spec = pod.get("spec") or {}
    status = pod.get("status") or {}
    conditions = {c.get("type"): c for c in status.get("conditions") or []}
    scheduled = conditions.get("PodScheduled", {})
    disruption = conditions.get("DisruptionTarget", {})
    gates = spec.get("schedulingGates") or ()
    stopped = conditions.get(KUEUE_TERMINATION, {})
    stopped = stopped if stopped.get("status") == "True" else {}
    container = _trainer_status(status)
    state = container.get("state") or {}
    waiting = state.get("waiting") or {}
    terminated = state.get("terminated") or {}
    progress = None
    raw_progress = (metadata.get("annotations") or {}).get(contract.ANNOTATION_PROGRESS)
    if raw_progress:
        try:
            parsed = json.loads(raw_progress)
            progress = parsed if isinstance(parsed, dict) else None
        except ValueError:
            progress = None  # a half-written heartbeat is ignored, the next one will do
    return RankPod(
        name=str(metadata.get("name")),
        rank=rank,
        attempt=attempt,
        phase=str(status.get("phase") or "Pending"),
        created=parse_time(metadata.get("creationTimestamp")),
        deletion=parse_time(metadata.get("deletionTimestamp")),
        scheduled=bool(spec.get("nodeName")) or scheduled.get("status") == "True",
        unschedulable=scheduled.get("message") if scheduled.get("reason") == "Unschedulable" else None,
        gated=any(g.get("name") != GANG_GATE for g in gates),
        gang_gated=any(g.get("name") == GANG_GATE for g in gates),
        image_pull_error=(
            f"{waiting.get('reason')}: {waiting.get('message', '')}".strip(": ")
            if waiting.get("reason") in IMAGE_PULL_REASONS
            else None
        ),
        exit_code=terminated.get("exitCode"),
        reason=terminated.get("reason") or status.get("reason"),
        message=(terminated.get("message") or status.get("message") or None),
        finished_at=parse_time(terminated.get("finishedAt")),
        disrupted=disruption.get("reason") if disruption.get("status") == "True" else None,
        progress=progress,
        stopped_by_queue=stopped.get("reason") or ("Stopped" if stopped else None),
        stop_message=stopped.get("message") or None,
        held_by_queue=KUEUE_FINALIZER in (metadata.get("finalizers") or ()),
    )


def is_owned_by(pod: dict[str, Any], uid: str) -> bool:
    """Pods created by hand with our labels are not adopted: only the controller owner counts."""
    refs = (pod.get("metadata") or {}).get("ownerReferences") or []
    return any(ref.get("uid") == uid and ref.get("controller") for ref in refs)


def controller_uid(metadata: dict[str, Any]) -> str | None:
    """The uid of the object's controller owner, if it has one."""
    refs = metadata.get("ownerReferences") or []
    return next((str(ref.get("uid")) for ref in refs if ref.get("controller")), None)


def owned_hash(
    index: Mapping[tuple[str, str], Iterable[tuple[str | None, str]]], key: tuple[str, str], owner: Any
) -> str | None:
    """The spec hash of the object at ``key`` (namespace, name) that ``owner`` controls; None when there
    is none, or only one another owner controls: that one must not stand in for the owner's own."""
    uid = owner.metadata["uid"]
    return next((spec_hash for controller, spec_hash in index.get(key, ()) if controller == uid), None)
