"""A whole Kubernetes control plane on loopback, with fake GPU nodes: start, inspect, stop.

The test bed runs the real etcd, kube-apiserver, kube-controller-manager and kube-scheduler
built from pinned Go modules (``hack/build-tools.sh``), and kwok in place of the kubelets. What
the operator talks to is therefore a real API server with real admission, RBAC, garbage
collection, scheduling and volume binding; only containers do not run.

``start`` returns when the cluster can take work: the API server is ready, every fake node is
Ready and the ``default`` ServiceAccount exists (pods can be admitted in ``default``).
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

from kubernetes import client
from kubernetes import config as kube_config
from kubernetes.client.exceptions import ApiException

from aidc_testbed import (
    components,
    health,
    nodes,
    process,
    realnode_failure,
    realnode_lifecycle,
    realnodes,
    storage,
)
from aidc_testbed.config import TestbedConfig
from aidc_testbed.kubeconfig import write_kubeconfig
from aidc_testbed.layout import Layout
from aidc_testbed.pki import ADMIN, CONTROLLER_MANAGER, KWOK, SCHEDULER, Pki, create_pki
from aidc_testbed.ports import free_ports
from aidc_testbed.state import TestbedState


class TestbedError(RuntimeError):
    """The test bed cannot do what was asked (already running, tools missing, not running)."""

    __test__ = False


class Testbed:
    """One loopback cluster; also a context manager that stops what it started."""

    __test__ = False

    def __init__(self, config: TestbedConfig | None = None, *, kubeconfig: Path | None = None) -> None:
        self.config = config or TestbedConfig()
        self.layout = Layout(self.config.state_dir)
        self._kubeconfig = kubeconfig
        self._api: client.ApiClient | None = None

    # -- attaching -----------------------------------------------------------------------------

    @classmethod
    def attach(cls, state_dir: Path | None = None, *, kubeconfig: Path | None = None) -> Testbed:
        """The test bed already running in ``state_dir``, or any cluster reached by ``kubeconfig``.

        With only a kubeconfig (``AIDC_KUBECONFIG`` naming a copy, or another cluster with the
        same fake nodes), API helpers such as :meth:`fail_node` work; start and stop do not.
        """
        if kubeconfig is not None and state_dir is None:
            # a bed's own kubeconfig: its state file says what it was started with (real nodes, tools)
            state = TestbedState.load(Layout(Path(kubeconfig).parent.resolve()).state_file)
            folder = TestbedConfig(state_dir=Path(kubeconfig).parent)
            config = TestbedConfig.from_json(state.config) if state is not None else folder
            return cls(config, kubeconfig=Path(kubeconfig))
        testbed = cls(TestbedConfig(state_dir=state_dir) if state_dir else None, kubeconfig=kubeconfig)
        if not testbed.is_running():
            raise TestbedError(f"no test bed is running in {testbed.layout.root}")
        return testbed

    # -- what it is ----------------------------------------------------------------------------

    @property
    def kubeconfig(self) -> Path:
        """The admin kubeconfig."""
        return self._kubeconfig or self.layout.kubeconfig

    @property
    def state(self) -> TestbedState | None:
        return TestbedState.load(self.layout.state_file)

    @property
    def server(self) -> str:
        state = self._require_state()
        return state.ports.server

    def api_client(self) -> client.ApiClient:
        """An ApiClient of the official client for the admin kubeconfig (one, reused)."""
        if self._api is None:
            api: client.ApiClient = kube_config.new_client_from_config(  # type: ignore[no-untyped-call]
                config_file=str(self.kubeconfig)
            )
            self._api = api
        return self._api

    def real_node_names(self) -> list[str]:
        """The real nodes (kubelet, containerd), by name."""
        node_list = client.CoreV1Api(self.api_client()).list_node(label_selector=f"{realnodes.LABEL_REAL_NODE}=true")
        return sorted(n.metadata.name for n in node_list.items if n.metadata and n.metadata.name)

    def node_names(self) -> list[str]:
        """The fake nodes, by name."""
        node_list = client.CoreV1Api(self.api_client()).list_node(label_selector="type=kwok")
        return sorted(n.metadata.name for n in node_list.items if n.metadata and n.metadata.name)

    def is_running(self) -> bool:
        """Whether every component recorded in the state file still runs."""
        state = self.state
        if state is None or not state.processes:
            return False
        return all(process.is_running(p) for p in state.processes)

    def status(self) -> dict[str, Any]:
        """What runs, for `python -m aidc_testbed status`."""
        state = self.state
        if state is None:
            return {"running": False, "dir": str(self.layout.root)}
        ports = {
            "etcd": state.ports.etcd_client,
            "kube-apiserver": state.ports.apiserver,
            "kube-controller-manager": state.ports.controller_manager,
            "kube-scheduler": state.ports.scheduler,
            "kwok": state.ports.kwok,
        }
        return {
            "running": self.is_running(),
            "dir": str(self.layout.root),
            "server": state.ports.server,
            "kubeconfig": str(self.kubeconfig),
            "ready_seconds": state.ready_seconds,
            "components": {
                p.name: {
                    "pid": p.pid,
                    "port": ports.get(p.name),
                    "running": process.is_running(p),
                    "log": p.log,
                }
                for p in state.processes
            },
        }

    # -- node failure --------------------------------------------------------------------------

    def fail_node(self, name: str) -> None:
        """Kill node ``name``'s kubelet: the node goes NotReady, its pods get evicted and hang.

        A kwok node's kubelet is kwok's play of it; a real node's is the kubelet process, killed with
        SIGKILL while its containers keep running (see :mod:`aidc_testbed.realnode_failure`).
        """
        if name.startswith(realnodes.NODE_NAME_PREFIX):
            realnode_failure.fail(self.api_client(), self._require_state(), self.layout, name)
        else:
            nodes.fail_node(self.api_client(), name)

    def recover_node(self, name: str) -> None:
        """Revive node ``name``'s kubelet: Ready again, and pending pod deletions complete.

        For a real node this returns once the node is Ready and no longer tainted unreachable.
        """
        if not name.startswith(realnodes.NODE_NAME_PREFIX):
            nodes.recover_node(self.api_client(), name)
            return
        state = self._require_state()
        node = realnode_lifecycle.node_named(self.config, self.layout, name)
        if any(p.name == realnode_failure.kubelet_name(name) and process.is_running(p) for p in state.processes):
            return  # its kubelet runs: nothing to revive
        realnode_failure.recover(self.api_client(), node, self.config, self._real_node_spawner(state),
                                 self._died(state))  # fmt: skip

    # -- start and stop ------------------------------------------------------------------------

    def start(self) -> Testbed:
        """Start every component, create nodes and storage, and wait until the cluster is usable."""
        if self.is_running():
            raise TestbedError(f"a test bed is already running in {self.layout.root}; run `down` first")
        self._check_tools()
        self.stop()  # whatever a crashed start left behind
        self._clean()
        started = time.monotonic()
        layout, config = self.layout, self.config
        layout.root.mkdir(parents=True, exist_ok=True)
        pki = create_pki(layout.pki)
        ports = components.Ports(*free_ports(6))
        for identity in (CONTROLLER_MANAGER, SCHEDULER, KWOK):
            write_kubeconfig(layout.component_kubeconfigs / identity.file_stem, ports.server, pki, identity)
        state = TestbedState(ports=ports, config=config.to_json(), started_at=time.time())
        state.save(layout.state_file)
        argvs = components.command_lines(config, layout, ports)
        try:
            self._spawn("etcd", argvs["etcd"], state)
            health.poll(
                lambda: health.ok_or_none(health.http_get("127.0.0.1", ports.etcd_client, "/health")),
                timeout=config.start_timeout_seconds,
                what="etcd",
                abort=self._died(state),
            )
            self._spawn("kube-apiserver", argvs["kube-apiserver"], state)
            admin_tls = health.client_tls(pki.ca_cert, pki.client_cert(ADMIN), pki.client_key(ADMIN))
            health.poll(
                lambda: health.ok_or_none(health.http_get("127.0.0.1", ports.apiserver, "/readyz", tls=admin_tls)),
                timeout=config.start_timeout_seconds,
                what="kube-apiserver",
                abort=self._died(state),
            )
            write_kubeconfig(layout.kubeconfig, ports.server, pki, ADMIN)
            for name in ("kube-controller-manager", "kube-scheduler", "kwok"):
                self._spawn(name, argvs[name], state)
            api = self.api_client()
            storage.create_storage(api, config.volumes, layout.volumes)
            self._spawn("reclaimer", components.reclaimer(layout), state, components.reclaimer_env())
            nodes.create_nodes(api, config)
            self._wait_until_usable(pki, ports, state)
            if config.real_nodes:
                realnode_lifecycle.start_real_nodes(config, layout, state, api, self._real_node_spawner(state),
                                                    self._died(state))  # fmt: skip
        except BaseException:
            self.stop()
            raise
        state.ready_seconds = round(time.monotonic() - started, 2)
        state.save(layout.state_file)
        return self

    def restart(self, name: str) -> None:
        """Stop one component and start it again with the same command line, as a crash or an
        upgrade of that component would; returns once it answers its health check again.

        Clients (the operator, the node agent) must ride it out; etcd keeps its data.
        """
        state = self._require_state()
        index = next((i for i, p in enumerate(state.processes) if p.name == name), None)
        if index is None:
            raise TestbedError(f"no component {name!r} runs in {self.layout.root}")
        process.stop([state.processes[index]])
        argvs = components.command_lines(self.config, self.layout, state.ports)
        state.processes[index] = process.spawn(
            name, argvs[name], self.layout.log(name), die_with_parent=self.config.die_with_parent
        )
        state.save(self.layout.state_file)
        pki, ports = Pki(self.layout.pki), state.ports
        serving = health.client_tls(pki.ca_cert)
        port, path, tls = {
            "etcd": (ports.etcd_client, "/health", None),
            "kube-apiserver": (
                ports.apiserver,
                "/readyz",
                health.client_tls(pki.ca_cert, pki.client_cert(ADMIN), pki.client_key(ADMIN)),
            ),
            "kube-controller-manager": (ports.controller_manager, "/healthz", serving),
            "kube-scheduler": (ports.scheduler, "/healthz", serving),
            "kwok": (ports.kwok, "/healthz", None),
        }[name]
        health.poll(
            lambda: health.ok_or_none(health.http_get("127.0.0.1", port, path, tls=tls)),
            timeout=self.config.start_timeout_seconds,
            what=name,
            abort=self._died(state),
        )

    def stop(self, *, purge: bool = False) -> None:
        """Stop every component (SIGTERM, then SIGKILL after a grace period), latest first.

        Logs stay for a post-mortem unless ``purge`` removes everything the test bed wrote.
        """
        if self._api is not None:
            self._api.close()  # type: ignore[no-untyped-call]
            self._api = None
        state = self.state
        tools_dir = Path(state.config["tools_dir"]) if state is not None else self.config.tools_dir
        problems = realnode_lifecycle.stop_real_nodes(tools_dir, self.layout, state)
        if state is not None:
            # One at a time, latest first: an API server whose etcd is already gone hangs in
            # its shutdown until killed, one whose etcd still runs stops in about a second.
            for running in reversed(state.processes):
                process.stop([running])
            self.layout.state_file.unlink(missing_ok=True)
        if problems:
            raise TestbedError("the machine is not as it was before the real nodes: " + "; ".join(problems))
        if purge:
            self._clean()

    def __enter__(self) -> Testbed:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- internals -----------------------------------------------------------------------------

    def _require_state(self) -> TestbedState:
        state = self.state
        if state is None:
            raise TestbedError(f"no test bed state in {self.layout.root}")
        return state

    def _check_tools(self) -> None:
        wanted = list(components.COMPONENTS)
        if self.config.real_nodes:
            if os.geteuid() != 0:
                raise TestbedError("real nodes need root (bridges, mounts, cgroups, netfilter): run as root")
            wanted += realnode_lifecycle.TOOLS
        missing = [n for n in wanted if not (self.config.tools_dir / n).is_file()]
        if missing:
            raise TestbedError(
                f"missing {', '.join(missing)} in {self.config.tools_dir}; build them with `make tools` "
                "(hack/build-tools.sh)"
            )
        absent = [str(p) for p in self.config.kwok_stages if not p.is_file()]
        if absent:
            raise TestbedError(f"missing kwok stage files: {', '.join(absent)}")

    def _clean(self) -> None:
        for path in self.layout.generated():
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)

    def _spawn(
        self, name: str, argv: list[str], state: TestbedState, env: dict[str, str] | None = None
    ) -> process.RunningProcess:
        log, die = self.layout.log(name), self.config.die_with_parent
        running = process.spawn(name, argv, log, die_with_parent=die, env=env)
        state.processes.append(running)
        state.save(self.layout.state_file)
        return running

    def _real_node_spawner(self, state: TestbedState) -> realnode_lifecycle.Spawn:
        env = realnode_lifecycle.runtime_env(self.config)

        def spawn(name: str, argv: list[str]) -> process.RunningProcess:
            return self._spawn(name, argv, state, env)

        return spawn

    def _died(self, state: TestbedState) -> Callable[[], str | None]:
        """An abort check for :func:`health.poll`: the first component that exited, with its log."""

        def check() -> str | None:
            for p in state.processes:
                if not process.is_running(p):
                    code = process.exit_code(p)
                    return f"{p.name} exited ({code}); last lines of {p.log}:\n{health.log_tail(Path(p.log))}"
            return None

        return check

    def _wait_until_usable(self, pki: Pki, ports: components.Ports, state: TestbedState) -> None:
        timeout, abort = self.config.start_timeout_seconds, self._died(state)
        serving_tls = health.client_tls(pki.ca_cert)

        def healthz(port: int) -> Callable[[], str | None]:
            return lambda: health.ok_or_none(health.http_get("127.0.0.1", port, "/healthz", tls=serving_tls))

        for name, port in (
            ("kube-controller-manager", ports.controller_manager),
            ("kube-scheduler", ports.scheduler),
        ):
            health.poll(healthz(port), timeout=timeout, what=name, abort=abort)
        health.poll(
            lambda: health.ok_or_none(health.http_get("127.0.0.1", ports.kwok, "/healthz")),
            timeout=timeout,
            what="kwok",
            abort=abort,
        )
        core = client.CoreV1Api(self.api_client())

        def nodes_ready() -> int | None:
            ready = sum(nodes.is_ready(n) for n in core.list_node(label_selector="type=kwok").items)
            return ready if ready == self.config.nodes else None

        health.poll(nodes_ready, timeout=timeout, what="fake nodes Ready", abort=abort, interval=0.5)

        def default_service_account() -> bool | None:
            try:
                core.read_namespaced_service_account("default", "default")
            except ApiException as error:
                if error.status == 404:
                    return None
                raise
            return True

        health.poll(default_service_account, timeout=timeout, what="ServiceAccount default/default", abort=abort)
