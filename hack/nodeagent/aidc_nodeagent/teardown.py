"""``down``: stop an agent and everything it left on the host, so nothing outlives a demo or a test run.

Stopping the agent itself leaves its pods running (a kubelet's behaviour); ``down`` is the
harness's clean slate: the agent, every container process, every pod network namespace, the
bridge, and (with a kubeconfig) the Node object.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from pathlib import Path

from aidc_nodeagent import network
from aidc_nodeagent.agent import reap
from aidc_nodeagent.kube import ApiError, Kube, quote
from aidc_nodeagent.layout import Layout, read_json
from aidc_nodeagent.runtime import is_alive
from aidc_nodeagent.sandbox import PodRecord

_log = logging.getLogger(__name__)


def stop_agent(layout: Layout, grace_seconds: float = 10.0) -> None:
    """SIGTERM the agent recorded in the state directory (if it still runs), SIGKILL after the grace."""
    record = read_json(layout.agent) or {}
    pid = record.get("pid")
    if not pid or not is_alive(int(pid), None) or int(pid) == os.getpid():
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(int(pid), signal.SIGTERM)
    deadline = time.monotonic() + grace_seconds
    while is_alive(int(pid), None) and time.monotonic() < deadline:
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.kill(int(pid), signal.SIGKILL)


def down(state_dir: Path, kubeconfig: Path | None = None, *, delete_node: bool = False) -> None:
    """Stop the agent, its pods' processes and sandboxes, and remove its bridge (and Node)."""
    layout = Layout(state_dir)
    stop_agent(layout)
    for pod_dir in layout.pod_dirs():
        record = PodRecord.load(pod_dir)
        if record is not None:
            reap(pod_dir, record)
    known = read_json(layout.network)
    if known:
        network.remove_bridge(network.NodeNetwork.from_json(known))
    agent = read_json(layout.agent) or {}
    if delete_node and kubeconfig is not None and agent.get("node"):
        try:
            Kube.from_kubeconfig(kubeconfig).request("DELETE", f"/api/v1/nodes/{quote(agent['node'])}")
        except (ApiError, OSError) as error:
            _log.warning("node %s not deleted: %s", agent["node"], error)
