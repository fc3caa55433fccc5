"""One test bed with real nodes per machine.

Real nodes are not contained in a bed's folder: every bed names its bridges, pod and Service ranges,
kube-proxy's chains and its nodes' cgroups the same way, so a second bed's ``up`` would take them
over and break the first one's pods (and its ``down`` would remove what the second one uses). The
bed that runs real nodes is named in :data:`CLAIM`; another bed's ``up`` refuses while that bed's
node processes still run, and takes over from one whose processes are gone (a crash, a reboot).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from aidc_testbed.layout import Layout
from aidc_testbed.process import is_running
from aidc_testbed.state import TestbedState

CLAIM = Path("/run/aidc-testbed/real-nodes")


def is_node_process(name: str) -> bool:
    """Whether a process the state file names is one of a real node's (containerd, kubelet, kube-proxy)."""
    return name.startswith(("containerd-", "kubelet-")) or name == "kube-proxy"


class MachineTakenError(RuntimeError):
    """Another bed runs real nodes on this machine."""


def claim(layout: Layout, claim_file: Path = CLAIM) -> None:
    """Name ``layout``'s bed as the one with real nodes, unless another still runs them."""
    mine = layout.root.resolve()
    with _locked(claim_file) as fd:
        owner = _other_running_owner(fd, mine)
        if owner is not None:
            raise MachineTakenError(
                f"another test bed runs real nodes on this machine ({owner}); two would share bridges, "
                f"address ranges and kube-proxy's rules. Stop it first: python -m aidc_testbed down --dir {owner}"
            )
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(mine).encode(), 0)


def other_owner(layout: Layout, claim_file: Path = CLAIM) -> Path | None:
    """The other bed whose real nodes run on this machine now, if any: ``layout``'s ``down`` must then
    leave alone what both name alike (cgroups, kube-proxy's rules, bridges)."""
    if not claim_file.exists():
        return None
    with _locked(claim_file) as fd:
        return _other_running_owner(fd, layout.root.resolve())


def release(layout: Layout, claim_file: Path = CLAIM) -> None:
    """Give the machine back, if ``layout``'s bed holds it; the claim's folder goes when empty."""
    if not claim_file.exists():
        return
    with _locked(claim_file) as fd:
        if os.pread(fd, 4096, 0).decode().strip() == str(layout.root.resolve()):
            claim_file.unlink()
    with contextlib.suppress(OSError):
        claim_file.parent.rmdir()


@contextlib.contextmanager
def _locked(claim_file: Path) -> Iterator[int]:
    claim_file.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(claim_file, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield fd
    finally:
        os.close(fd)


def _other_running_owner(fd: int, mine: Path) -> Path | None:
    owner = os.pread(fd, 4096, 0).decode().strip()
    if owner and Path(owner) != mine and _runs_real_nodes(Path(owner)):
        return Path(owner)
    return None


def _runs_real_nodes(owner: Path) -> bool:
    state = TestbedState.load(Layout(owner).state_file)
    if state is None:
        return False
    return any(is_running(p) for p in state.processes if is_node_process(p.name))
