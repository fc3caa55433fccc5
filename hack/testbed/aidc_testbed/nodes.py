"""The fake GPU nodes of the test bed, and how one of them fails and comes back.

A node is an ordinary Node object whose kubelet kwok plays. It advertises ``nvidia.com/gpu``
like a node running NVIDIA's device plugin and GPU feature discovery, so the real scheduler
places GPU pods on it by the real rules.

A failed node is a node whose kubelet died: kwok stops playing it (its label
``aidc.io/kwok-kubelet`` turns ``down``) and its Ready condition turns Unknown, as the node
lifecycle controller would write it after the grace period; writing it at once spares a test
the 50 s wait, and marks the node's pods not ready as that controller does. From there the
cluster reacts by itself: NoSchedule and NoExecute taints, then the pods are evicted after the
default toleration and left Terminating, because no kubelet confirms their end. Recovery
restores the label; kwok re-initialises the node and completes those deletions.
"""

from __future__ import annotations

import contextlib
import datetime
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from aidc_testbed.config import TestbedConfig
from aidc_testbed.kwok import ANNOTATION_FAKE_NODE, KUBELET_DOWN, KUBELET_UP, LABEL_KUBELET

NODE_NAME_PREFIX = "kwok-gpu-"
GPU_RESOURCE = "nvidia.com/gpu"
GPU_PRODUCT = "NVIDIA-H100-80GB-HBM3"
ZONES = ("zone-a", "zone-b")


def node_name(index: int) -> str:
    return f"{NODE_NAME_PREFIX}{index}"


def pod_cidr(index: int) -> str:
    """A /24 of pod addresses per node (kwok hands pod IPs out of ``spec.podCIDR``)."""
    return f"10.{64 + index // 256}.{index % 256}.0/24"


def node_manifest(index: int, config: TestbedConfig) -> dict[str, Any]:
    """The Node object of fake node ``index``, status included (a Node may carry one on create)."""
    name = node_name(index)
    labels = {
        "type": "kwok",
        "kubernetes.io/hostname": name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "topology.kubernetes.io/zone": ZONES[index % len(ZONES)],
        LABEL_KUBELET: KUBELET_UP,
    }
    resources = {
        "cpu": config.cpu_per_node,
        "memory": config.memory_per_node,
        "pods": str(config.pods_per_node),
        "ephemeral-storage": "1Ti",
    }
    if config.gpus_per_node:
        labels |= {
            "nvidia.com/gpu.present": "true",
            "nvidia.com/gpu.count": str(config.gpus_per_node),
            "nvidia.com/gpu.product": GPU_PRODUCT,
        }
        resources[GPU_RESOURCE] = str(config.gpus_per_node)
    cidr = pod_cidr(index)
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": labels,
            "annotations": {ANNOTATION_FAKE_NODE: "fake", "node.alpha.kubernetes.io/ttl": "0"},
        },
        "spec": {"podCIDR": cidr, "podCIDRs": [cidr]},
        "status": {"capacity": resources, "allocatable": dict(resources)},
    }


def create_nodes(api: client.ApiClient, config: TestbedConfig) -> list[str]:
    """Create the fake nodes; kwok makes them Ready. Returns their names."""
    core = client.CoreV1Api(api)
    names = []
    for index in range(config.nodes):
        core.create_node(body=node_manifest(index, config))
        names.append(node_name(index))
    return names


def is_ready(node: client.V1Node) -> bool:
    conditions = (node.status.conditions if node.status else None) or []
    return any(c.type == "Ready" and c.status == "True" for c in conditions)


def fail_node(api: client.ApiClient, name: str) -> None:
    """Kill the fake kubelet of node ``name`` and mark the node unreachable at once."""
    client.CoreV1Api(api).patch_node(name, body={"metadata": {"labels": {LABEL_KUBELET: KUBELET_DOWN}}})
    mark_unreachable(api, name)


def mark_unreachable(api: client.ApiClient, name: str) -> None:
    """What the node lifecycle controller writes once a node's kubelet has been silent for its grace
    period (50 s): Ready Unknown, and its pods not ready. From there taints and evictions are the cluster's."""
    core = client.CoreV1Api(api)
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    condition = {
        "type": "Ready",
        "status": "Unknown",
        "reason": "NodeStatusUnknown",
        "message": "Kubelet stopped posting node status.",
        "lastHeartbeatTime": now,
        "lastTransitionTime": now,
    }
    core.patch_node_status(name, body={"status": {"conditions": [condition]}})
    # What the node lifecycle controller does when it sees a node turn unready itself
    # (MarkPodsNotReady); it skips that step for a node that is already Unknown when first seen.
    pods = core.list_pod_for_all_namespaces(field_selector=f"spec.nodeName={name}").items
    for pod in pods:
        if not (pod.metadata and pod.metadata.name and pod.metadata.namespace):
            continue
        if pod.status and pod.status.phase in ("Succeeded", "Failed"):
            continue
        ready = {"type": "Ready", "status": "False", "lastTransitionTime": now}
        with contextlib.suppress(ApiException):  # a pod deleted meanwhile needs nothing
            core.patch_namespaced_pod_status(
                pod.metadata.name, pod.metadata.namespace, body={"status": {"conditions": [ready]}}
            )


def recover_node(api: client.ApiClient, name: str) -> None:
    """Bring the fake kubelet of node ``name`` back; kwok marks the node Ready again."""
    core = client.CoreV1Api(api)
    core.patch_node(name, body={"metadata": {"labels": {LABEL_KUBELET: KUBELET_UP}}})
