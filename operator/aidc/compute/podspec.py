"""Pod-spec pieces shared by training and serving pods: resources, security, user overrides."""

from __future__ import annotations

import copy
from typing import Any

from aidc.api.common import Placement, Resources


def resource_requirements(resources: Resources) -> dict[str, Any]:
    """Requests and limits; GPUs are requested and limited alike, as extended resources must be."""
    requests: dict[str, Any] = {}
    limits: dict[str, Any] = {}
    if resources.cpu is not None:
        requests["cpu"] = str(resources.cpu)
    if resources.cpu_limit is not None:
        limits["cpu"] = str(resources.cpu_limit)
    if resources.memory is not None:
        requests["memory"] = limits["memory"] = str(resources.memory)
    if resources.gpus:
        requests[resources.gpu_resource] = limits[resources.gpu_resource] = str(resources.gpus)
    result: dict[str, Any] = {}
    if requests:
        result["requests"] = requests
    if limits:
        result["limits"] = limits
    return result


def placement_fields(placement: Placement) -> dict[str, Any]:
    """The pod-spec fields of a Placement that are set."""
    fields: dict[str, Any] = {}
    if placement.node_selector:
        fields["nodeSelector"] = dict(placement.node_selector)
    if placement.tolerations:
        fields["tolerations"] = [toleration.to_wire() for toleration in placement.tolerations]
    if placement.affinity:
        fields["affinity"] = placement.affinity.to_wire()
    if placement.priority_class_name:
        fields["priorityClassName"] = placement.priority_class_name
    return fields


def restricted_security_context() -> dict[str, Any]:
    """The container security context of the 'restricted' Pod Security Standard."""
    return {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "runAsNonRoot": True,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def merge_pod_spec(ours: dict[str, Any], theirs: dict[str, Any]) -> dict[str, Any]:
    """A user's pod-spec fields merged into ours: lists of named items merge by name, our values win.

    The user adds what the operator does not set (serviceAccountName, runtimeClassName, extra
    volumes or sidecar containers) but cannot break the gang's hostname, restart policy or env.
    ``ours`` is built for this one pod and handed over as it is; ``theirs`` (the job's template,
    shared by every pod) is copied. Copying ours too was most of the cost of rendering a gang.
    """
    merged = copy.deepcopy(theirs)
    for key, value in ours.items():
        if key in ("containers", "initContainers", "volumes") and isinstance(merged.get(key), list):
            merged[key] = _merge_named(value, merged[key])
        elif isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    return merged


def _merge_named(ours: list[dict[str, Any]], theirs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    by_name = {item.get("name"): item for item in theirs}
    result = []
    for item in ours:
        extra = by_name.pop(item.get("name"), None)
        result.append({**extra, **item} if extra else item)
    return result + list(by_name.values())
