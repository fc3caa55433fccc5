"""The downward API: a pod's own fields, as environment variables and volume files see them."""

from __future__ import annotations

import re
from typing import Any

from aidc_nodeagent.quantity import format_quantity, parse_quantity

_KEYED = re.compile(r"^metadata\.(labels|annotations)\['(.+)'\]$")


class FieldError(ValueError):
    """A fieldRef or resourceFieldRef the agent cannot resolve."""


def field_value(pod: dict[str, Any], path: str, pod_ip: str | None, host_ip: str) -> str:
    """The value of ``fieldRef.fieldPath`` for ``pod`` (the paths a kubelet supports)."""
    meta, spec = pod.get("metadata", {}), pod.get("spec", {})
    simple = {
        "metadata.name": meta.get("name", ""),
        "metadata.namespace": meta.get("namespace", ""),
        "metadata.uid": meta.get("uid", ""),
        "spec.nodeName": spec.get("nodeName", ""),
        "spec.serviceAccountName": spec.get("serviceAccountName", ""),
        "status.hostIP": host_ip,
        "status.hostIPs": host_ip,
        "status.podIP": pod_ip or "",
        "status.podIPs": pod_ip or "",
    }
    if path in simple:
        return str(simple[path])
    keyed = _KEYED.match(path)
    if keyed:
        return str((meta.get(keyed.group(1)) or {}).get(keyed.group(2), ""))
    if path in ("metadata.labels", "metadata.annotations"):
        items = meta.get(path.split(".")[1]) or {}
        return "\n".join(f'{k}="{v}"' for k, v in sorted(items.items()))
    raise FieldError(f"unsupported fieldPath {path!r}")


def resource_value(container: dict[str, Any], ref: dict[str, Any], allocatable: dict[str, str]) -> str:
    """The value of ``resourceFieldRef``: the container's limit (node allocatable when unset) or request."""
    resource = ref.get("resource", "")
    kind, _, name = resource.partition(".")
    if kind not in ("limits", "requests") or not name:
        raise FieldError(f"unsupported resourceFieldRef {resource!r}")
    resources = container.get("resources") or {}
    raw = (resources.get(kind) or {}).get(name)
    if raw is None and kind == "limits":
        raw = allocatable.get(name)
    if raw is None:
        raw = "0"
    divisor = parse_quantity(str(ref.get("divisor", "1")))
    value = parse_quantity(str(raw)) / (divisor or 1)
    return format_quantity(value)
