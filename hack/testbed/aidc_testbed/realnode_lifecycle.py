"""Starting and stopping the real nodes of a test bed: host set-up, containerd, images, kubelet, kube-proxy.

``start_real_nodes`` runs after the control plane is up and returns when every real node is Ready and
cluster DNS answers. ``stop_real_nodes`` works from the state file and the host journal alone (it may
run in another process, after a crash): kubelets first, so nothing restarts a pod; then every pod
sandbox through CRI, so containerd tears down its mounts and network; then containerd and whatever
outlived it in the nodes' cgroups; then the host journal is undone.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import tarfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client

from aidc_testbed import clusterdns, health, host, machine, process, realnodes, release
from aidc_testbed.config import TestbedConfig
from aidc_testbed.kubeconfig import write_kubeconfig
from aidc_testbed.layout import Layout
from aidc_testbed.pki import KUBE_PROXY, Pki, issue_node_credentials
from aidc_testbed.ports import free_ports
from aidc_testbed.realnodes import RealNode
from aidc_testbed.state import TestbedState

# outside the bed's folder, made by the kubelet or containerd whatever they are told
HOST_PATHS = (Path("/var/lib/kubelet"), Path("/var/log/containers"), Path("/run/containerd"))
Spawn = Callable[[str, list[str]], process.RunningProcess]
# containerd's CRI reports an image with this label as pinned, which the kubelet never collects
PINNED = "io.cri-containerd.pinned=pinned"
BUILD_ONLY = "aidc-base:"  # images only other images build on: never run, never imported
TOOLS = ("kubelet", "kube-proxy", "containerd", "containerd-shim-runc-v2", "ctr", "crictl",
         *(f"cni-{plugin}" for plugin in realnodes.CNI_PLUGINS))  # fmt: skip


def describe_nodes(config: TestbedConfig, layout: Layout) -> list[RealNode]:
    """The real nodes of ``config``, with free ports for their kubelets."""
    ports = free_ports(2 * config.real_nodes)
    folder = layout.real_nodes
    prefix = realnodes.NODE_NAME_PREFIX
    store = config.image_store
    nodes = [
        RealNode(i, folder / f"{prefix}{i}", ports[2 * i], ports[2 * i + 1], store / f"{prefix}{i}")
        for i in range(config.real_nodes)
    ]
    # the longest socket path is the last node's .ttrpc one; a unix socket path holds 107 bytes
    if len(f"{nodes[-1].containerd_socket}.ttrpc") > 107:
        raise ValueError(f"the state folder {layout.root} is too deep for containerd's unix sockets: use a shorter one")
    return nodes


def node_named(config: TestbedConfig, layout: Layout, name: str) -> RealNode:
    """The running real node called ``name``: its folders (its kubelet's ports are in its config file)."""
    if not name.startswith(realnodes.NODE_NAME_PREFIX) or not (layout.real_nodes / name).is_dir():
        raise ValueError(f"{name} is not a real node of the bed in {layout.root}")
    index = int(name.removeprefix(realnodes.NODE_NAME_PREFIX))
    return RealNode(index, layout.real_nodes / name, 0, 0, config.image_store / name)


def prepare_host(nodes: list[RealNode], journal: host.HostJournal) -> None:
    """Bridges, cgroup parents, the Service route and the forwarding rule; sysctls recorded first."""
    host.remember_netfilter(journal)
    host.remember_sysctls(journal, realnodes.KUBELET_SYSCTLS)
    host.remember_absent(journal, *HOST_PATHS)
    # pods on different bridges, and a Service's pod on the caller's own bridge, are reached by forwarding
    host.set_sysctl(journal, "net.ipv4.ip_forward", "1")
    for node in nodes:
        host.add_mount_root(journal, node.root)
        host.add_mount_root(journal, node.image_store)
        host.add_bridge(journal, node.bridge, node.address, 24)
        host.add_cgroup(journal, node.cgroup_root)
    destination, device = realnodes.service_route()
    host.add_route(journal, destination, device)
    # nothing a pod sends leaves the machine: no forwarding from a bridge to anything but a bridge
    bridges = f"{realnodes.BRIDGE_PREFIX}+"
    host.add_rule(journal, "iptables", "filter", "FORWARD", "-i", bridges, "!", "-o", bridges, "-j", "DROP")


def write_node_files(node: RealNode, config: TestbedConfig, pki: Pki, server: str) -> None:
    """Everything a node's containerd and kubelet read: configs, CNI, credentials, resolv.conf."""
    for folder in node.folders():
        folder.mkdir(parents=True, exist_ok=True)
    for plugin in realnodes.CNI_PLUGINS:
        link = node.cni_bin / plugin
        link.unlink(missing_ok=True)
        link.symlink_to(config.tools_dir / f"cni-{plugin}")
    (node.cni_conf / "10-aidc.conflist").write_text(json.dumps(realnodes.cni_config(node), indent=2))
    node.containerd_config.write_text(realnodes.containerd_toml(node))
    # Pods with dnsPolicy Default (CoreDNS itself) get this: a local address that answers nothing,
    # so a name outside the cluster fails at once and no query leaves the machine.
    node.resolv_conf.write_text("nameserver 127.0.0.1\n")
    identity = issue_node_credentials(pki, node.name, node.address)
    write_kubeconfig(node.kubelet_kubeconfig, server, pki, identity)
    serving = (pki.kubelet_serving_cert(node.name), pki.kubelet_serving_key(node.name))
    kubelet = realnodes.kubelet_configuration(node, pki.ca_cert, serving, tainted=config.nodes > 0)
    node.kubelet_config.write_text(yaml.safe_dump(kubelet, sort_keys=False))


def runtime_env(config: TestbedConfig) -> dict[str, str]:
    """containerd finds its shim next to itself on PATH, and runc (Debian's) in /usr/sbin."""
    return {**os.environ, "PATH": f"{config.tools_dir}:/usr/sbin:/usr/bin:/sbin:/bin"}


def start_containerd(node: RealNode, config: TestbedConfig, spawn: Spawn) -> None:
    spawn(f"containerd-{node.name}", realnodes.containerd_argv(node, config.tools_dir / "containerd"))
    health.poll(
        lambda: ctr(config, node, "version") or None,
        timeout=config.start_timeout_seconds,
        what=f"containerd of {node.name}",
    )


def ctr(config: TestbedConfig, node: RealNode, *args: str, timeout: float = 600) -> str:
    argv = [str(config.tools_dir / "ctr"), "--address", str(node.containerd_socket), "-n", "k8s.io", *args]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode:
        raise RuntimeError(f"ctr {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


def import_images(node: RealNode, config: TestbedConfig) -> list[str]:
    """Import every image archive of ``make images`` that the node's store lacks, or holds in another
    version (same ref, other manifest); the refs imported. The base image is only built on.

    Every one is pinned: nothing can pull it again, so the kubelet must never collect it, not even
    under disk pressure (its image GC and eviction skip the images CRI reports as pinned). Only the
    unpacked snapshots stay: the layers' blobs are let go once unpacked (``--discard-unpacked-layers``,
    a local import), so each node holds an image once, not twice (the trainer's ~3.8 GB)."""
    have = dict(line.split()[:3:2] for line in ctr(config, node, "images", "ls").splitlines()[1:])
    imported = []
    for image in release.image_archives(config):
        if image["ref"].rsplit("/", 1)[-1].startswith(BUILD_ONLY):
            continue
        if have.get(image["ref"]) != archive_digest(Path(image["archive"])):
            ctr(config, node, "images", "import", "--local", "--discard-unpacked-layers", image["archive"])
            imported.append(image["ref"])
        ctr(config, node, "images", "label", image["ref"], PINNED)
    return imported


def pinned_images(node: RealNode, config: TestbedConfig) -> list[str]:
    """The refs in the node's store that carry containerd's pinned label."""
    listing = ctr(config, node, "images", "ls").splitlines()[1:]
    return [line.split()[0] for line in listing if PINNED in line.split()[-1].split(",")]


def _member_json(tar: tarfile.TarFile, archive: Path, name: str) -> Any:
    member = tar.extractfile(name)
    if member is None:
        raise ValueError(f"{archive} has no {name}")
    return json.load(member)


def _manifest_digest(tar: tarfile.TarFile, archive: Path) -> str:
    digest: str = _member_json(tar, archive, "index.json")["manifests"][0]["digest"]
    return digest


def archive_digest(archive: Path) -> str:
    """The manifest digest an OCI archive's index names (what ``ctr images ls`` shows as DIGEST)."""
    with tarfile.open(archive) as tar:
        return _manifest_digest(tar, archive)


def archive_layers(archive: Path) -> list[str]:
    """The digests of the layers of the image an OCI archive holds."""
    with tarfile.open(archive) as tar:
        manifest = _member_json(tar, archive, f"blobs/sha256/{_manifest_digest(tar, archive).split(':', 1)[1]}")
        return [layer["digest"] for layer in manifest["layers"]]


def held_blobs(node: RealNode, config: TestbedConfig) -> set[str]:
    """The digests of every blob in the node's content store."""
    return {line.split()[0] for line in ctr(config, node, "content", "ls").splitlines()[1:]}


def start_kubelet(node: RealNode, config: TestbedConfig, spawn: Spawn) -> None:
    spawn(f"kubelet-{node.name}", realnodes.kubelet_argv(node, config.tools_dir / "kubelet"))


def start_kube_proxy(
    first: RealNode, config: TestbedConfig, layout: Layout, pki: Pki, server: str, spawn: Spawn
) -> None:
    kubeconfig = write_kubeconfig(layout.component_kubeconfigs / KUBE_PROXY.file_stem, server, pki, KUBE_PROXY)
    config_file = layout.root / "kube-proxy.yaml"
    healthz, metrics = free_ports(2)
    config_file.write_text(yaml.safe_dump(realnodes.kube_proxy_configuration(first, kubeconfig, (healthz, metrics))))
    spawn("kube-proxy", realnodes.kube_proxy_argv(config_file, config.tools_dir / "kube-proxy"))


def wait_for_nodes(
    api: client.ApiClient, nodes: list[RealNode], timeout: float, abort: Callable[[], str | None]
) -> None:
    core = client.CoreV1Api(api)

    def ready() -> bool | None:
        listed = core.list_node(label_selector=f"{realnodes.LABEL_REAL_NODE}=true").items
        ready_names = {n.metadata.name for n in listed if _is_ready(n)}
        return True if ready_names >= {n.name for n in nodes} else None

    health.poll(ready, timeout=timeout, what="real nodes Ready", abort=abort, interval=0.5)


def _is_ready(node: client.V1Node) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in (node.status.conditions or []))


def start_real_nodes(
    config: TestbedConfig, layout: Layout, state: TestbedState, api: client.ApiClient, spawn: Spawn,
    abort: Callable[[], str | None],
) -> list[RealNode]:  # fmt: skip
    """Bring up ``config.real_nodes`` nodes and cluster DNS; returns once all are Ready."""
    nodes = describe_nodes(config, layout)
    machine.claim(layout)
    journal = host.HostJournal.load(layout.host_journal)
    prepare_host(nodes, journal)
    pki, server = Pki(layout.pki), state.ports.server
    for node in nodes:
        write_node_files(node, config, pki, server)
        start_containerd(node, config, spawn)
    # each node has a store of its own to fill (the first time: a disk-bound copy of every image), one
    # after the other: an import holds an image's blobs beside its unpacked snapshots until the blobs
    # are let go, and side by side two nodes would need the trainer's 3.6 GB four times at once
    for node in nodes:
        import_images(node, config)
    start_kube_proxy(nodes[0], config, layout, pki, server, spawn)
    for node in nodes:
        start_kubelet(node, config, spawn)
    wait_for_nodes(api, nodes, config.start_timeout_seconds, abort)
    clusterdns.install(api, image=release.image_refs(config)["coredns"])
    clusterdns.wait_ready(api, config.start_timeout_seconds, abort)
    return nodes


# -- stopping ----------------------------------------------------------------------------------------


def stop_real_nodes(tools_dir: Path, layout: Layout, state: TestbedState | None) -> list[str]:
    """Stop the real nodes' processes and pods and restore the machine; what could not be undone."""
    running = state.processes if state else []
    mine = [p for p in running if machine.is_node_process(p.name)]
    process.stop([p for p in mine if p.name.startswith(("kubelet-", "kube-proxy"))])
    for node_root in _node_roots(layout):
        _remove_pods(tools_dir, node_root)
    process.stop([p for p in mine if p.name.startswith("containerd-")])
    if state is not None:
        state.processes = [p for p in state.processes if not machine.is_node_process(p.name)]
    other = machine.other_owner(layout)
    if other is not None:  # what is left is named like the other bed's: leave it, and the journal
        if host.HostJournal.load(layout.host_journal).is_empty():
            return []
        return [f"real nodes of {other} run on this machine: this bed's host changes stay recorded in "
                f"{layout.host_journal}; run down again once that bed is down"]  # fmt: skip
    for node_root in _node_roots(layout):
        _kill_leftovers(tools_dir, node_root)
    if mine or layout.host_journal.exists():
        _clean_kube_proxy(tools_dir)
    journal = host.HostJournal.load(layout.host_journal)
    problems = host.restore(journal)
    machine.release(layout)
    return problems


def _node_roots(layout: Layout) -> list[Path]:
    base = layout.real_nodes
    return sorted(p for p in base.iterdir() if p.is_dir()) if base.is_dir() else []


def _crictl(tools_dir: Path, socket: Path, *args: str) -> subprocess.CompletedProcess[str]:
    argv = [str(tools_dir / "crictl"), "--runtime-endpoint", f"unix://{socket}", "--timeout", "30s", *args]
    return subprocess.run(argv, capture_output=True, text=True, check=False, timeout=120)


def _remove_pods(tools_dir: Path, node_root: Path) -> None:
    """Every pod sandbox removed through CRI: containers stopped, network torn down, mounts gone."""
    socket = realnodes.containerd_socket(node_root)
    if socket.exists():
        with contextlib.suppress(subprocess.TimeoutExpired):
            _crictl(tools_dir, socket, "rmp", "--all", "--force")


def _kill_leftovers(tools_dir: Path, node_root: Path) -> None:
    """After a crash containerd's shims and their containers outlive it: kill every shim of this node
    (known by its socket in the command line) and every process left in the node's cgroups."""
    socket = str(realnodes.containerd_socket(node_root).resolve())  # the path containerd was given
    shim = str(tools_dir / "containerd-shim-runc-v2")
    for pid in _pids():
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        words = [w.decode(errors="replace") for w in argv]
        if words and Path(words[0]).name == Path(shim).name and socket in words:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    for controller in host.cgroup_controllers():
        top = controller / f"aidc-{node_root.name}"
        for procs in top.rglob("cgroup.procs") if top.is_dir() else []:
            for line in procs.read_text().split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(line), signal.SIGKILL)
    _wait_until_reaped(f"/aidc-{node_root.name}")


def _wait_until_reaped(cgroup: str, seconds: float = 30.0) -> None:
    """Wait until no process of ``cgroup`` is left, zombies included. A container whose shim was
    killed is an orphan of PID 1, which may reap it only seconds after its SIGKILL (this machine's
    init takes 1 to 2 s), and a zombie still shows its cgroup in /proc."""
    deadline = time.monotonic() + seconds
    while _pids_in(cgroup) and time.monotonic() < deadline:
        time.sleep(0.1)


def _pids_in(cgroup: str) -> list[int]:
    found = []
    for pid in _pids():
        try:
            lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
            if any(f"{line.split(':', 2)[-1]}/".startswith(f"{cgroup}/") for line in lines):
                found.append(pid)
        except OSError:
            continue
    return found


def _pids() -> list[int]:
    return [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]


def _clean_kube_proxy(tools_dir: Path) -> None:
    binary = tools_dir / "kube-proxy"
    if binary.is_file():
        subprocess.run([str(binary), "--cleanup"], capture_output=True, check=False, timeout=60)
