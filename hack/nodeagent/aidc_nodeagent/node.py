"""The agent's Node: registration, status with the Ready condition, and the heartbeat Lease.

Like a kubelet, the agent creates its Node (labels, taints, pod CIDR, capacity), posts the
node's status (Ready, addresses, the kubelet endpoint the API server uses for ``kubectl logs``)
and renews its Lease in ``kube-node-lease`` every few seconds; the node lifecycle controller
reads that Lease to decide whether the node is alive. The Node carries no kwok annotation or
label, so kwok leaves it alone.
"""

from __future__ import annotations

import datetime
import os
import platform
import socket
from pathlib import Path
from typing import Any

from aidc_nodeagent.config import GPU_RESOURCE, LABEL_NODE_AGENT, AgentConfig, parse_taint
from aidc_nodeagent.kube import ApiError, Kube, quote
from aidc_nodeagent.network import NodeNetwork

LEASE_NAMESPACE = "kube-node-lease"
HOST_IP = "127.0.0.1"  # the node's InternalIP: where the API server finds the kubelet endpoint
RUNTIME_VERSION = "aidc-nodeagent://0.1.0"
_ARCH = {"x86_64": "amd64", "aarch64": "arm64"}


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def rfc3339(moment: datetime.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def micro_time(moment: datetime.datetime) -> str:
    """A Lease's MicroTime."""
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def capacity(config: AgentConfig) -> dict[str, str]:
    resources = {"cpu": config.cpu, "memory": config.memory, "pods": str(config.pods), "ephemeral-storage": "100Gi"}
    if config.gpus:
        resources[GPU_RESOURCE] = str(config.gpus)
    return resources


def labels(config: AgentConfig) -> dict[str, str]:
    found = {
        "kubernetes.io/hostname": config.node_name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": _ARCH.get(platform.machine(), platform.machine()),
        LABEL_NODE_AGENT: "true",
    }
    if config.gpus:
        found |= {"nvidia.com/gpu.present": "true", "nvidia.com/gpu.count": str(config.gpus)}
    return found | config.labels


def node_manifest(config: AgentConfig, node_network: NodeNetwork) -> dict[str, Any]:
    """The Node as the agent registers it (status is posted separately)."""
    cidr = str(node_network.subnet)
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": config.node_name, "labels": labels(config)},
        "spec": {"podCIDR": cidr, "podCIDRs": [cidr], "taints": [parse_taint(t) for t in config.taints]},
    }


def node_status(config: AgentConfig, kubelet_port: int, version: str, previous: dict[str, Any]) -> dict[str, Any]:
    """The node's status: resources, Ready and the pressure conditions, addresses, endpoints."""
    now = rfc3339(_now())
    before = {c["type"]: c for c in previous.get("conditions") or []}

    def condition(type_: str, status: str, reason: str, message: str) -> dict[str, Any]:
        old = before.get(type_, {})
        since = old.get("lastTransitionTime") if old.get("status") == status else None
        return {
            "type": type_,
            "status": status,
            "reason": reason,
            "message": message,
            "lastHeartbeatTime": now,
            "lastTransitionTime": since or now,
        }

    resources = capacity(config)
    return {
        "capacity": resources,
        "allocatable": dict(resources),
        "conditions": [
            condition(
                "MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"
            ),
            condition("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
            condition("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
            condition("Ready", "True", "KubeletReady", "aidc node agent is posting ready status"),
        ],
        "addresses": [{"type": "InternalIP", "address": HOST_IP}],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": kubelet_port}},
        "nodeInfo": {
            "machineID": "",
            "systemUUID": "",
            "bootID": "",
            "kernelVersion": platform.release(),
            "osImage": "aidc node agent (host processes)",
            "containerRuntimeVersion": RUNTIME_VERSION,
            "kubeletVersion": version,
            "kubeProxyVersion": "",
            "operatingSystem": "linux",
            "architecture": _ARCH.get(platform.machine(), platform.machine()),
        },
    }


def register(kube: Kube, config: AgentConfig, node_network: NodeNetwork) -> dict[str, Any]:
    """Create the Node, or update the labels and our taints of the one a previous run made."""
    manifest = node_manifest(config, node_network)
    path = f"/api/v1/nodes/{quote(config.node_name)}"
    existing = kube.get(path)
    if existing is None:
        return kube.request("POST", "/api/v1/nodes", body=manifest)
    ours = {(t["key"], t["effect"]) for t in manifest["spec"]["taints"]}
    others = [t for t in existing.get("spec", {}).get("taints") or [] if (t["key"], t["effect"]) not in ours]
    # a JSON merge patch replaces the taint list: keep the controllers' taints, put ours back
    body = {
        "metadata": {"labels": manifest["metadata"]["labels"]},
        "spec": {"taints": others + manifest["spec"]["taints"]},
    }
    return kube.patch(path, body)


def post_status(
    kube: Kube, config: AgentConfig, kubelet_port: int, version: str, previous: dict[str, Any]
) -> dict[str, Any]:
    status = node_status(config, kubelet_port, version, previous)
    return kube.patch(
        f"/api/v1/nodes/{quote(config.node_name)}/status", {"status": status}, "application/strategic-merge-patch+json"
    )


def lease_holder(config: AgentConfig) -> str:
    """``<node>/<host>/<pid>``: which agent process renews the Lease, so a second one can tell."""
    return f"{config.node_name}/{socket.gethostname()}/{os.getpid()}"


def rival(kube: Kube, config: AgentConfig) -> str | None:
    """The holder of the node's Lease when it is another agent process still running on this host."""
    lease = kube.get(f"/apis/coordination.k8s.io/v1/namespaces/{LEASE_NAMESPACE}/leases/{quote(config.node_name)}")
    holder = str(((lease or {}).get("spec") or {}).get("holderIdentity") or "")
    parts = holder.split("/")
    if len(parts) != 3 or parts[1] != socket.gethostname() or not parts[2].isdigit() or int(parts[2]) == os.getpid():
        return None
    try:
        command = Path(f"/proc/{parts[2]}/cmdline").read_bytes()
    except OSError:
        return None  # that agent is gone: this one takes over (a restart)
    return holder if b"aidc_nodeagent" in command else None


def renew_lease(kube: Kube, config: AgentConfig, node_uid: str) -> None:
    """Renew (or create) the node's Lease: the heartbeat the node lifecycle controller watches."""
    path = f"/apis/coordination.k8s.io/v1/namespaces/{LEASE_NAMESPACE}/leases/{quote(config.node_name)}"
    spec = {
        "holderIdentity": lease_holder(config),
        "renewTime": micro_time(_now()),
        "leaseDurationSeconds": config.lease_seconds,
    }
    try:
        kube.patch(path, {"spec": spec})
    except ApiError as error:
        if error.status != 404:
            raise
        body = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {
                "name": config.node_name,
                "namespace": LEASE_NAMESPACE,
                "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": config.node_name, "uid": node_uid}],
            },
            "spec": spec,
        }
        kube.request("POST", f"/apis/coordination.k8s.io/v1/namespaces/{LEASE_NAMESPACE}/leases", body=body)


def api_version(kube: Kube) -> str:
    try:
        return str(kube.request("GET", "/version").get("gitVersion", "v0.0.0"))
    except ApiError:
        return "v0.0.0"
