"""When a TrainingJob's decided status is written: at once, or a little later in one write.

The passes of a gang coming up (pods created, scheduled, started) each decide a new status; a
phase change and anything the decision remembers are written at once, descriptive changes wait
up to ``status_batch_seconds`` (``gang_progress_seconds`` for a Pending gang's routine
progress), so they make one write instead of one each. Meanwhile the next pass decides from the
status not yet written, as if it had been (see OperatorSettings for the windows).
"""

from __future__ import annotations

from typing import Any

from aidc.management.patching import merge_patch
from aidc.management.workers import Memory
from aidc.settings import OperatorSettings

# status fields that only describe (a late write loses nothing the decision relies on)
_DESCRIPTIVE = frozenset(
    {"phase", "conditions", "replicaCounts", "ready", "selector", "observedGeneration", "progress"}
)


def write_at_once(server: dict[str, Any], target: dict[str, Any]) -> bool:
    """Whether a decided status goes out now rather than after the batch window.

    A phase change is written at once (but the very first Pending of a new job), and so is any
    change to what the decision remembers in status (gang attempt and times, restarts, checkpoint,
    ...), so an operator stopped within the window resumes from it. That includes the first
    ``gangCreatedTime``: without it a restarted operator cannot tell a rank lost while it was down
    from one never created, and would recreate the rank instead of restarting the gang.
    """
    before, after = server.get("phase"), target.get("phase")
    if before != after and not (before is None and after == "Pending"):
        return True
    return any(server.get(k) != target.get(k) for k in server.keys() | target.keys() if k not in _DESCRIPTIVE)


def body_to_decide_from(body: dict[str, Any], memory: Memory) -> dict[str, Any]:
    """``body`` with the status decided but not written yet, while the server's is the one it was decided from."""
    if memory.unwritten is None:
        return body
    if memory.unwritten_base == (body.get("status") or {}):
        return {**body, "status": memory.unwritten}
    memory.unwritten = None  # someone else wrote status meanwhile: start again from theirs
    return body


def patch_to_write(
    server: dict[str, Any],
    target: dict[str, Any],
    routine_progress: bool,
    memory: Memory,
    settings: OperatorSettings,
    now: float,
) -> tuple[dict[str, Any] | None, float | None]:
    """The merge patch to write now; or None, and how long ``target`` may still wait (loop time ``now``)."""
    patch = merge_patch(server, target)
    batch = settings.status_batch_seconds
    if batch > 0 and routine_progress and server.get("phase") == target.get("phase") == "Pending":
        # a written Pending status that only counts a gang coming up: the next phase is near
        batch = max(batch, settings.gang_progress_seconds)
    if not patch:
        memory.unwritten = None
        return None, None
    held_long_enough = memory.unwritten is not None and now - memory.unwritten_since >= batch
    if batch <= 0 or write_at_once(server, target) or held_long_enough:
        memory.unwritten = None
        return patch, None
    if memory.unwritten is None:
        memory.unwritten_since = now
    memory.unwritten, memory.unwritten_base = target, server
    return None, max(0.0, memory.unwritten_since + batch - now)
