"""The last step of a pass: the decided status written as a merge patch, the decided events posted."""

from __future__ import annotations

from typing import Any

from aidc.management.cluster import Cluster
from aidc.management.patching import merge_patch
from aidc.management.plan import Plan


async def write_status(cluster: Cluster, plural: str, body: dict[str, Any], status: dict[str, Any] | None) -> Any:
    """Patches ``status`` over the server's (``body``'s); the object as the server now has it, or None
    when there was nothing to write."""
    if status is None:
        return None
    patch = merge_patch(body.get("status") or {}, status)
    if not patch:
        return None
    meta = body["metadata"]
    return await cluster.patch_status(plural, meta["namespace"], meta["name"], patch)


async def report(cluster: Cluster, plural: str, body: dict[str, Any], plan: Plan) -> dict[str, Any] | None:
    """Writes ``plan``'s status and posts its events; the object as written, or None."""
    updated: dict[str, Any] | None = await write_status(cluster, plural, body, plan.status)
    for event in plan.events:
        await cluster.post_event(body, event)
    return updated
