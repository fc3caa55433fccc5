"""The agent's Node as it registers it, and pod addresses of its subnet."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from aidc_nodeagent.config import AgentConfig, parse_taint
from aidc_nodeagent.network import AddressPool, NetworkError, NodeNetwork
from aidc_nodeagent.node import node_manifest, node_status

NETWORK = NodeNetwork("aidctest", ipaddress.IPv4Network("10.244.9.0/24"))


def config(**extra: object) -> AgentConfig:
    return AgentConfig(kubeconfig=Path("k"), state_dir=Path("s"), **extra)  # type: ignore[arg-type]


def test_the_node_is_the_agents_not_kwoks_and_only_invited_pods_land_on_it() -> None:
    node = node_manifest(config(gpus=2, cpu="8"), NETWORK)
    labels, annotations = node["metadata"]["labels"], node["metadata"].get("annotations", {})
    assert labels["aidc.io/node-agent"] == "true" and labels["nvidia.com/gpu.present"] == "true"
    assert "aidc.io/kwok-kubelet" not in labels and "kwok.x-k8s.io/node" not in annotations
    assert node["spec"]["taints"] == [{"key": "aidc.io/node-agent", "value": "true", "effect": "NoSchedule"}]
    assert node["spec"]["podCIDR"] == "10.244.9.0/24"
    status = node_status(config(gpus=2, cpu="8"), 10250, "v1.37.2", {})
    assert status["allocatable"]["nvidia.com/gpu"] == "2" and status["allocatable"]["cpu"] == "8"
    assert status["daemonEndpoints"] == {"kubeletEndpoint": {"Port": 10250}}
    assert status["addresses"] == [{"type": "InternalIP", "address": "127.0.0.1"}]
    assert {c["type"]: c["status"] for c in status["conditions"]}["Ready"] == "True"


def test_ready_keeps_its_transition_time_while_it_stays_true() -> None:
    first = node_status(config(), 1, "v", {})
    ready = {c["type"]: c for c in first["conditions"]}["Ready"]
    ready["lastTransitionTime"] = "2020-01-01T00:00:00Z"
    again = {c["type"]: c for c in node_status(config(), 1, "v", first)["conditions"]}["Ready"]
    assert again["lastTransitionTime"] == "2020-01-01T00:00:00Z"


@pytest.mark.parametrize("text", ["nokey", "k=v:Sometimes"])
def test_bad_taints_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="taint"):
        parse_taint(text)


def test_addresses_skip_the_gateway_are_stable_per_pod_and_not_reused_at_once() -> None:
    pool = AddressPool(NETWORK)
    first, second = pool.allocate("a"), pool.allocate("b")
    assert first == "10.244.9.2" and second == "10.244.9.3" and pool.allocate("a") == first
    pool.release("a")
    assert pool.allocate("c") == "10.244.9.4"  # the freed one waits its turn
    resumed = AddressPool(NETWORK, {"b": "10.244.9.3", "c": "10.244.9.4"})  # a restarted agent
    assert resumed.allocate("d") == "10.244.9.5"


def test_a_full_subnet_says_so() -> None:
    pool = AddressPool(NodeNetwork("x", ipaddress.IPv4Network("10.244.9.0/29")))
    for uid in "abcde":
        pool.allocate(uid)
    with pytest.raises(NetworkError, match="full"):
        pool.allocate("f")
