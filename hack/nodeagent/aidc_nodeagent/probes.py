"""Startup, readiness and liveness probes: httpGet, tcpSocket and exec, with the kubelet's thresholds.

A probe's check runs from the node (the host reaches every pod address over the bridge); an exec
probe runs inside the container's namespaces through ``nsenter``. :class:`Prober` keeps one
probe's schedule and counts; the pod worker asks it each pass and acts on the result.
"""

from __future__ import annotations

import http.client
import socket
import ssl
import subprocess
from dataclasses import dataclass, field
from typing import Any


def _port(value: Any, container: dict[str, Any]) -> int:
    """A probe's port: a number, or the name of one of the container's ports."""
    if isinstance(value, int) or (isinstance(value, str) and value.isdigit()):
        return int(value)
    for port in container.get("ports") or []:
        if port.get("name") == value:
            return int(port["containerPort"])
    raise ValueError(f"probe port {value!r} names no port of the container")


def check(
    probe: dict[str, Any], container: dict[str, Any], pod_ip: str, pid: int | None, env: dict[str, str]
) -> tuple[bool, str]:
    """Run one check of ``probe``; whether it passed, and why not."""
    timeout = float(probe.get("timeoutSeconds") or 1)
    try:
        if "httpGet" in probe:
            get = probe["httpGet"]
            host, port = get.get("host") or pod_ip, _port(get["port"], container)
            if get.get("scheme", "HTTP").upper() == "HTTPS":
                connection: http.client.HTTPConnection = http.client.HTTPSConnection(
                    host, port, timeout=timeout, context=ssl._create_unverified_context()
                )
            else:
                connection = http.client.HTTPConnection(host, port, timeout=timeout)
            headers = {h["name"]: h["value"] for h in get.get("httpHeaders") or []}
            headers.setdefault("User-Agent", "kube-probe/aidc-nodeagent")
            try:
                connection.request("GET", get.get("path") or "/", headers=headers)
                status = connection.getresponse().status
            finally:
                connection.close()
            return 200 <= status < 400, f"HTTP probe failed with statuscode: {status}"
        if "tcpSocket" in probe:
            tcp = probe["tcpSocket"]
            with socket.create_connection((tcp.get("host") or pod_ip, _port(tcp["port"], container)), timeout=timeout):
                return True, ""
        if "exec" in probe:
            if pid is None:
                return False, "container not running"
            argv = ["nsenter", "--target", str(pid), "--mount", "--uts", "--net", "--", *probe["exec"]["command"]]
            result = subprocess.run(argv, env=env, capture_output=True, timeout=timeout, check=False)
            output = (result.stdout + result.stderr).decode(errors="replace").strip()
            return result.returncode == 0, output or f"command exited {result.returncode}"
        return (
            False,
            f"unsupported probe handler {sorted(k for k in probe if k.endswith(('Get', 'Socket', 'exec', 'grpc')))}",
        )
    except (OSError, ValueError, http.client.HTTPException, subprocess.TimeoutExpired) as error:
        return False, f"{type(error).__name__}: {error}"


@dataclass
class Prober:
    """One probe of one container attempt: when it is due, and its consecutive results."""

    kind: str  # startup, readiness, liveness
    spec: dict[str, Any]
    started: float  # monotonic time the container started
    successes: int = 0
    failures: int = 0
    passed: bool | None = None  # None until the thresholds decide
    last_message: str = ""
    _next: float = field(default=0.0)

    def __post_init__(self) -> None:
        self._next = self.started + float(self.spec.get("initialDelaySeconds") or 0)

    @property
    def period(self) -> float:
        return float(self.spec.get("periodSeconds") or 10)

    def due(self, now: float) -> bool:
        return now >= self._next

    def record(self, ok: bool, message: str, now: float) -> bool | None:
        """Count one result; the probe's verdict once a threshold is crossed (else the previous one)."""
        self._next = now + self.period
        if ok:
            self.successes, self.failures = self.successes + 1, 0
            if self.successes >= int(self.spec.get("successThreshold") or 1):
                self.passed = True
        else:
            self.failures, self.successes = self.failures + 1, 0
            self.last_message = message
            if self.failures >= int(self.spec.get("failureThreshold") or 3):
                self.passed = False
        return self.passed


def probers(container: dict[str, Any], started: float) -> dict[str, Prober]:
    """The container's probes, by kind."""
    kinds = {"startup": "startupProbe", "readiness": "readinessProbe", "liveness": "livenessProbe"}
    return {kind: Prober(kind, container[key], started) for kind, key in kinds.items() if container.get(key)}
