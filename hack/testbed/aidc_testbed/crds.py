"""Other projects' CRDs the bed's extra components bring (Kueue's, scheduler-plugins' PodGroup)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from kubernetes import client

from aidc_testbed import health


def apply_crds(api: client.ApiClient, documents: Sequence[dict[str, Any]], field_manager: str, timeout: float) -> None:
    """Apply ``documents`` (server-side, taking over their fields) and wait until every one is Established."""
    extensions = client.ApiextensionsV1Api(api)
    for doc in documents:
        extensions.patch_custom_resource_definition(
            doc["metadata"]["name"], doc, field_manager=field_manager, force=True,
            _content_type="application/apply-patch+yaml",
        )  # fmt: skip

    def established(name: str) -> bool | None:
        conditions = extensions.read_custom_resource_definition(name).status.conditions or []
        return any(c.type == "Established" and c.status == "True" for c in conditions) or None

    for doc in documents:
        name = doc["metadata"]["name"]
        health.poll(lambda name=name: established(name), timeout=timeout, what=f"CRD {name} Established")
