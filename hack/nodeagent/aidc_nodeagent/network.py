"""The pods' network: a bridge on the host, a network namespace per pod, one address each.

This is what a bridge CNI plugin does on a real node. Each pod gets its own network namespace
(so two pods may both listen on 8080 or 29500), a veth pair into the node's bridge and an
address from the node's /24, reported as ``status.podIP``. The host holds the bridge's first
address, so the agent's probes, the tests and the demo reach every pod directly, and pods reach
each other over the bridge. Nothing is forwarded or masqueraded: pods see only the node.

Named namespaces (``ip netns add``) outlive the agent, so a restarted agent finds its pods'
sandboxes where it left them. Needs root (CAP_NET_ADMIN) and the ``ip`` tool.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import json
import os
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aidc_nodeagent.layout import read_json, write_json

NETNS_DIR = Path("/run/netns")


class NetworkError(RuntimeError):
    """An ``ip`` command failed."""


def ip(*args: str, check: bool = True) -> str:
    """Run ``ip ARGS``; its output, or :class:`NetworkError` with what it said."""
    result = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise NetworkError(f"ip {' '.join(args)}: {result.stderr.strip() or result.returncode}")
    return result.stdout


@dataclass(frozen=True)
class NodeNetwork:
    """The node's bridge and pod subnet."""

    bridge: str
    subnet: ipaddress.IPv4Network

    @property
    def gateway(self) -> str:
        """The host's address on the bridge: where pods' traffic to the node goes."""
        return str(self.subnet.network_address + 1)

    def to_json(self) -> dict[str, str]:
        return {"bridge": self.bridge, "subnet": str(self.subnet)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> NodeNetwork:
        return cls(bridge=data["bridge"], subnet=ipaddress.IPv4Network(data["subnet"]))


def _digest(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()


def _routed_networks() -> list[ipaddress.IPv4Network]:
    routes = json.loads(ip("-4", "-j", "route", "show", "table", "all") or "[]")
    found = []
    for route in routes:
        dst = route.get("dst", "")
        if dst and dst != "default" and route.get("type", "unicast") == "unicast":
            try:
                found.append(ipaddress.IPv4Network(dst, strict=False))
            except ValueError:
                continue
    return found


def choose_network(state_dir: Path, record: Path, pod_cidr: str | None) -> NodeNetwork:
    """The network recorded in ``record``, else a new one: ``pod_cidr`` or a free 10.244.N.0/24.

    N is derived from the state directory, so two agents on one host (two checkouts, two test
    sessions) pick different subnets and bridges; a subnet the host already routes is skipped.
    """
    known = read_json(record)
    if known:
        return NodeNetwork.from_json(known)
    digest = _digest(str(state_dir))
    bridge = f"aidc{digest[:8]}"
    if pod_cidr:
        subnet = ipaddress.IPv4Network(pod_cidr)
    else:
        taken = _routed_networks()
        start = int(digest[8:12], 16) % 250
        for offset in range(250):
            candidate = ipaddress.IPv4Network(f"10.244.{(start + offset) % 250 + 1}.0/24")
            if not any(candidate.overlaps(t) for t in taken):
                subnet = candidate
                break
        else:
            raise NetworkError("no free /24 in 10.244.0.0/16 for the pods; pass --pod-cidr")
    network = NodeNetwork(bridge=bridge, subnet=subnet)
    write_json(record, network.to_json())
    return network


def ensure_bridge(network: NodeNetwork) -> None:
    """Create the bridge with the gateway address, or leave the one a previous run made."""
    if not Path(f"/sys/class/net/{network.bridge}").exists():
        ip("link", "add", network.bridge, "type", "bridge")
    addresses = ip("-4", "-o", "addr", "show", "dev", network.bridge)
    if f" {network.gateway}/" not in addresses:
        ip("addr", "add", f"{network.gateway}/{network.subnet.prefixlen}", "dev", network.bridge)
    ip("link", "set", network.bridge, "up")


def remove_bridge(network: NodeNetwork) -> None:
    ip("link", "del", network.bridge, check=False)


def netns_name(uid: str) -> str:
    return f"aidc-{uid}"


def netns_path(name: str) -> Path:
    return NETNS_DIR / name


def _veth_name(uid: str) -> str:
    return f"av{uid.replace('-', '')[:11]}"  # interface names hold 15 characters


def create_sandbox(network: NodeNetwork, uid: str, address: str, service_ips: list[str]) -> str:
    """A network namespace for pod ``uid`` with ``address`` on eth0; its name.

    ``service_ips`` are put on the pod's loopback: the agent listens there, inside the
    namespace, for the ``kubernetes`` Service (see :mod:`aidc_nodeagent.apiservice`).
    """
    name = netns_name(uid)
    if netns_path(name).exists():
        ip("netns", "del", name, check=False)  # half made by a crashed run: start over
    veth = _veth_name(uid)
    ip("link", "del", veth, check=False)
    ip("netns", "add", name)
    try:
        ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", name)
        ip("link", "set", veth, "master", network.bridge, "up")
        ip("-n", name, "link", "set", "lo", "up")
        ip("-n", name, "addr", "add", f"{address}/{network.subnet.prefixlen}", "dev", "eth0")
        ip("-n", name, "link", "set", "eth0", "up")
        ip("-n", name, "route", "add", "default", "via", network.gateway)
        for service_ip in service_ips:
            ip("-n", name, "addr", "add", f"{service_ip}/32", "dev", "lo")
    except NetworkError:
        delete_sandbox(name)
        raise
    return name


def delete_sandbox(name: str) -> None:
    """Kill whatever still runs in a pod's namespace, then remove it (its veth pair goes with it)."""
    for pid in ip("netns", "pids", name, check=False).split():
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGKILL)
    ip("netns", "del", name, check=False)


def sandboxes() -> list[str]:
    """Every pod namespace on this host (of any agent: filter by what you own)."""
    return sorted(p.name for p in NETNS_DIR.glob("aidc-*")) if NETNS_DIR.is_dir() else []


class AddressPool:
    """Pod addresses of the node's subnet, handed out in turn so a freed one is not reused at once."""

    def __init__(self, network: NodeNetwork, taken: dict[str, str] | None = None) -> None:
        self._hosts = [str(h) for h in network.subnet.hosts()][1:]  # the first is the gateway
        self._taken = dict(taken or {})  # uid -> address
        self._next = 0
        if self._taken:
            last = max(self._hosts.index(a) for a in self._taken.values() if a in self._hosts)
            self._next = last + 1

    def allocate(self, uid: str) -> str:
        if uid in self._taken:
            return self._taken[uid]
        used = set(self._taken.values())
        for offset in range(len(self._hosts)):
            candidate = self._hosts[(self._next + offset) % len(self._hosts)]
            if candidate not in used:
                self._next = (self._next + offset + 1) % len(self._hosts)
                self._taken[uid] = candidate
                return candidate
        raise NetworkError("the node's pod subnet is full")

    def release(self, uid: str) -> None:
        self._taken.pop(uid, None)
