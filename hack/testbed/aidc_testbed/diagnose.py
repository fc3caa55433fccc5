"""What a namespace's pods are doing, in a few lines: for the error of a ``helm install --wait`` that
timed out, where "context deadline exceeded" alone says nothing.

Each pod's phase, node and unmet conditions, each container's state with its reason and message,
the last lines of its log (and of the run before a restart), and the namespace's latest events:
what ``kubectl describe`` and ``kubectl logs --previous`` would show, gathered before the bed goes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kubernetes import client

LOG_LINES = 15
EVENTS = 15


def pods_report(api: client.ApiClient, namespace: str) -> str:
    """A report of every pod in ``namespace`` and its latest events; never raises."""
    try:
        core = client.CoreV1Api(api)
        pods = core.list_namespaced_pod(namespace).items
        lines = [f"pods in {namespace}: {len(pods)}"]
        for pod in pods:
            lines += _pod_lines(core, pod)
        lines += _event_lines(core, namespace)
    except Exception as error:  # a report is best effort: the failure it explains matters more
        return f"(no report of {namespace}: {error!r})"
    return "\n".join(lines)


def _pod_lines(core: client.CoreV1Api, pod: Any) -> list[str]:
    name = pod.metadata.name
    status = pod.status
    lines = [f"pod {name}: {status.phase} on {pod.spec.node_name or '(unscheduled)'}"]
    for cond in status.conditions or []:
        if cond.status != "True":
            lines.append(f"  {cond.type}=False {cond.reason or ''} {cond.message or ''}".rstrip())
    for container in (status.init_container_statuses or []) + (status.container_statuses or []):
        lines.append(f"  container {container.name}: {_state(container)} restarts={container.restart_count}")
        lines += _log_lines(core, pod, container.name, previous=container.restart_count > 0)
    return lines


def _state(container: Any) -> str:
    for kind in ("waiting", "terminated"):
        found = getattr(container.state, kind, None) or (
            getattr(container.last_state, kind, None) if kind == "terminated" else None
        )
        if found is not None:
            exit_code = f" exit {found.exit_code}" if kind == "terminated" else ""
            return f"{kind} {found.reason or ''}{exit_code} {(found.message or '').strip()[:300]}".rstrip()
    return "running" + ("" if container.ready else " (not ready)")


def _log_lines(core: client.CoreV1Api, pod: Any, container: str, *, previous: bool) -> list[str]:
    try:
        text = core.read_namespaced_pod_log(
            pod.metadata.name, pod.metadata.namespace, container=container, tail_lines=LOG_LINES, previous=previous
        )
    except client.ApiException as error:
        return [f"    (no log: {error.status} {error.reason})"]
    which = "previous run" if previous else "log"
    return [f"    {which}: {line}" for line in (text or "").splitlines()[-LOG_LINES:]]


def _event_lines(core: client.CoreV1Api, namespace: str) -> list[str]:
    events = core.list_namespaced_event(namespace).items
    events.sort(key=lambda e: e.last_timestamp or e.event_time or e.metadata.creation_timestamp)
    return [
        f"event {e.type} {e.reason} {e.involved_object.kind}/{e.involved_object.name}: {(e.message or '').strip()}"
        for e in events[-EVENTS:]
    ]


def node_errors(logs: Path, lines: int = 10) -> str:
    """The last error lines of the real nodes' kubelets and containerds (klog ``E....`` lines,
    containerd's ``level=error``): why a sandbox died, a mount failed or an image was refused."""
    found = []
    for log in sorted([*logs.glob("kubelet-*.log"), *logs.glob("containerd-*.log")]):
        try:
            text = log.read_text(errors="replace").splitlines()
        except OSError:
            continue
        errors = [line for line in text if line.startswith("E") or "level=error" in line][-lines:]
        found += [f"{log.stem}: {line[:400]}" for line in errors]
    return "\n".join(found) or f"(no errors in the node logs under {logs})"
