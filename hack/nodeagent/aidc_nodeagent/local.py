"""A local node for the test bed: the agent as its own process, for the e2e tests and ``make demo``.

``LocalNode(kubeconfig, state_dir).start()`` runs ``python -m aidc_nodeagent`` and returns once
the Node is Ready; ``stop()`` stops the agent and removes every process, namespace and the bridge
it left, and deletes the Node. Pods reach the node through :func:`placement`: the node is
tainted, so only pods that ask for it (a node selector and a toleration) land there.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from aidc_nodeagent.config import LABEL_NODE_AGENT
from aidc_nodeagent.kube import Kube, quote
from aidc_nodeagent.layout import Layout, PodDir, read_json
from aidc_nodeagent.sandbox import PodRecord

PACKAGE_ROOT = Path(__file__).resolve().parents[1]  # hack/nodeagent


def unavailable() -> str | None:
    """Why a node agent cannot run on this machine, or None when it can."""
    if sys.platform != "linux":
        return "the node agent needs Linux namespaces"
    if os.geteuid() != 0:
        return "the node agent needs root (network and mount namespaces for its pods)"
    missing = [tool for tool in ("ip", "nsenter") if shutil.which(tool) is None]
    if missing:
        return f"the node agent needs {' and '.join(missing)}"
    return None


def placement() -> dict[str, Any]:
    """``nodeSelector`` and ``tolerations`` that put a pod on an agent's node (TrainingJob and
    InferenceService take them as ``placement``)."""
    return {
        "nodeSelector": {LABEL_NODE_AGENT: "true"},
        "tolerations": [{"key": LABEL_NODE_AGENT, "operator": "Exists", "effect": "NoSchedule"}],
    }


def _die_with_parent() -> Any:
    prctl = ctypes.CDLL(None, use_errno=True).prctl

    def hook() -> None:
        prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG

    return hook


class LocalNode:
    """One agent process and its node."""

    def __init__(
        self,
        kubeconfig: Path,
        state_dir: Path,
        *,
        node_name: str = "local-0",
        cpu: str = "16",
        gpus: int = 0,
        extra_args: tuple[str, ...] = (),
        die_with_parent: bool = False,
        start_timeout: float = 60.0,
    ) -> None:
        self.kubeconfig = Path(kubeconfig)
        self.state_dir = Path(state_dir).absolute()
        self.node_name = node_name
        self.layout = Layout(self.state_dir)
        self.log = self.state_dir / "agent.log"
        self._args = ["--cpu", cpu, "--gpus", str(gpus), *extra_args]
        self._die_with_parent = die_with_parent
        self._timeout = start_timeout
        self._process: subprocess.Popen[bytes] | None = None
        self.kube = Kube.from_kubeconfig(self.kubeconfig)

    # -- the agent process -------------------------------------------------------------------------

    def start(self) -> LocalNode:
        """Start the agent and wait until its Node is Ready (raises with the agent's log if it is not)."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        argv = [
            sys.executable,
            "-m",
            "aidc_nodeagent",
            "run",
            "--kubeconfig",
            str(self.kubeconfig),
            "--state-dir",
            str(self.state_dir),
            "--node-name",
            self.node_name,
            *self._args,
        ]
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(PACKAGE_ROOT), os.environ.get("PYTHONPATH")])),
        }
        with self.log.open("ab") as log:
            self._process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
                preexec_fn=_die_with_parent() if self._die_with_parent else None,  # noqa: PLW1509
            )
        deadline = time.monotonic() + self._timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"the node agent exited ({self._process.returncode}):\n{self.log_tail()}")
            if self.ready():
                return self
            time.sleep(0.2)
        raise RuntimeError(f"node {self.node_name} not Ready after {self._timeout:.0f}s:\n{self.log_tail()}")

    def ready(self) -> bool:
        agent = read_json(self.layout.agent) or {}
        if self._process is not None and agent.get("pid") != self._process.pid:
            return False  # the Node may still be Ready from a previous agent
        node = self.kube.get(f"/api/v1/nodes/{quote(self.node_name)}")
        conditions = (node or {}).get("status", {}).get("conditions") or []
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

    def kill_agent(self, signum: int = signal.SIGTERM) -> None:
        """Stop the agent process only (its pods keep running), for restart tests."""
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signum)
            self._process.wait(timeout=30)

    def stop(self) -> None:
        """Stop the agent and remove everything it left; delete the Node."""
        from aidc_nodeagent.teardown import down

        self.kill_agent()
        down(self.state_dir, self.kubeconfig, delete_node=True)

    def __enter__(self) -> LocalNode:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    # -- what runs ------------------------------------------------------------------------------------

    def pod_dir(self, namespace: str, name: str, uid: str) -> PodDir:
        return self.layout.pod(namespace, name, uid)

    def container_pid(self, namespace: str, name: str, uid: str, container: str) -> int | None:
        """The process id of the container's current attempt, while it runs."""
        files = self.pod_dir(namespace, name, uid).container(container)
        attempts = files.attempts()
        record = read_json(files.pid(attempts[-1])) if attempts else None
        return int(record["pid"]) if isinstance(record, dict) else None

    def container_log(self, namespace: str, name: str, uid: str, container: str, attempt: int = -1) -> str:
        files = self.pod_dir(namespace, name, uid).container(container)
        attempts = files.attempts()
        if not attempts:
            return ""
        try:
            return files.log(attempts[attempt]).read_text(errors="replace")
        except (OSError, IndexError):
            return ""

    def sandbox(self, namespace: str, name: str, uid: str) -> PodRecord | None:
        return PodRecord.load(self.pod_dir(namespace, name, uid))
