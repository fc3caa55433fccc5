"""The container shim: one per container attempt, it builds the container's view and watches it.

``python shim.py SPEC.json`` (run by file path, so it imports nothing but the standard library):

1. joins the pod's network namespace (its address, its ports);
2. takes a mount and a UTS namespace of its own, so the pod's hostname is set and the pod's
   volumes are bind-mounted at their real mount paths (``/mnt/checkpoints``, the ServiceAccount
   folder, ``/etc/hosts``) without the host or other pods seeing them; read-only mounts and
   ``readOnlyRootFilesystem`` are read-only bind remounts (the root's last, volumes stay writable);
3. forks the container's process in a session of its own (so a signal to its process group
   reaches every child, as a runtime's would), output appended to the container's log;
4. records the process id, waits, and writes the exit record (exit code, or 128 + signal).

Like containerd's shim or CRI-O's conmon it outlives the agent, so a restarted agent finds the
process running, or its exit code, in the files. Mount points missing on the host (say
``/mnt/checkpoints``) are created there as empty folders: the mount namespace hides only mounts,
not directories.
"""

from __future__ import annotations

import ctypes
import datetime
import json
import os
import signal
import socket
import sys
from pathlib import Path
from typing import Any

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWNET = 0x40000000
MS_RDONLY = 0x1
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 0x40000
EXIT_START_ERROR = 128  # what a runtime reports when the process could not be started

_libc = ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def _mount(source: str | None, target: str, flags: int) -> None:
    src = source.encode() if source is not None else None
    _check(_libc.mount(src, target.encode(), None, flags, None), f"mount {source} on {target}")


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _write_json(path: str, data: dict[str, Any]) -> None:
    scratch = f"{path}.tmp"
    with open(scratch, "w") as handle:
        json.dump(data, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(scratch, path)


def _start_ticks(pid: int) -> int:
    """The process's start time in clock ticks since boot: with the pid, it names the process uniquely."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[19])


def _ensure_mount_point(target: str, is_file: bool) -> None:
    path = Path(target)
    if is_file:
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            path.touch()
    else:
        path.mkdir(parents=True, exist_ok=True)


def enter_pod(spec: dict[str, Any]) -> None:
    """Join the pod's network, then build this container's mounts and hostname."""
    if spec.get("netns"):
        fd = os.open(spec["netns"], os.O_RDONLY)
        try:
            _check(_libc.setns(fd, CLONE_NEWNET), "setns(net)")
        finally:
            os.close(fd)
    _check(_libc.unshare(CLONE_NEWNS | CLONE_NEWUTS), "unshare(mount, uts)")
    _mount(None, "/", MS_REC | MS_PRIVATE)  # nothing below leaks to the host
    if spec.get("hostname"):
        socket.sethostname(spec["hostname"])
    mounts = spec.get("mounts", [])
    # every mount point and the working directory first: a read-only root takes no new folders
    for mount in mounts:
        _ensure_mount_point(mount["target"], mount.get("file", False))
    Path(spec.get("workingDir") or "/").mkdir(parents=True, exist_ok=True)
    for mount in mounts:
        _mount(mount["source"], mount["target"], MS_BIND | MS_REC)
        if mount.get("readOnly"):
            _mount(None, mount["target"], MS_BIND | MS_REMOUNT | MS_RDONLY)
    if spec.get("readOnlyRoot"):
        # last: a bind mount copies its source's read-only flag, so the volumes are bound first.
        # Only this namespace's copy of the root mount turns read-only; the host's stays writable.
        _mount(None, "/", MS_BIND | MS_REMOUNT | MS_RDONLY)


def _exec(spec: dict[str, Any], log_fd: int) -> None:
    """In the child: become a session leader, wire the log, and exec the container's process."""
    os.setsid()
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, signal.SIG_DFL)
    try:
        os.chdir(spec.get("workingDir") or "/")
        os.execvpe(spec["argv"][0], spec["argv"], spec["env"])
    except OSError as error:
        _write_json(spec["startErrorFile"], {"message": f"exec {spec['argv'][0]}: {error.strerror or error}"})
        os._exit(EXIT_START_ERROR)


def main(spec_path: str) -> int:
    spec = json.loads(Path(spec_path).read_text())
    log_fd = os.open(spec["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    started = now()
    try:
        enter_pod(spec)
    except OSError as error:
        _write_json(spec["startErrorFile"], {"message": f"preparing the container: {error}"})
        _write_json(spec["exitFile"], {"exitCode": EXIT_START_ERROR, "startedAt": started, "finishedAt": now()})
        return 1
    # the shim must outlive a Ctrl-C at the agent's terminal and the agent's own SIGTERM
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)
    pid = os.fork()
    if pid == 0:
        _exec(spec, log_fd)
    os.close(log_fd)
    _write_json(spec["pidFile"], {"pid": pid, "startTicks": _start_ticks(pid), "startedAt": started})
    while True:
        try:
            _, status = os.waitpid(pid, 0)
            break
        except ChildProcessError:
            status = -1
            break
        except InterruptedError:
            continue
    if status == -1:
        code, killed_by = 137, None
    elif os.WIFSIGNALED(status):
        killed_by = os.WTERMSIG(status)
        code = 128 + killed_by
    else:
        killed_by, code = None, os.WEXITSTATUS(status)
    _write_json(spec["exitFile"], {"exitCode": code, "signal": killed_by, "startedAt": started, "finishedAt": now()})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
