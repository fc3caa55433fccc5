"""The one idiom of both decisions: a status drafted from the old one, and the plan around it.

A decision starts a ``StatusDraft`` from the resource's status, sets phases and conditions on
it (a phase change also plans its Event), adds actions to ``plan``, and returns ``done()``:
the plan, with the new status when it differs from the old one.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Generic, TypeVar

from aidc.api.common import ConditionStatus
from aidc.api.inferenceservice import InferenceServiceStatus
from aidc.api.trainingjob import TrainingJobStatus
from aidc.management.conditions import set_condition
from aidc.management.plan import Event, Plan

Status = TypeVar("Status", TrainingJobStatus, InferenceServiceStatus)


def generation_of(metadata: Mapping[str, Any]) -> int | None:
    """``metadata.generation``, None for an object that has none (yet)."""
    return int(metadata.get("generation") or 0) or None


class StatusDraft(Generic[Status]):
    """The status a pass decides, starting from ``old``; ``recorded``: whether the server has a status at all."""

    def __init__(self, old: Status, recorded: bool, generation: int | None, now: datetime) -> None:
        self.old: Status = old
        self.status: Status = old.model_copy()
        self.recorded = recorded
        self.generation = generation
        self.now = now
        self.plan = Plan()

    def update(self, **changes: object) -> None:
        self.status = self.status.model_copy(update=changes)

    def condition(self, type_: str, status: bool, reason: str, message: str = "") -> None:
        value: ConditionStatus = "True" if status else "False"
        conditions = set_condition(
            list(self.status.conditions), type_, value, reason, message, self.generation, self.now
        )
        self.update(conditions=conditions)

    def event(self, reason: str, message: str, warning: bool = False) -> None:
        self.plan.events.append(Event("Warning" if warning else "Normal", reason, message))

    def phase(self, phase: str, reason: str, message: str, warning: bool = False) -> None:
        """Enter ``phase`` for ``reason``; entering it (not staying in it) is an Event.

        The reason is kept beside the phase (``status.reason``) for the printer column: a
        JSONPath over the conditions prints the first that matches, not the one that explains.
        """
        if self.status.phase != phase:
            self.event(reason, message, warning)
        self.update(phase=phase, reason=reason)

    def has_condition(self, type_: str) -> bool:
        return any(c.type == type_ for c in self.status.conditions)

    def done(self) -> Plan:
        """The plan, with the status to write when there was none or it changed."""
        new = self.status.to_wire()
        if not self.recorded or new != self.old.to_wire():
            self.plan.status = new
        return self.plan
