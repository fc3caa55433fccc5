"""Starting and stopping the control plane's processes.

Each component runs in a session of its own (a Ctrl-C at the terminal reaches the test runner,
which then stops the components in order, not all at once), writes its output to a log file, and
is known afterwards by pid and by binary path, so `down` from another process never signals a
pid that has since been reused by something else.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> Callable[[], None]:
    """A pre-exec hook that has the kernel kill the child when the parent thread exits.

    So a test session killed with SIGKILL leaves no API server behind. The libc function is
    looked up before the fork, so the child does nothing but a single system call.
    """
    prctl = ctypes.CDLL(None, use_errno=True).prctl

    def hook() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)

    return hook


@dataclass(frozen=True)
class RunningProcess:
    """A started component: what the state file records about it."""

    name: str
    pid: int
    binary: str
    log: str


def spawn(
    name: str, argv: Sequence[str], log: Path, *, die_with_parent: bool, env: dict[str, str] | None = None
) -> RunningProcess:
    """Start ``argv`` in the background with stdout and stderr appended to ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        popen = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
            preexec_fn=_die_with_parent() if die_with_parent else None,  # noqa: PLW1509
        )
    _children[popen.pid] = popen
    return RunningProcess(name=name, pid=popen.pid, binary=str(argv[0]), log=str(log))


# Popen objects of the processes this interpreter started, so their exit status is collected
# (a child that is never waited for stays a zombie, and a zombie looks alive to kill(pid, 0)).
_children: dict[int, subprocess.Popen[bytes]] = {}


def _reap(pid: int) -> None:
    child = _children.get(pid)
    if child is not None:
        child.poll()  # collects the exit status, so an exited child is no zombie


def is_running(process: RunningProcess) -> bool:
    """Whether ``process`` still runs the same binary (not a zombie, not a reused pid)."""
    child = _children.get(process.pid)
    if child is not None:
        # our own child: its exit status says (between fork and exec /proc still shows this interpreter)
        return child.poll() is None
    _reap(process.pid)
    proc = Path("/proc") / str(process.pid)
    try:
        state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        argv0 = (proc / "cmdline").read_bytes().split(b"\0", 1)[0].decode()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state not in ("Z", "X") and argv0 == process.binary


def exit_code(process: RunningProcess) -> int | None:
    """The exit status of a process this interpreter started and that has ended, else None."""
    child = _children.get(process.pid)
    return None if child is None else child.poll()


def stop(processes: Sequence[RunningProcess], *, grace_seconds: float = 10.0) -> None:
    """SIGTERM every process, wait up to ``grace_seconds`` for all, then SIGKILL the rest."""
    alive = [p for p in processes if is_running(p)]
    for process in alive:
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_seconds
    while alive and time.monotonic() < deadline:
        time.sleep(0.1)
        alive = [p for p in alive if is_running(p)]
    for process in alive:
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGKILL)
    deadline = time.monotonic() + 5.0
    while alive and time.monotonic() < deadline:
        time.sleep(0.05)
        alive = [p for p in alive if is_running(p)]
    for process in processes:
        child = _children.pop(process.pid, None)
        if child is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout=1)
    if alive:
        raise RuntimeError(f"still running after SIGKILL: {[p.name for p in alive]}")
