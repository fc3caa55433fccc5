"""Which decided statuses are written at once, and which wait for the batch window."""

from __future__ import annotations

from typing import Any

import pytest

from aidc.management.status_batching import write_at_once

CREATED = "2026-11-29T12:00:00Z"
PENDING: dict[str, Any] = {"phase": "Pending", "gangAttempt": 0, "gangCreatedTime": CREATED, "ready": "0/8"}


@pytest.mark.parametrize(
    ("server", "target", "at_once"),
    [
        # a new job's first Pending waits...
        ({}, {"phase": "Pending", "ready": "0/8"}, False),
        # ...but not once its gang exists: a rank lost while no operator runs must fail the gang
        ({}, {**PENDING, "ready": "3/8"}, True),
        # ...nor when it leaves Pending before its first write
        ({}, {"phase": "Queued"}, True),
        ({}, {"phase": "Failed", "conditions": [{"type": "Failed", "reason": "InvalidSpec"}]}, True),
        ({}, {"phase": "Running", "gangCreatedTime": CREATED}, True),
        # afterwards every phase change is written at once
        (PENDING, {**PENDING, "phase": "Running"}, True),
        (PENDING, {**PENDING, "phase": "Restarting", "restarts": 1}, True),
        # and so is a change to what the decision remembers, in the same phase
        (PENDING, {**PENDING, "gangCreatedTime": "2026-11-29T12:01:00Z"}, True),
        (PENDING, {**PENDING, "gangAttempt": 1}, True),
        ({**PENDING, "phase": "Running"}, {**PENDING, "phase": "Running", "checkpoint": "step-100"}, True),
        # descriptive changes wait: counts, messages, progress
        (PENDING, {**PENDING, "ready": "5/8"}, False),
        (PENDING, {**PENDING, "conditions": [{"type": "Scheduled", "status": "False"}]}, False),
        ({**PENDING, "phase": "Running"}, {**PENDING, "phase": "Running", "progress": {"step": 7}}, False),
    ],
)
def test_write_at_once(server: dict[str, Any], target: dict[str, Any], at_once: bool) -> None:
    assert write_at_once(server, target) is at_once
