"""The progress heartbeat: rank 0 tells the operator how training goes, through the API server.

Rank 0 writes a small JSON document into the ``aidc.io/progress`` annotation of its own pod, as
a JSON merge patch that touches nothing else. Going through the API server means ``kubectl``
sees it, it survives operator restarts, and the pod needs no network path to the operator; an
admission policy limits the pod's token to exactly this write.

``build_heartbeat`` is pure (what to say); ``HeartbeatSender`` does one HTTP PATCH with the
pod's own service-account token (how to say it); ``HeartbeatReporter`` sends from a background
thread so a slow API server never stalls a training step. A missing or unreachable API server
is logged once and otherwise ignored: progress reports must never fail a training run.
"""

from __future__ import annotations

import datetime
import json
import logging
import math
import ssl
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from aidc_trainer import contract
from aidc_trainer.environment import RunEnvironment
from aidc_trainer.logs import fields

_log = logging.getLogger(__name__)


def _finite(value: float | None, digits: int = 6) -> float | None:
    """JSON has no NaN or infinity; a diverged loss is reported as null."""
    if value is None or not math.isfinite(value):
        return None
    return round(float(value), digits)


def rfc3339(moment: datetime.datetime) -> str:
    """``2025-01-02T03:04:05Z``: the timestamp form Kubernetes uses in status."""
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def build_heartbeat(
    *,
    step: int,
    total_steps: int,
    epoch: int,
    loss: float | None,
    metrics: Mapping[str, float],
    samples_per_second: float | None,
    eta_seconds: float | None,
    checkpoint_path: str | None,
    checkpoint_step: int | None,
    model_path: str | None,
    now: datetime.datetime,
    model_best_path: str | None = None,
    model_bytes: int | None = None,
) -> dict[str, Any]:
    """The heartbeat document (keys exactly ``contract.HEARTBEAT_FIELDS``).

    Paths are relative to the job's checkpoint directory; the operator prefixes the claim.
    """
    heartbeat = {
        "step": step,
        "totalSteps": total_steps,
        "epoch": epoch,
        "loss": _finite(loss),
        "metrics": {name: _finite(value) for name, value in sorted(metrics.items())},
        "samplesPerSecond": _finite(samples_per_second, 2),
        "etaSeconds": None
        if eta_seconds is None or not math.isfinite(eta_seconds)
        else max(0, round(eta_seconds)),
        "checkpoint": (
            None if checkpoint_path is None else {"path": checkpoint_path, "step": checkpoint_step}
        ),
        "model": _model(model_path, model_best_path, model_bytes),
        "time": rfc3339(now),
    }
    assert tuple(heartbeat) == contract.HEARTBEAT_FIELDS
    return heartbeat


def _model(path: str | None, best_path: str | None, size: int | None) -> dict[str, Any] | None:
    """Where the exports are and how big the final one is (the operator sizes start-up probes by it)."""
    if path is None:
        return None
    model: dict[str, Any] = {"path": path}
    if best_path is not None:
        model["bestPath"] = best_path
    if size is not None:
        model["bytes"] = size
    return model


def progress_patch(heartbeat: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON merge patch that sets only the progress annotation of the pod."""
    encoded = json.dumps(heartbeat, separators=(",", ":"), sort_keys=False)
    return {"metadata": {"annotations": {contract.ANNOTATION_PROGRESS: encoded}}}


class HeartbeatSender:
    """PATCHes the progress annotation of one pod with that pod's service-account token."""

    def __init__(
        self,
        api_server: str,
        namespace: str,
        pod_name: str,
        serviceaccount_dir: Path,
        timeout_seconds: float = 5.0,
    ) -> None:
        quote = urllib.parse.quote
        self._url = f"{api_server}/api/v1/namespaces/{quote(namespace)}/pods/{quote(pod_name)}"
        self._serviceaccount_dir = serviceaccount_dir
        self._timeout = timeout_seconds
        self._context: ssl.SSLContext | None = None
        if api_server.startswith("https://"):
            ca = serviceaccount_dir / "ca.crt"
            self._context = ssl.create_default_context(cafile=str(ca) if ca.is_file() else None)
        self._failed_before = False

    @classmethod
    def from_environment(cls, env: RunEnvironment) -> HeartbeatSender | None:
        """A sender for this pod, or None (logged) when there is no API server or pod identity."""
        namespace = env.pod_namespace
        if namespace is None:
            try:
                namespace = (env.serviceaccount_dir / "namespace").read_text().strip() or None
            except OSError:
                namespace = None
        if env.api_server is None or env.pod_name is None or namespace is None:
            _log.info(
                "progress heartbeat goes to the log only: no API server or pod identity",
                extra=fields(apiServer=env.api_server, pod=env.pod_name, namespace=namespace),
            )
            return None
        return cls(env.api_server, namespace, env.pod_name, env.serviceaccount_dir)

    def _token(self) -> str | None:
        # read on every send: projected service-account tokens are rotated by the kubelet
        try:
            return (self._serviceaccount_dir / "token").read_text().strip() or None
        except OSError:
            return None

    def send(self, heartbeat: Mapping[str, Any]) -> bool:
        """Send one heartbeat; False (logged once, then at debug level) when it did not land."""
        body = json.dumps(progress_patch(heartbeat)).encode()
        request = urllib.request.Request(self._url, data=body, method="PATCH")
        request.add_header("Content-Type", "application/merge-patch+json")
        request.add_header("Accept", "application/json")
        token = self._token()
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, timeout=self._timeout, context=self._context) as response:
                response.read()
        except (urllib.error.URLError, OSError, ValueError) as error:
            detail = f"{type(error).__name__}: {error}"
            if isinstance(error, urllib.error.HTTPError):
                detail = f"HTTP {error.code}: {error.read()[:200].decode(errors='replace')}"
            level = logging.DEBUG if self._failed_before else logging.WARNING
            _log.log(
                level,
                "progress heartbeat not delivered; training continues",
                extra=fields(url=self._url, error=detail),
            )
            self._failed_before = True
            return False
        return True


class HeartbeatReporter:
    """Delivers heartbeats from a background thread, newest first: a stale one is never queued.

    ``offer`` never blocks the training loop; ``close`` sends the final heartbeat synchronously
    so the operator sees the finished state before the pod exits.
    """

    def __init__(self, sender: HeartbeatSender | None) -> None:
        self._sender = sender
        self._lock = threading.Condition()
        self._next: Mapping[str, Any] | None = None
        self._closed = False
        self.last: Mapping[str, Any] | None = None
        self._thread: threading.Thread | None = None
        if sender is not None:
            self._thread = threading.Thread(target=self._run, name="aidc-heartbeat", daemon=True)
            self._thread.start()

    def offer(self, heartbeat: Mapping[str, Any]) -> None:
        """Queue ``heartbeat`` for sending, replacing any not yet sent."""
        self.last = heartbeat
        _log.info("progress", extra=fields(progress=dict(heartbeat)))
        with self._lock:
            self._next = heartbeat
            self._lock.notify()

    def close(self, final: Mapping[str, Any] | None = None) -> None:
        """Stop the thread, then send ``final`` (if any) and wait for it."""
        with self._lock:
            self._closed = True
            self._next = None
            self._lock.notify()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if final is not None:
            self.last = final
            _log.info("progress", extra=fields(progress=dict(final)))
            if self._sender is not None:
                self._sender.send(final)

    def _run(self) -> None:
        assert self._sender is not None
        while True:
            with self._lock:
                while self._next is None and not self._closed:
                    self._lock.wait()
                if self._closed:
                    return
                heartbeat, self._next = self._next, None
            if heartbeat is not None:
                self._sender.send(heartbeat)
