"""The shim and the runtime on this host: real processes in real mount and UTS namespaces (needs root)."""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from aidc_nodeagent.layout import ContainerDir
from aidc_nodeagent.local import unavailable
from aidc_nodeagent.runtime import Attempt, Exit

pytestmark = pytest.mark.skipif(unavailable() is not None, reason=str(unavailable()))


def spec(argv: list[str], **extra: Any) -> dict[str, Any]:
    return {
        "netns": None,
        "hostname": "pod-0",
        "mounts": [],
        "workingDir": "/",
        "argv": argv,
        "env": {"PATH": "/usr/bin:/bin"},
        **extra,
    }


def read(path: Path) -> str:
    return path.read_text() if path.exists() else ""


def wait_exit(attempt: Attempt, timeout: float = 20) -> Exit:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ended = attempt.exit()
        if ended is not None:
            return ended
        time.sleep(0.05)
    raise AssertionError(f"attempt {attempt.attempt} still running")


def test_mounts_hostname_and_a_read_only_root_stay_inside_the_container(tmp_path: Path) -> None:
    volume, ro_volume = tmp_path / "vol", tmp_path / "ro"
    volume.mkdir()
    ro_volume.mkdir()
    (ro_volume / "model.txt").write_text("weights\n")
    target = tmp_path / "mnt" / "checkpoints"
    script = (
        f"hostname; cat {tmp_path}/mnt/model/model.txt; echo saved > {target}/ckpt; "
        f"touch {tmp_path}/mnt/model/x 2>/dev/null || echo model-ro; touch /root/aidc-x 2>/dev/null || echo root-ro"
    )
    mounts = [
        {"source": str(volume), "target": str(target)},
        {"source": str(ro_volume), "target": f"{tmp_path}/mnt/model", "readOnly": True},
        {"source": str(tmp_path / "c"), "target": str(tmp_path / "c")},
    ]
    attempt = Attempt(ContainerDir(tmp_path / "c"), 0)
    attempt.files.path.mkdir()
    attempt.start(spec(["sh", "-c", script], mounts=mounts, readOnlyRoot=True))
    ended = wait_exit(attempt)
    assert ended.code == 0, attempt.files.log(0).read_text()
    assert attempt.files.log(0).read_text().split() == ["pod-0", "weights", "model-ro", "root-ro"]
    assert (volume / "ckpt").read_text() == "saved\n"  # written through the mount
    assert not (target / "ckpt").exists()  # the host sees an empty mount point only
    assert not Path("/root/aidc-x").exists()


def test_exit_codes_signals_and_start_errors(tmp_path: Path) -> None:
    files = ContainerDir(tmp_path / "c")
    files.path.mkdir()
    failing = Attempt(files, 0)
    failing.start(spec(["sh", "-c", "echo oops; exit 3"]))
    assert wait_exit(failing).code == 3

    stubborn = Attempt(files, 1)  # ignores SIGTERM: killed after the grace period
    stubborn.start(
        spec(
            [
                sys.executable,
                "-c",
                "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                "print('up', flush=True); time.sleep(60)",
            ]
        )
    )
    deadline = time.monotonic() + 20
    while "up" not in read(files.log(1)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert stubborn.running()
    started = time.monotonic()
    ended = stubborn.stop(grace_seconds=1.0)
    assert ended is not None and ended.code == 137 and ended.signal == signal.SIGKILL
    assert 1.0 <= time.monotonic() - started < 10

    polite = Attempt(files, 2)
    polite.start(spec(["sleep", "60"]))
    ended = polite.stop(grace_seconds=10.0)
    assert ended is not None and ended.code == 128 + signal.SIGTERM

    missing = Attempt(files, 3)
    missing.start(spec(["/no/such/binary"]))
    ended = wait_exit(missing)
    assert ended.code == 128 and ended.start_error and "No such file" in ended.start_error
    assert files.attempts() == [0, 1, 2, 3]


def test_a_restarted_agent_reads_a_running_attempt_from_its_files(tmp_path: Path) -> None:
    files = ContainerDir(tmp_path / "c")
    files.path.mkdir()
    Attempt(files, 0).start(spec(["sh", "-c", "sleep 1; exit 7"]))
    adopted = Attempt(files, 0)  # no handle on the shim: what a new agent has
    deadline = time.monotonic() + 10
    while adopted.process is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert adopted.running() and adopted.exit() is None
    assert wait_exit(adopted).code == 7
