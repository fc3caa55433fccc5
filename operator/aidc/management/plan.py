"""What a reconcile pass decided: objects to create, pods to delete, the status, events."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from aidc import contract


@dataclass(frozen=True)
class Event:
    """A Kubernetes Event on the custom resource, marking a transition."""

    type: Literal["Normal", "Warning"]
    reason: str
    message: str


@dataclass(frozen=True)
class Refusal:
    """The API server refused an object a plan created (not a conflict): an input to the decision."""

    kind: str
    name: str
    status: int
    message: str

    def __str__(self) -> str:
        return f"creating {self.kind} {self.name} was refused ({self.status}): {self.message}"

    @property
    def blames_the_spec(self) -> bool:
        """Whether the object as rendered from the spec is what was refused, so no retry can help.

        400 (Bad Request) and 422 (Invalid) on a rank pod, the claim or a serving Deployment, all
        rendered from the spec (podTemplate overrides the schema cannot check, a StorageClass name, ...). A quota
        or a policy (403), or the server's trouble (5xx), may pass later: those are retried.
        """
        return self.kind in ("Pod", "PersistentVolumeClaim", "Deployment") and self.status in (400, 422)


@dataclass(frozen=True)
class PodDeletion:
    name: str
    force: bool = False  # grace period 0: the node is gone and will never confirm


@dataclass
class Plan:
    """Decided actions; the apply layer carries them out in this order: create, update, delete, release,
    ungate, status, events."""

    create: list[dict[str, Any]] = field(default_factory=list)
    # objects whose spec drifted from what they should be: patched as a whole
    update: list[dict[str, Any]] = field(default_factory=list)
    delete: list[PodDeletion] = field(default_factory=list)
    # pods on their way out whose gang scheduler's finalizer (Kueue's) is released, so their names free up
    release: list[str] = field(default_factory=list)
    # rank pods whose operator gang gate is lifted (the whole gang at once)
    ungate: list[str] = field(default_factory=list)
    # (kind, name) of owned objects no longer wanted (an autoscaler after autoscaling was removed)
    remove: list[tuple[str, str]] = field(default_factory=list)
    status: dict[str, Any] | None = None
    events: list[Event] = field(default_factory=list)
    requeue_after: float | None = None
    delete_resource: bool = False
    # the status only moves a gang along its normal way up (ranks created, scheduled, starting):
    # nothing a user must act on, so its write may wait longer (see gang_progress_seconds)
    routine_progress: bool = False

    def requeue(self, seconds: float) -> None:
        """Ask to be called again within ``seconds`` (the earliest request wins)."""
        seconds = max(seconds, 0.5)
        self.requeue_after = seconds if self.requeue_after is None else min(self.requeue_after, seconds)

    def keep(self, desired: dict[str, Any], observed_hash: str | None) -> None:
        """Create ``desired`` when none is observed (``observed_hash`` None), replace it when the hash of
        what was rendered last (its ``aidc.io/spec-hash``) differs from the hash of ``desired``."""
        if observed_hash is None:
            self.create.append(desired)
        elif observed_hash != desired["metadata"]["annotations"][contract.ANNOTATION_SPEC_HASH]:
            self.update.append(desired)
