"""One pod's life on this node, from its sandbox to its deletion, in a thread of its own.

Each pass (a few times a second, or at once when the pod changes) the worker looks at the pod
and its containers and moves them one step: make the sandbox and volumes, run the init
containers in order, start the containers, probe them, restart the ones that ended according to
``restartPolicy`` with back-off, and write the resulting status when it changed. A pod being
deleted gets SIGTERM, its grace period, SIGKILL, a last status, and is then removed from the API
(grace 0), as a kubelet finalises it.
"""

from __future__ import annotations

import datetime
import logging
import shutil
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aidc_nodeagent import environment, podstatus, probes
from aidc_nodeagent.config import AgentConfig
from aidc_nodeagent.kube import ApiError, Kube, quote
from aidc_nodeagent.layout import PodDir
from aidc_nodeagent.network import NetworkError
from aidc_nodeagent.podstatus import ContainerView, Terminated
from aidc_nodeagent.runtime import Attempt, Exit
from aidc_nodeagent.sandbox import PodRecord, Sandboxes
from aidc_nodeagent.volumes import PodVolumes, VolumeError

_log = logging.getLogger(__name__)

PASS_SECONDS = 0.25
RETRY_SECONDS = 2.0
DEFAULT_TERMINATION_PATH = "/dev/termination-log"
TERMINATION_MESSAGE_BYTES = 4096
FALLBACK_LOG_LINES = 80
FALLBACK_LOG_BYTES = 2048
# a container that ran this long before it ended restarts without back-off (a kubelet's rule)
BACKOFF_RESET_SECONDS = 600.0
ENV_TERMINATION_LOG = "AIDC_TERMINATION_LOG"  # the trainer writes its termination message there


def now_rfc3339() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Node:
    """What every worker of one agent shares."""

    kube: Kube
    config: AgentConfig
    sandboxes: Sandboxes
    host_ip: str
    allocatable: dict[str, str]


@dataclass
class Slot:
    """One container of the pod: its spec, the current attempt, probes and back-off."""

    spec: dict[str, Any]
    view: ContainerView
    init: bool
    attempt: Attempt | None = None
    next_attempt: int = 0
    restart_at: float = 0.0
    crashes: int = 0
    running_since: float = 0.0
    probers: dict[str, probes.Prober] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return str(self.spec["name"])

    @property
    def succeeded(self) -> bool:
        return self.view.terminated is not None and self.view.terminated.exit_code == 0


class PodWorker(threading.Thread):
    """Runs one pod."""

    def __init__(self, node: Node, pod: dict[str, Any], pod_dir: PodDir, record: PodRecord | None = None) -> None:
        meta = pod["metadata"]
        super().__init__(name=f"pod-{meta['namespace']}/{meta['name']}", daemon=True)
        self.node = node
        self.uid: str = meta["uid"]
        self.dir = pod_dir
        self._pod = pod
        self._gone = False
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._record = record
        self._volumes: PodVolumes | None = None
        self._retry_at = 0.0
        self._published: dict[str, Any] | None = None
        self._previous_status: dict[str, Any] = pod.get("status") or {}
        self._publish_at = 0.0
        self._warned: set[str] = set()
        self.finished = threading.Event()  # the pod is deleted and its sandbox gone
        spec = pod["spec"]
        self._init = [self._slot(c, True) for c in spec.get("initContainers") or []]
        self._main = [self._slot(c, False) for c in spec.get("containers") or []]
        # a pod that ended before this agent knew it (its folder is gone): nothing to run, only to finish
        self._ended = record is None and (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")
        if record is not None:
            self._adopt(record)

    # -- from the watch ----------------------------------------------------------------------------

    def update(self, pod: dict[str, Any]) -> None:
        """The newest version of the pod."""
        with self._lock:
            self._pod = pod
        self._wake.set()

    def deleted(self) -> None:
        """The pod is gone from the API (deleted with grace 0, or its namespace went)."""
        self._gone = True
        self._wake.set()

    # -- the loop --------------------------------------------------------------------------------------

    def run(self) -> None:
        while True:
            self._wake.wait(PASS_SECONDS)
            self._wake.clear()
            with self._lock:
                pod = self._pod
            try:
                if self._gone or pod["metadata"].get("deletionTimestamp"):
                    self._terminate(pod)
                    self.finished.set()
                    return
                if not self._ended:
                    self._step(pod)
                    self._publish(pod)
            except Exception:
                _log.exception("pod %s: pass failed; retrying", self.pod_ref)
                time.sleep(RETRY_SECONDS)

    @property
    def pod_ref(self) -> str:
        """``namespace/name``, for the log."""
        meta = self._pod["metadata"]
        return f"{meta['namespace']}/{meta['name']}"

    @property
    def _slots(self) -> list[Slot]:
        return self._init + self._main

    @property
    def phase(self) -> str:
        return podstatus.phase(
            self._pod["spec"].get("restartPolicy", "Always"), [s.view for s in self._init], [s.view for s in self._main]
        )

    def _slot(self, container: dict[str, Any], init: bool) -> Slot:
        return Slot(
            spec=container, view=ContainerView(name=container["name"], image=container.get("image", "")), init=init
        )

    # -- one pass ------------------------------------------------------------------------------------

    def _step(self, pod: dict[str, Any]) -> None:
        if self._record is not None and self._record.removed:
            return  # ended: nothing runs, the status stays until the pod is deleted
        for slot in self._slots:
            self._observe(slot)
        if self.phase in ("Succeeded", "Failed"):
            self._remove_sandbox()
            return
        now = time.monotonic()
        if now < self._retry_at:
            return
        if not self._ready_to_run(pod):
            self._retry_at = now + RETRY_SECONDS
            return
        restart_policy = pod["spec"].get("restartPolicy", "Always")
        for slot in self._init:
            if not slot.succeeded:
                self._advance(pod, slot, restart_policy)
                return  # one init container at a time, in order
        for slot in self._main:
            self._advance(pod, slot, restart_policy)

    def _advance(self, pod: dict[str, Any], slot: Slot, restart_policy: str) -> None:
        """One step of one container: start it, probe it, or decide what its exit means."""
        if slot.attempt is None:
            if time.monotonic() >= slot.restart_at:
                self._start(pod, slot)
        elif slot.view.terminated is None:
            if slot.view.running:
                self._probe(pod, slot)
        elif self._restarts(pod, slot, restart_policy) and time.monotonic() >= slot.restart_at:
            self._start(pod, slot)

    def _ready_to_run(self, pod: dict[str, Any]) -> bool:
        """Sandbox and volumes in place; otherwise the containers wait with the reason."""
        try:
            if self._record is None:
                self._record = self.node.sandboxes.create(pod, self.dir, now_rfc3339())
                self.node.kube.event(pod, "SandboxCreated", f"pod address {self._record.address}")
            if self._volumes is None:
                volumes = PodVolumes(self.node.kube, pod, self.dir, self.node.host_ip, self.node.allocatable)
                volumes.prepare(self._record.address)
                self._volumes = volumes
            else:
                self._volumes.refresh_tokens()
        except (VolumeError, NetworkError, ApiError, OSError) as error:
            reason = "FailedMount" if isinstance(error, VolumeError) else "FailedCreatePodSandBox"
            self._wait_all("ContainerCreating", str(error))
            self._warn_once(pod, reason, str(error))
            return False
        return True

    def _wait_all(self, reason: str, message: str | None) -> None:
        for slot in self._slots:
            if slot.attempt is None:
                slot.view.waiting_reason, slot.view.waiting_message = reason, message

    def _warn_once(self, pod: dict[str, Any], reason: str, message: str) -> None:
        if message not in self._warned:
            self._warned.add(message)
            self.node.kube.event(pod, reason, message, kind="Warning")

    # -- containers ------------------------------------------------------------------------------------

    def _observe(self, slot: Slot) -> None:
        """Bring the slot's view up to date with its attempt's files."""
        attempt = slot.attempt
        if attempt is None or slot.view.terminated is not None:
            return
        ended = attempt.exit()
        if ended is None:
            process = attempt.process
            if process is not None and slot.view.running_since is None:
                slot.view.running_since = process.get("startedAt") or now_rfc3339()
                slot.view.started = "startup" not in slot.probers
                slot.view.ready = slot.view.started and "readiness" not in slot.probers
                slot.running_since = time.monotonic()
            return
        slot.view.terminated = self._terminated(slot, attempt, ended)
        slot.view.running_since = slot.view.running_since or ended.started_at
        slot.view.ready = False
        _log.info("pod %s: container %s exited %s", self.pod_ref, slot.name, ended.code)

    def _terminated(self, slot: Slot, attempt: Attempt, ended: Exit) -> Terminated:
        if ended.start_error:
            reason, message = "StartError", ended.start_error
        elif ended.lost:
            reason, message = "ContainerStatusUnknown", "The container could not be located when the pod was terminated"
        else:
            reason = "Completed" if ended.code == 0 else "Error"
            message = self._termination_message(slot, attempt, ended.code)
        return Terminated(
            exit_code=ended.code,
            reason=reason,
            started_at=ended.started_at,
            finished_at=ended.finished_at or now_rfc3339(),
            container_id=slot.view.container_id or "",
            message=message or None,
            signal=ended.signal,
        )

    def _termination_message(self, slot: Slot, attempt: Attempt, code: int) -> str:
        files = attempt.files
        try:
            message = (
                files.termination(attempt.attempt).read_bytes()[:TERMINATION_MESSAGE_BYTES].decode(errors="replace")
            )
        except OSError:
            message = ""
        if not message.strip() and code != 0 and slot.spec.get("terminationMessagePolicy") == "FallbackToLogsOnError":
            message = log_tail(files.log(attempt.attempt), FALLBACK_LOG_LINES, FALLBACK_LOG_BYTES)
        return message

    def _restarts(self, pod: dict[str, Any], slot: Slot, restart_policy: str) -> bool:
        """Whether the ended attempt runs again; if so, schedule it with back-off."""
        ended = slot.view.terminated
        assert ended is not None
        if slot.init:
            again = ended.exit_code != 0 and restart_policy != "Never"
        else:
            again = restart_policy == "Always" or (restart_policy == "OnFailure" and ended.exit_code != 0)
        if not again:
            return False
        ran_for = time.monotonic() - slot.running_since if slot.running_since else 0.0
        slot.crashes = 0 if ran_for >= BACKOFF_RESET_SECONDS else slot.crashes + 1
        config = self.node.config
        delay = min(config.restart_backoff_seconds * 2 ** (slot.crashes - 1), config.restart_backoff_cap_seconds)
        delay = delay if slot.crashes else 0.0
        slot.restart_at = time.monotonic() + delay
        slot.attempt = None
        slot.view.last_terminated, slot.view.terminated = ended, None
        slot.view.running_since = None
        slot.view.waiting_reason = "CrashLoopBackOff"
        slot.view.waiting_message = (
            f"back-off {delay:.0f}s restarting failed container={slot.name} pod={pod['metadata']['name']}"
        )
        if delay:
            self.node.kube.event(pod, "BackOff", "Back-off restarting failed container", kind="Warning")
        return True

    def _start(self, pod: dict[str, Any], slot: Slot) -> None:
        record, volumes = self._record, self._volumes
        assert record is not None and volumes is not None
        config = self.node.config
        n = slot.next_attempt
        files = self.dir.container(slot.name)
        files.path.mkdir(parents=True, exist_ok=True)
        try:
            env = environment.container_environment(
                pod,
                slot.spec,
                self._base_environment(record, files.termination(n)),
                self._lookup,
                record.address,
                self.node.host_ip,
                self.node.allocatable,
            )
            argv = environment.command_line(slot.spec, env, config.python)
            mounts = volumes.mounts(slot.spec, env)
            environment.check_mounts([m["target"] for m in mounts], config.python)
        except (environment.ConfigError, VolumeError, ApiError) as error:
            slot.view.waiting_reason, slot.view.waiting_message = "CreateContainerConfigError", str(error)
            self._warn_once(pod, "Failed", f"Error: {error}")
            self._retry_at = time.monotonic() + RETRY_SECONDS
            return
        files.termination(n).touch()
        mounts.append({"source": str(self.dir.hosts), "target": "/etc/hosts", "readOnly": False, "file": True})
        mounts.append(
            {"source": str(self.dir.resolv_conf), "target": "/etc/resolv.conf", "readOnly": True, "file": True}
        )
        # the container's own folder stays writable under a read-only root: the shim records the
        # process there and the container writes its termination message (a non-default
        # terminationMessagePath is that file too)
        mounts.append({"source": str(files.path), "target": str(files.path)})
        path = slot.spec.get("terminationMessagePath") or DEFAULT_TERMINATION_PATH
        if path != DEFAULT_TERMINATION_PATH:
            mounts.append({"source": str(files.termination(n)), "target": path, "file": True})
        mounts.sort(key=lambda m: m["target"].rstrip("/").count("/"))  # parents before children
        security = slot.spec.get("securityContext") or {}
        spec = {
            "netns": str(record.netns_path),
            "hostname": record.hostname,
            "mounts": mounts,
            "readOnlyRoot": bool(security.get("readOnlyRootFilesystem")),
            "workingDir": slot.spec.get("workingDir") or "/",
            "argv": argv,
            "env": env,
        }
        attempt = Attempt(files, n)
        attempt.start(spec)
        slot.attempt, slot.next_attempt, slot.env = attempt, n + 1, env
        slot.view.restart_count = n
        slot.view.container_id = f"aidc://{self.uid}/{slot.name}/{n}"
        slot.view.waiting_reason, slot.view.waiting_message = "ContainerCreating", None
        slot.view.terminated, slot.view.running_since = None, None
        slot.view.ready = slot.view.started = False
        slot.probers = probes.probers(slot.spec, time.monotonic())
        self.node.kube.event(pod, "Started", f"Started container {slot.name} (attempt {n})")

    def _base_environment(self, record: PodRecord, termination: Path) -> dict[str, str]:
        base = environment.base_environment(
            record.hostname, self.node.config.python, self.node.sandboxes.service_address
        )
        devices = ",".join(str(g) for g in record.gpus)
        # no GPUs assigned: none visible, as in a container without the device plugin's devices
        base |= {"CUDA_VISIBLE_DEVICES": devices, "NVIDIA_VISIBLE_DEVICES": devices or "void"}
        base[ENV_TERMINATION_LOG] = str(termination)
        return base

    def _lookup(self, kind: str, name: str) -> dict[str, Any] | None:
        namespace = self._pod["metadata"]["namespace"]
        return self.node.kube.get(f"/api/v1/namespaces/{quote(namespace)}/{kind}/{quote(name)}")

    # -- probes ------------------------------------------------------------------------------------------

    def _probe(self, pod: dict[str, Any], slot: Slot) -> None:
        record, attempt = self._record, slot.attempt
        if record is None or attempt is None or not slot.probers:
            return
        now = time.monotonic()
        process = attempt.process or {}
        pid = process.get("pid")

        def run(prober: probes.Prober) -> bool | None:
            ok, message = probes.check(prober.spec, slot.spec, record.address, pid, slot.env)
            verdict = prober.record(ok, message, now)
            if not ok:
                self.node.kube.event(
                    pod, "Unhealthy", f"{prober.kind.capitalize()} probe failed: {message}", kind="Warning"
                )
            return verdict

        startup = slot.probers.get("startup")
        if startup is not None and not slot.view.started:
            if startup.due(now) and run(startup) is not None:
                if startup.passed:
                    slot.view.started = True
                    slot.view.ready = "readiness" not in slot.probers
                else:
                    self._kill(pod, slot, "failed startup probe")
            return
        readiness = slot.probers.get("readiness")
        if readiness is not None and readiness.due(now):
            slot.view.ready = run(readiness) is True
        liveness = slot.probers.get("liveness")
        if liveness is not None and liveness.due(now) and run(liveness) is False:
            self._kill(pod, slot, "failed liveness probe")

    def _kill(self, pod: dict[str, Any], slot: Slot, why: str) -> None:
        """Stop a container a probe gave up on; it restarts (or not) by the pod's restartPolicy."""
        assert slot.attempt is not None
        self.node.kube.event(pod, "Killing", f"Container {slot.name} {why}, will be restarted")
        slot.attempt.stop(float(pod["spec"].get("terminationGracePeriodSeconds", 30)))
        self._observe(slot)

    # -- status ----------------------------------------------------------------------------------------

    def _status(self, pod: dict[str, Any]) -> dict[str, Any]:
        record = self._record
        return podstatus.pod_status(
            pod["spec"],
            self._previous_status,
            sandbox_ready=record is not None and record.netns is not None and not record.removed,
            pod_ip=record.address if record else None,
            host_ip=self.node.host_ip,
            start_time=record.start_time if record else now_rfc3339(),
            init=[s.view for s in self._init],
            containers=[s.view for s in self._main],
            now=now_rfc3339(),
        )

    def _publish(self, pod: dict[str, Any]) -> None:
        """Write the status when it changed; a failed write is retried on a later pass."""
        status = self._status(pod)
        if status == self._published or time.monotonic() < self._publish_at:
            return
        meta = pod["metadata"]
        try:
            self.node.kube.pod_status(meta["namespace"], meta["name"], status)
        except Exception as error:  # the API server may be restarting
            if isinstance(error, ApiError) and error.status == 404:
                self._published = status  # deleted meanwhile: the watch tells the rest
                return
            _log.warning("pod %s: status not written (%s); retrying", self.pod_ref, error)
            self._publish_at = time.monotonic() + 1.0
            return
        self._published = status
        self._previous_status = status

    # -- the end -----------------------------------------------------------------------------------------

    def _terminate(self, pod: dict[str, Any]) -> None:
        """SIGTERM everything, wait the grace period, SIGKILL; last status; finish the deletion."""
        meta = pod["metadata"]
        grace = meta.get("deletionGracePeriodSeconds")
        if grace is None:
            grace = pod["spec"].get("terminationGracePeriodSeconds", 30)
        running = [s for s in self._slots if s.attempt is not None and s.view.terminated is None]
        if running:
            self.node.kube.event(pod, "Killing", f"Stopping containers {', '.join(s.name for s in running)}")
        for slot in running:
            assert slot.attempt is not None
            slot.attempt.signal(signal.SIGTERM)
        deadline = time.monotonic() + float(grace)
        for slot in running:
            assert slot.attempt is not None
            slot.attempt.stop(max(deadline - time.monotonic(), 0.0))
            self._observe(slot)
        for slot in self._slots:
            if slot.attempt is None and slot.view.terminated is None:
                slot.view.waiting_reason = "PodTerminating"
        self._remove_sandbox()
        if not self._gone and self._ended:
            self.node.kube.delete_pod(meta["namespace"], meta["name"], self.uid)
        elif not self._gone:
            status = self._status(pod)
            if status["phase"] not in ("Succeeded", "Failed"):
                # a deleted pod ends: Succeeded only when every container exited 0
                views = [s.view for s in self._main]
                ok = all(v.terminated is not None and v.terminated.exit_code == 0 for v in views)
                status["phase"] = "Succeeded" if ok else "Failed"
            try:
                self.node.kube.pod_status(meta["namespace"], meta["name"], status)
            except Exception as error:
                _log.warning("pod %s: last status not written: %s", self.pod_ref, error)
            try:
                self.node.kube.delete_pod(meta["namespace"], meta["name"], self.uid)
            except Exception as error:
                _log.warning("pod %s: deletion not finished: %s", self.pod_ref, error)
                self._gone = False
                time.sleep(RETRY_SECONDS)
                raise
        _log.info("pod %s: deleted", self.pod_ref)

    def _remove_sandbox(self) -> None:
        record = self._record
        if record is None or record.removed:
            return
        self.node.sandboxes.remove(record, self.dir)
        shutil.rmtree(self.dir.volumes, ignore_errors=True)

    # -- adoption -------------------------------------------------------------------------------------------

    def _adopt(self, record: PodRecord) -> None:
        """Read back what a previous agent started: attempts, exits and restart counts from the files."""
        if not record.removed and not self.node.sandboxes.adopt(record, self.dir):
            record.removed = True  # the namespace is gone (a reboot): the containers cannot be running
        if not record.removed:
            self._volumes = PodVolumes(self.node.kube, self._pod, self.dir, self.node.host_ip, self.node.allocatable)
            try:
                self._volumes.prepare(record.address)
            except (VolumeError, ApiError, OSError) as error:
                _log.warning("pod %s: volumes not refreshed on adoption: %s", self.pod_ref, error)
        for slot in self._slots:
            files = self.dir.container(slot.name)
            attempts = files.attempts()
            if not attempts:
                continue
            last = attempts[-1]
            slot.next_attempt = last + 1
            slot.attempt = Attempt(files, last)
            slot.view.restart_count = last
            slot.view.container_id = f"aidc://{self.uid}/{slot.name}/{last}"
            slot.probers = probes.probers(slot.spec, time.monotonic())
            if last > 0:
                previous = Attempt(files, last - 1).exit()
                if previous is not None:
                    slot.view.last_terminated = self._terminated(slot, Attempt(files, last - 1), previous)
            self._observe(slot)
            if slot.view.terminated is None and record.removed:
                slot.view.terminated = self._terminated(
                    slot, slot.attempt, Exit(code=137, started_at=None, finished_at=None, lost=True)
                )
        self._record = record


def log_tail(path: Path, lines: int, limit: int) -> str:
    """The last ``lines`` lines of a log, at most ``limit`` bytes."""
    try:
        with path.open("rb") as handle:
            handle.seek(0, 2)
            size = handle.tell()
            handle.seek(max(0, size - 64 * 1024))
            data = handle.read()
    except OSError:
        return ""
    tail = b"\n".join(data.splitlines()[-lines:])
    return tail[-limit:].decode(errors="replace")
