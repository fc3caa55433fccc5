"""A real node lost and back: its kubelet killed, as a crash or a cut cable leaves a node, then started again.

With its kubelet gone, a node's containers keep running under containerd, as on a node cut off from the
control plane: nothing reports them, nothing stops them, and a pod deleted meanwhile stays Terminating.
The node lifecycle controller would mark the silent node unreachable after its grace period (50 s, which
the bed keeps: kwok's heartbeats come up to 45 s apart); ``fail`` writes the same at once
(:func:`nodes.mark_unreachable`, as for a kwok node), so the taints, the eviction and the Terminating
pods follow from the cluster's own controllers within seconds. ``recover`` starts the kubelet again with
its command line and returns once the node is Ready and untainted; the kubelet then stops the containers
of pods that are no longer bound to it.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable

from kubernetes import client

from aidc_testbed import health, nodes, process, realnode_lifecycle
from aidc_testbed.config import TestbedConfig
from aidc_testbed.layout import Layout
from aidc_testbed.realnodes import RealNode
from aidc_testbed.state import TestbedState

# taints the node lifecycle controller puts on a node that stopped reporting
SILENT_NODE_TAINTS = frozenset({"node.kubernetes.io/unreachable", "node.kubernetes.io/not-ready"})


def kubelet_name(node: str) -> str:
    """The kubelet's name in the state file."""
    return f"kubelet-{node}"


def fail(api: client.ApiClient, state: TestbedState, layout: Layout, name: str) -> None:
    """SIGKILL the kubelet of real node ``name`` (no goodbye, as a lost node) and mark the node unreachable."""
    kubelet = next((p for p in state.processes if p.name == kubelet_name(name)), None)
    if kubelet is None or not process.is_running(kubelet):
        raise ValueError(f"the kubelet of {name} does not run")
    os.kill(kubelet.pid, signal.SIGKILL)
    process.stop([kubelet], grace_seconds=0)  # waits until it is gone and reaps it
    state.processes.remove(kubelet)
    state.save(layout.state_file)
    nodes.mark_unreachable(api, name)


def recover(
    api: client.ApiClient, node: RealNode, config: TestbedConfig, spawn: realnode_lifecycle.Spawn,
    abort: Callable[[], str | None],
) -> None:  # fmt: skip
    """Start the kubelet of ``node`` again; returns once the node is Ready and the controller untainted it."""
    realnode_lifecycle.start_kubelet(node, config, spawn)
    core = client.CoreV1Api(api)

    def back() -> bool | None:
        found = core.read_node(node.name)
        taints = {t.key for t in found.spec.taints or []}
        return True if nodes.is_ready(found) and not taints & SILENT_NODE_TAINTS else None

    health.poll(back, timeout=config.start_timeout_seconds, what=f"{node.name} Ready again", abort=abort,
                interval=0.25)  # fmt: skip
