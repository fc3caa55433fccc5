"""The container runtime: start a container attempt through the shim, see how it is, stop it.

Everything about an attempt is in its files (see :class:`aidc_nodeagent.layout.ContainerDir`):
the shim writes the process id once the process runs and the exit record once it ends, so the
same code reads a container this agent started and one a previous agent left running.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aidc_nodeagent.layout import ContainerDir, read_json, write_json

SHIM = Path(__file__).with_name("shim.py")
# a shim that died without an exit record: how long to wait for one before calling it lost
_LOST_AFTER_SECONDS = 3.0
EXIT_LOST = 137  # what a kubelet reports for a container it can no longer find


@dataclass(frozen=True)
class Exit:
    """How an attempt ended."""

    code: int
    started_at: str | None
    finished_at: str | None
    signal: int | None = None
    start_error: str | None = None  # the process never ran (command not found, mount failed)
    lost: bool = False  # no exit record: the shim was killed, or the host rebooted


def start_ticks(pid: int) -> int | None:
    """The process's start time since boot, or None when no such process runs."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def is_alive(pid: int, ticks: int | None) -> bool:
    """Whether ``pid`` is still the process that was started (a reused pid has other ticks)."""
    now = start_ticks(pid)
    return now is not None and (ticks is None or now == ticks)


class Attempt:
    """One run of one container: ``attempt`` counts its restarts."""

    def __init__(self, files: ContainerDir, attempt: int) -> None:
        self.files = files
        self.attempt = attempt
        self._shim: subprocess.Popen[bytes] | None = None
        self._gone_since: float | None = None
        # a SIGTERM was delivered: stop() must not send another (see stop)
        self._terminated = False

    # -- starting --------------------------------------------------------------------------------

    def start(self, spec: dict[str, Any]) -> None:
        """Write the shim's spec and start the shim (in a session of its own: it outlives the agent)."""
        files, n = self.files, self.attempt
        full = {
            **spec,
            "log": str(files.log(n)),
            "pidFile": str(files.pid(n)),
            "exitFile": str(files.exit(n)),
            "startErrorFile": str(files.path / f"{n}.start-error"),
        }
        write_json(files.spec(n), full)
        shim_log = (files.path / f"{n}.shim.log").open("ab")
        with shim_log:
            self._shim = subprocess.Popen(
                [sys.executable, str(SHIM), str(files.spec(n))],
                stdin=subprocess.DEVNULL,
                stdout=shim_log,
                stderr=shim_log,
                start_new_session=True,
                close_fds=True,
            )
        write_json(self._shim_record, {"pid": self._shim.pid, "startTicks": start_ticks(self._shim.pid)})

    # -- looking -----------------------------------------------------------------------------------

    @property
    def process(self) -> dict[str, Any] | None:
        """The container process's record: ``pid``, ``startTicks``, ``startedAt`` (written by the shim)."""
        record: dict[str, Any] | None = read_json(self.files.pid(self.attempt))
        return record

    def _reap(self) -> None:
        if self._shim is not None and self._shim.poll() is not None:
            self._shim = None

    def exit(self) -> Exit | None:
        """How it ended, or None while it runs (or is still starting)."""
        self._reap()
        n = self.attempt
        record = read_json(self.files.exit(n))
        start_error = read_json(self.files.path / f"{n}.start-error")
        message = start_error.get("message") if isinstance(start_error, dict) else None
        if isinstance(record, dict):
            return Exit(
                code=int(record["exitCode"]),
                started_at=record.get("startedAt"),
                finished_at=record.get("finishedAt"),
                signal=record.get("signal"),
                start_error=message,
            )
        if self._shim_alive():
            self._gone_since = None
            return None
        # the shim is gone without an exit record: wait a moment (it may be writing it), then give up
        now = time.monotonic()
        self._gone_since = self._gone_since or now
        if now - self._gone_since < _LOST_AFTER_SECONDS:
            return None
        process = self.process or {}
        if process.get("pid") and is_alive(process["pid"], process.get("startTicks")):
            return None  # the shim died but the process still runs: keep watching the process
        return Exit(code=EXIT_LOST, started_at=process.get("startedAt"), finished_at=None, lost=True)

    def _shim_alive(self) -> bool:
        if self._shim is not None:
            return True
        record = read_json(self._shim_record)
        return isinstance(record, dict) and is_alive(int(record["pid"]), record.get("startTicks"))

    @property
    def _shim_record(self) -> Path:
        return self.files.path / f"{self.attempt}.shim"

    def running(self) -> bool:
        """Whether the container's process runs now."""
        process = self.process
        if process is None or not is_alive(int(process["pid"]), process.get("startTicks")):
            return False
        return self.exit() is None

    # -- stopping -----------------------------------------------------------------------------------

    def signal(self, signum: int) -> None:
        """Signal the container's process group (the process and every child it made)."""
        process = self.process
        if not process or not is_alive(int(process["pid"]), process.get("startTicks")):
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(int(process["pid"]), signum)
            if signum == signal.SIGTERM:
                self._terminated = True

    def stop(self, grace_seconds: float) -> Exit | None:
        """SIGTERM, wait up to ``grace_seconds`` for the exit record, then SIGKILL; how it ended.

        Never a second SIGTERM: one arriving while Python finalises (its handlers already reset)
        would turn a clean exit 0 into 143.
        """
        deadline = time.monotonic() + max(grace_seconds, 0)
        self._wait_started(deadline)
        if not self._terminated:
            self.signal(signal.SIGTERM)
        while time.monotonic() < deadline:
            ended = self.exit()
            if ended is not None:
                return ended
            time.sleep(0.1)
        self.signal(signal.SIGKILL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            ended = self.exit()
            if ended is not None:
                return ended
            time.sleep(0.1)
        return self.exit()

    def _wait_started(self, deadline: float) -> None:
        """A shim still setting up has no process to signal yet: wait for its pid record."""
        while self.process is None and self._shim_alive() and time.monotonic() < deadline:
            time.sleep(0.05)
