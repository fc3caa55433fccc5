"""A pod's status from what its containers do: phase, conditions, container statuses.

Pure functions of the agent's view of each container, so the rules (the kubelet's own: when a
pod is Pending, Running, Succeeded or Failed under each restart policy, when it is Ready) are
table-tested without a process or a cluster.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Terminated:
    """A container attempt that ended."""

    exit_code: int
    reason: str  # Completed, Error, StartError, ContainerStatusUnknown
    started_at: str | None
    finished_at: str | None
    container_id: str
    message: str | None = None
    signal: int | None = None

    def to_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {"exitCode": self.exit_code, "reason": self.reason, "containerID": self.container_id}
        for key, value in (
            ("startedAt", self.started_at),
            ("finishedAt", self.finished_at),
            ("message", self.message),
            ("signal", self.signal),
        ):
            if value is not None:
                wire[key] = value
        return wire


@dataclass
class ContainerView:
    """What the agent knows of one container now."""

    name: str
    image: str
    restart_count: int = 0
    waiting_reason: str = "ContainerCreating"
    waiting_message: str | None = None
    running_since: str | None = None  # running when set
    terminated: Terminated | None = None  # the current attempt ended (and is not restarting yet)
    last_terminated: Terminated | None = None
    ready: bool = False
    started: bool = False  # the startup probe passed (or there is none)
    container_id: str | None = None

    @property
    def running(self) -> bool:
        return self.running_since is not None and self.terminated is None

    def to_wire(self) -> dict[str, Any]:
        if self.terminated is not None:
            state: dict[str, Any] = {"terminated": self.terminated.to_wire()}
        elif self.running_since is not None:
            state = {"running": {"startedAt": self.running_since}}
        else:
            waiting: dict[str, Any] = {"reason": self.waiting_reason}
            if self.waiting_message:
                waiting["message"] = self.waiting_message
            state = {"waiting": waiting}
        wire: dict[str, Any] = {
            "name": self.name,
            "image": self.image,
            "imageID": "",
            "ready": self.ready and self.running,
            "started": self.started and self.running,
            "restartCount": self.restart_count,
            "state": state,
            "lastState": {"terminated": self.last_terminated.to_wire()} if self.last_terminated else {},
        }
        if self.container_id:
            wire["containerID"] = self.container_id
        return wire


def initialized(init: Sequence[ContainerView]) -> bool:
    """Every init container ran to exit code 0."""
    return all(v.terminated is not None and v.terminated.exit_code == 0 for v in init)


def phase(restart_policy: str, init: Sequence[ContainerView], containers: Sequence[ContainerView]) -> str:
    """The pod phase, by the kubelet's rules."""
    for view in init:
        ended = view.terminated
        if ended is not None and ended.exit_code != 0 and restart_policy == "Never":
            return "Failed"
    if not initialized(init):
        return "Pending"
    running = waiting = stopped = succeeded = 0
    for view in containers:
        if view.running:
            running += 1
        elif view.terminated is not None:
            stopped += 1
            succeeded += view.terminated.exit_code == 0
        elif view.last_terminated is not None:
            stopped += 1  # waiting to restart: it ran before
        else:
            waiting += 1
    if waiting:
        return "Pending"
    if running:
        return "Running"
    if restart_policy == "Always":
        return "Running"
    if stopped == succeeded:
        return "Succeeded"
    if restart_policy == "Never":
        return "Failed"
    return "Running"  # OnFailure: the failed ones restart


def _condition(
    type_: str, ok: bool, previous: dict[str, dict[str, Any]], now: str, reason: str = "", message: str = ""
) -> dict[str, Any]:
    status = "True" if ok else "False"
    before = previous.get(type_)
    since = (
        before["lastTransitionTime"]
        if before and before.get("status") == status and before.get("lastTransitionTime")
        else now
    )
    # null removes a stale reason or message in the strategic merge patch
    return {
        "type": type_,
        "status": status,
        "lastProbeTime": None,
        "lastTransitionTime": since,
        "reason": None if ok else reason or None,
        "message": None if ok else message or None,
    }


def conditions(
    pod_phase: str,
    sandbox_ready: bool,
    init: Sequence[ContainerView],
    containers: Sequence[ContainerView],
    previous: Sequence[dict[str, Any]],
    now: str,
) -> list[dict[str, Any]]:
    """PodReadyToStartContainers, Initialized, ContainersReady and Ready (PodScheduled is the scheduler's)."""
    before = {c["type"]: c for c in previous}
    terminal = pod_phase in ("Succeeded", "Failed")
    unready = [v.name for v in containers if not (v.ready and v.running)]
    uninitialized = [v.name for v in init if not (v.terminated and v.terminated.exit_code == 0)]
    if terminal:
        reason, message = "PodCompleted", ""
    else:
        reason, message = "ContainersNotReady", f"containers with unready status: [{' '.join(unready)}]"
    ready = not unready and not terminal
    return [
        _condition("PodReadyToStartContainers", sandbox_ready and not terminal, before, now),
        _condition(
            "Initialized",
            not uninitialized,
            before,
            now,
            "ContainersNotInitialized",
            f"containers with incomplete status: [{' '.join(uninitialized)}]",
        ),
        _condition("ContainersReady", ready, before, now, reason, message),
        _condition("Ready", ready, before, now, reason, message),
    ]


def pod_status(
    spec: dict[str, Any],
    previous: dict[str, Any],
    sandbox_ready: bool,
    pod_ip: str | None,
    host_ip: str,
    start_time: str,
    init: Sequence[ContainerView],
    containers: Sequence[ContainerView],
    now: str,
) -> dict[str, Any]:
    """The pod's whole status, ready to be merged into the API object."""
    pod_phase = phase(spec.get("restartPolicy", "Always"), init, containers)
    status: dict[str, Any] = {
        "phase": pod_phase,
        "conditions": conditions(pod_phase, sandbox_ready, init, containers, previous.get("conditions") or [], now),
        "hostIP": host_ip,
        "hostIPs": [{"ip": host_ip}],
        "startTime": start_time,
        "containerStatuses": [v.to_wire() for v in containers],
    }
    if init:
        status["initContainerStatuses"] = [v.to_wire() for v in init]
    if pod_ip:
        status["podIP"] = pod_ip
        status["podIPs"] = [{"ip": pod_ip}]
    return status
