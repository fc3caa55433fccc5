"""A real node leaves the machine as it found it: after `down`, and after `down` that follows a crash.

The bed is started with the CLI (``python -m aidc_testbed up``), as a user would, so nothing of this
test process holds it; a pod runs on the real node; then the bed is stopped, cleanly or after every
component was killed with SIGKILL (containers and their shims outlive containerd then). What the
machine shows before and after must be the same: processes, mounts, links, routes, netfilter rules,
the sysctls the kubelet rewrites, cgroups and the folders the kubelet and containerd make.

Marked ``host``: it runs in a pytest run of its own (``make test`` does that), because two sets of
real nodes cannot share one machine's network namespace.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.host
SYSCTLS = ("vm.overcommit_memory", "kernel.panic", "kernel.panic_on_oops", "net.ipv4.ip_forward")
FOLDERS = ("/var/lib/kubelet", "/var/log/containers", "/var/log/pods", "/run/containerd", "/var/run/netns",
           "/etc/cni", "/opt/cni", "/opt/containerd", "/var/run/nri")  # fmt: skip


def _out(*argv: str) -> str:
    return subprocess.run(argv, capture_output=True, text=True, check=False).stdout


def _processes(tools: Path) -> list[str]:
    """Processes running any binary of the bed (control plane, node, shims) or a container of it."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv0 = (entry / "cmdline").read_bytes().split(b"\0", 1)[0].decode()
            cgroup = (entry / "cgroup").read_text()
        except OSError:
            continue
        if argv0.startswith(str(tools)) or "/aidc-real-" in cgroup:
            found.append(f"{entry.name} {argv0}")
    return sorted(found)


def machine(tools: Path) -> dict[str, Any]:
    """What a real node could change, as the machine shows it now."""
    controllers = sorted(p for p in Path("/sys/fs/cgroup").iterdir() if p.is_dir())
    return {
        "processes": _processes(tools),
        "mounts": sorted(line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()),
        "links": sorted(line.split(":")[1].strip() for line in _out("ip", "-o", "link").splitlines()),
        "addresses": _out("ip", "-o", "addr").splitlines(),
        "routes": _out("ip", "route").splitlines(),
        "iptables": [
            _out(binary, "-t", table, "-S")
            for binary in ("iptables", "ip6tables")
            for table in ("filter", "nat", "mangle", "raw")
        ],
        "nftables": _out("nft", "list", "ruleset"),
        "sysctls": {name: Path("/proc/sys", name.replace(".", "/")).read_text().strip() for name in SYSCTLS},
        "cgroups": sorted(f"{c.name}/{d.name}" for c in controllers for d in c.iterdir() if d.is_dir()),
        "folders": {folder: Path(folder).exists() for folder in FOLDERS},
    }


def bed_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT / "hack" / "testbed")}
    return subprocess.run([sys.executable, "-m", "aidc_testbed", *args], env=env, capture_output=True, text=True,
                          timeout=600, check=False)  # fmt: skip


def kubectl(kubeconfig: Path, *args: str, stdin: str | None = None) -> str:
    done = subprocess.run(["kubectl", "--kubeconfig", str(kubeconfig), *args], input=stdin, capture_output=True,
                          text=True, timeout=180, check=True)  # fmt: skip
    return done.stdout


@pytest.fixture
def tools() -> Path:
    if os.geteuid() != 0:
        pytest.skip("real nodes need root")
    subprocess.run([str(REPO_ROOT / "hack" / "build-tools.sh")], check=True)
    subprocess.run([str(REPO_ROOT / "hack" / "images" / "build-images.sh")], check=True)
    return Path(os.environ.get("AIDC_TOOLS", REPO_ROOT / ".cache" / "tools" / "bin"))


def _up_with_a_pod(folder: Path) -> Path:
    started = bed_cli("up", "--dir", str(folder), "--nodes", "1", "--real-nodes", "1", "--volumes", "2")
    assert started.returncode == 0, started.stderr
    kubeconfig = folder / "kubeconfig"
    listing = json.loads((REPO_ROOT / ".cache" / "images" / "images.json").read_text())
    pause = next(i["ref"] for i in listing if "/pause:" in i["ref"])  # it sleeps until stopped
    pod = {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "sleeper", "namespace": "default"},
        "spec": {"nodeSelector": {"aidc.io/real-node": "true"},
                 "tolerations": [{"key": "aidc.io/real-node", "operator": "Exists"}],
                 "containers": [{"name": "sleep", "image": pause, "imagePullPolicy": "Never",
                                 "resources": {"limits": {"memory": "32Mi"}}}]},
    }  # fmt: skip
    kubectl(kubeconfig, "apply", "-f", "-", stdin=json.dumps(pod))
    kubectl(kubeconfig, "wait", "--for=condition=Ready", "pod/sleeper", "--timeout=120s")
    return kubeconfig


def _kill_everything_of(folder: Path) -> None:
    state = json.loads((folder / "state.json").read_text())
    for recorded in state["processes"]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(recorded["pid"], signal.SIGKILL)
    time.sleep(1)


def _differences(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    return {key: {"before": before[key], "after": after[key]} for key in before if before[key] != after[key]}


@pytest.mark.parametrize("crash", [False, True], ids=["down", "down-after-a-crash"])
def test_the_machine_is_left_as_it_was_found(tools: Path, tmp_path: Path, crash: bool) -> None:
    before = machine(tools)
    # short: containerd's socket (and its .ttrpc twin) must fit a unix socket path (108 bytes)
    folder = Path(tempfile.mkdtemp(prefix="aidc-host-", dir="/tmp"))
    try:
        _up_with_a_pod(folder)
        assert machine(tools) != before  # the bed did change the machine, so the check below can fail
        if crash:
            _kill_everything_of(folder)
            assert any("/aidc-real-" in line or "shim" in line for line in _processes(tools)), "nothing outlived"
    finally:
        stopped = bed_cli("down", "--dir", str(folder))
    assert stopped.returncode == 0, stopped.stderr
    assert _differences(before, machine(tools)) == {}
