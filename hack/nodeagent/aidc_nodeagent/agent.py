"""The node agent: a development kubelet that runs the pods bound to its node as local processes.

It registers its Node, keeps the Lease and Ready condition fresh, watches the pods bound to the
node and gives each a :class:`~aidc_nodeagent.podworker.PodWorker`. Watch and status failures
are retried, so the agent rides out an API server restart. Stopping the agent leaves the pods'
processes running, as stopping a kubelet leaves its containers; a restarted agent adopts them
from the files of its state directory, and reaps the processes of pods deleted meanwhile.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any

from aidc_nodeagent import network, node
from aidc_nodeagent.apiservice import ApiService
from aidc_nodeagent.config import AgentConfig
from aidc_nodeagent.kube import ApiError, Kube
from aidc_nodeagent.kubeletserver import KubeletServer
from aidc_nodeagent.layout import Layout, PodDir, write_json
from aidc_nodeagent.podworker import Node, PodWorker
from aidc_nodeagent.runtime import Attempt
from aidc_nodeagent.sandbox import PodRecord, Sandboxes

_log = logging.getLogger(__name__)
WATCH_SECONDS = 60
KUBERNETES_SERVICE = ("10.96.0.1", 443)


class AgentError(RuntimeError):
    """The agent cannot run here (not root, no ``ip``, no API server)."""


def check_host() -> None:
    """Fail early with a reason: pods need namespaces and a bridge, which need root and ``ip``."""
    if os.geteuid() != 0:
        raise AgentError("the node agent needs root: it makes network and mount namespaces for the pods")
    if shutil.which("ip") is None or shutil.which("nsenter") is None:
        raise AgentError("the node agent needs the `ip` (iproute2) and `nsenter` (util-linux) commands")


class NodeAgent:
    """One node's agent."""

    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        self.layout = Layout(config.state_dir)
        self.kube = Kube.from_kubeconfig(config.kubeconfig)
        self._workers: dict[str, PodWorker] = {}
        self._workers_lock = threading.Lock()
        self._stop = threading.Event()
        self._node_uid = ""
        self._node_status: dict[str, Any] = {}
        self._version = "v0.0.0"
        self.network: network.NodeNetwork | None = None
        self.kubelet: KubeletServer | None = None
        self._node: Node | None = None

    # -- start ---------------------------------------------------------------------------------------

    def start(self) -> None:
        check_host()
        config, layout = self.config, self.layout
        other = node.rival(self.kube, config)
        if other is not None:
            raise AgentError(
                f"node {config.node_name} is run by another agent ({other}); stop it or pick another --node-name"
            )
        layout.pods.mkdir(parents=True, exist_ok=True)
        self.network = network.choose_network(config.state_dir, layout.network, config.pod_cidr)
        network.ensure_bridge(self.network)
        service = self._kubernetes_service()
        upstream = urllib.parse.urlsplit(self.kube.server)
        api_service = ApiService(service[0], service[1], (upstream.hostname or "127.0.0.1", upstream.port or 443))
        sandboxes = Sandboxes(self.network, api_service, config.gpus)
        self.kubelet = KubeletServer(self._log_file, layout.tls, config.node_name, config.kubelet_port)
        self.kubelet.start()
        self._version = node.api_version(self.kube)
        registered = node.register(self.kube, config, self.network)
        self._node_uid = registered["metadata"]["uid"]
        self._heartbeat()
        self._node = Node(self.kube, config, sandboxes, node.HOST_IP, node.capacity(config))
        write_json(
            layout.agent,
            {"pid": os.getpid(), "node": config.node_name, "kubeletPort": self.kubelet.port, **self.network.to_json()},
        )
        pods = self.kube.list_node_pods(config.node_name)
        self._adopt(pods["items"])
        threading.Thread(target=self._heartbeats, daemon=True, name="aidc-node-heartbeat").start()
        threading.Thread(target=self._watch, args=(pods,), daemon=True, name="aidc-pod-watch").start()
        _log.info(
            "node %s ready: pods on %s (bridge %s), logs on https://127.0.0.1:%s",
            config.node_name,
            self.network.subnet,
            self.network.bridge,
            self.kubelet.port,
        )

    def _kubernetes_service(self) -> tuple[str, int]:
        """The ``kubernetes`` Service's address, which every pod's client is told to use."""
        try:
            service = self.kube.get("/api/v1/namespaces/default/services/kubernetes")
        except ApiError:
            service = None
        if not service:
            return KUBERNETES_SERVICE
        spec = service.get("spec", {})
        port = next((p["port"] for p in spec.get("ports") or [] if p.get("name") == "https"), 443)
        return str(spec.get("clusterIP") or KUBERNETES_SERVICE[0]), int(port)

    # -- heartbeats ------------------------------------------------------------------------------------

    def _heartbeat(self) -> None:
        assert self.kubelet is not None
        self._node_status = node.post_status(
            self.kube, self.config, self.kubelet.port, self._version, self._node_status.get("status", {})
        )
        node.renew_lease(self.kube, self.config, self._node_uid)

    def _heartbeats(self) -> None:
        while not self._stop.wait(self.config.status_seconds):
            try:
                self._heartbeat()
            except Exception as error:
                _log.warning("node heartbeat failed (%s); retrying", error)

    # -- pods -------------------------------------------------------------------------------------------

    def _adopt(self, pods: list[dict[str, Any]]) -> None:
        """Adopt the pods a previous agent ran; reap the processes of pods deleted meanwhile."""
        by_uid = {p["metadata"]["uid"]: p for p in pods}
        for pod_dir in self.layout.pod_dirs():
            record = PodRecord.load(pod_dir)
            if record is None:
                continue
            pod = by_uid.get(record.uid)
            if pod is None:
                if not record.removed:
                    _log.info("reaping pod %s/%s (deleted while the agent was away)", record.namespace, record.name)
                    reap(pod_dir, record)
                continue
            self._spawn(pod, pod_dir, record)
        for pod in pods:
            self._dispatch("ADDED", pod)

    def _spawn(self, pod: dict[str, Any], pod_dir: PodDir, record: PodRecord | None) -> None:
        assert self._node is not None
        worker = PodWorker(self._node, pod, pod_dir, record)
        with self._workers_lock:
            self._workers[worker.uid] = worker
        worker.start()

    def _dispatch(self, kind: str, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        uid = meta["uid"]
        with self._workers_lock:
            for gone in [u for u, w in self._workers.items() if w.finished.is_set()]:
                del self._workers[gone]
            worker = self._workers.get(uid)
        if kind == "DELETED":
            if worker is not None:
                worker.deleted()
            return
        if worker is not None:
            worker.update(pod)
            return
        pod_dir = self.layout.pod(meta["namespace"], meta["name"], uid)
        self._spawn(pod, pod_dir, PodRecord.load(pod_dir))

    def _watch(self, listing: dict[str, Any]) -> None:
        """List, then watch from the list's version; on any failure, list again (after a pause)."""
        failures = 0
        while not self._stop.is_set():
            try:
                if listing is None:
                    listing = self.kube.list_node_pods(self.config.node_name)
                    self._resync(listing["items"])
                version = listing["metadata"]["resourceVersion"]
                listing = None  # type: ignore[assignment]
                for event in self.kube.watch_node_pods(self.config.node_name, version, WATCH_SECONDS):
                    failures = 0
                    if event["type"] in ("ADDED", "MODIFIED", "DELETED"):
                        self._dispatch(event["type"], event["object"])
                    if self._stop.is_set():
                        return
            except Exception as error:
                failures += 1
                _log.warning("pod watch interrupted (%s); listing again", error)
                self._stop.wait(min(0.5 * 2**failures, 5.0))
                listing = None  # type: ignore[assignment]

    def _resync(self, pods: list[dict[str, Any]]) -> None:
        present = {p["metadata"]["uid"] for p in pods}
        with self._workers_lock:
            missing = [w for u, w in self._workers.items() if u not in present]
        for worker in missing:
            worker.deleted()
        for pod in pods:
            self._dispatch("MODIFIED", pod)

    # -- logs ----------------------------------------------------------------------------------------

    def _log_file(self, namespace: str, pod: str, container: str, previous: bool) -> tuple[Path, Any] | None:
        candidates = sorted(
            self.layout.pods.glob(f"{namespace}_{pod}_*"), key=lambda p: p.stat().st_mtime, reverse=True
        )
        for folder in candidates:
            files = PodDir(folder).container(container)
            attempts = files.attempts()
            if previous:
                attempts = attempts[:-1]
            if attempts:
                attempt = Attempt(files, attempts[-1])
                return files.log(attempts[-1]), lambda attempt=attempt: attempt.exit() is None
        return None

    # -- stop --------------------------------------------------------------------------------------------

    def run_until_signalled(self) -> None:
        """Run until SIGTERM or SIGINT; the pods' processes keep running (see the module's doc)."""
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: self._stop.set())
        while not self._stop.wait(1.0):
            pass
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        if self.kubelet is not None:
            self.kubelet.stop()
        _log.info("node agent stopped; pod processes keep running until a restarted agent adopts them")


def reap(pod_dir: PodDir, record: PodRecord, grace_seconds: float = 2.0) -> None:
    """Stop what still runs of a pod nobody wants any more, and remove its sandbox."""
    containers = pod_dir.path / "containers"
    attempts = []
    if containers.is_dir():
        for folder in containers.iterdir():
            files = PodDir(pod_dir.path).container(folder.name)
            numbers = files.attempts()
            if numbers:
                attempts.append(Attempt(files, numbers[-1]))
    for attempt in attempts:
        attempt.signal(signal.SIGTERM)
    deadline = time.monotonic() + grace_seconds
    while any(a.running() for a in attempts) and time.monotonic() < deadline:
        time.sleep(0.1)
    for attempt in attempts:
        attempt.signal(signal.SIGKILL)
    if record.netns:
        network.delete_sandbox(record.netns)
    record.removed = True
    record.save(pod_dir)
    shutil.rmtree(pod_dir.volumes, ignore_errors=True)
