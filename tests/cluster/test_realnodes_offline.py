"""What a real node is made of, checked without starting one: the configurations the bed writes for
containerd, the CNI bridge, the kubelet and kube-proxy, the API server's flags with and without real
nodes, and the host journal that `down` undoes."""

from __future__ import annotations

import subprocess
import tomllib
from pathlib import Path

import pytest

from aidc_testbed import TestbedConfig, machine
from aidc_testbed.clusterdns import COREFILE, manifests
from aidc_testbed.components import Ports, command_lines
from aidc_testbed.host import HostJournal, mounts_under
from aidc_testbed.layout import Layout
from aidc_testbed.pki import API_SERVER_IPS
from aidc_testbed.process import RunningProcess
from aidc_testbed.realnodes import (
    CLUSTER_DNS,
    LABEL_REAL_NODE,
    RealNode,
    cni_config,
    containerd_toml,
    kube_proxy_configuration,
    kubelet_configuration,
    placement,
)
from aidc_testbed.state import TestbedState

NODE = RealNode(1, Path("/bed/realnodes/real-1"), 10250, 10248, Path("/store/real-1"))
PORTS = Ports(2379, 2380, 6443, 10257, 10259, 10247)


def test_a_real_node_has_its_own_bridge_addresses_and_cgroup_root() -> None:
    assert (NODE.name, NODE.bridge, NODE.pod_cidr, NODE.address) == ("real-1", "aidcbr1", "10.245.1.0/24", "10.245.1.1")
    assert NODE.cgroup_root == "/aidc-real-1"
    assert all(str(folder).startswith((str(NODE.root), str(NODE.image_store))) for folder in NODE.folders())
    assert NODE.containerd_root == NODE.image_store  # images outlive the bed; nothing else does


def test_containerd_keeps_to_the_node_folder_and_never_lowers_oom_scores() -> None:
    config = tomllib.loads(containerd_toml(NODE))
    assert config["version"] == 3 and config["root"] == str(NODE.image_store)
    assert config["state"].startswith(str(NODE.root)) and config["grpc"]["address"].startswith(str(NODE.root))
    runtime = config["plugins"]["io.containerd.cri.v1.runtime"]
    assert runtime["restrict_oom_score_adj"] is True and runtime["netns_mounts_under_state_dir"] is True
    assert runtime["cni"]["bin_dirs"] == [str(NODE.cni_bin)] and runtime["cdi_spec_dirs"] == []
    assert runtime["containerd"]["runtimes"]["runc"]["options"]["Root"] == str(NODE.runc_root)
    assert "io.containerd.nri.v1.nri" in config["disabled_plugins"]


def test_pods_are_bridged_on_the_node_subnet_with_hairpin_and_no_masquerade() -> None:
    bridge = cni_config(NODE)["plugins"][0]
    assert (bridge["bridge"], bridge["hairpinMode"], bridge["ipMasq"]) == ("aidcbr1", True, False)
    assert bridge["ipam"]["ranges"] == [[{"subnet": "10.245.1.0/24", "gateway": "10.245.1.1"}]]


def test_the_kubelet_trusts_only_certificates_and_webhooks_and_keeps_its_own_cgroups() -> None:
    serving = (Path("/pki/k.crt"), Path("/pki/k.key"))
    config = kubelet_configuration(NODE, Path("/pki/ca.crt"), serving, tainted=True)
    assert config["authentication"]["anonymous"] == {"enabled": False}
    assert config["authentication"]["webhook"] == {"enabled": True}
    assert config["authorization"] == {"mode": "Webhook"} and config["readOnlyPort"] == 0
    assert (config["failCgroupV1"], config["cgroupRoot"], config["clusterDNS"]) == (
        False,
        "/aidc-real-1",
        [CLUSTER_DNS],
    )
    assert config["registerWithTaints"] == [{"key": LABEL_REAL_NODE, "value": "true", "effect": "NoSchedule"}]
    assert "registerWithTaints" not in kubelet_configuration(NODE, Path("/ca"), serving, tainted=False)


def test_kube_proxy_leaves_the_host_sysctls_alone() -> None:
    config = kube_proxy_configuration(NODE, Path("/k"), (1, 2))
    assert config["conntrack"]["maxPerCore"] == 0 and config["conntrack"]["tcpEstablishedTimeout"] == "0s"
    assert config["iptables"]["localhostNodePorts"] is False
    assert config["nodePortAddresses"] == ["10.245.1.1/32"]


def test_the_api_server_is_reachable_from_pods_only_with_real_nodes(tmp_path: Path) -> None:
    kwok_only = command_lines(TestbedConfig(state_dir=tmp_path), Layout(tmp_path), PORTS)["kube-apiserver"]
    assert "--bind-address=127.0.0.1" in kwok_only and "--endpoint-reconciler-type=none" in kwok_only
    real = command_lines(TestbedConfig(state_dir=tmp_path, real_nodes=1), Layout(tmp_path), PORTS)["kube-apiserver"]
    assert "--advertise-address=10.245.0.1" in real and "--bind-address=0.0.0.0" in real
    assert not any(flag.startswith("--endpoint-reconciler-type") for flag in real)
    assert any(flag.startswith("--kubelet-client-certificate=") for flag in real)
    assert "10.245.0.1" in API_SERVER_IPS  # the serving certificate names the advertised address


def test_cluster_dns_answers_the_cluster_only_and_runs_where_real_pods_run() -> None:
    assert "forward" not in COREFILE and "loop" not in COREFILE and "kubernetes cluster.local" in COREFILE
    by_kind = {m["kind"]: m for m in manifests("localhost/coredns:test")}
    assert by_kind["Service"]["spec"]["clusterIP"] == CLUSTER_DNS
    pod = by_kind["Deployment"]["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == placement()["nodeSelector"]
    assert pod["containers"][0]["securityContext"]["runAsNonRoot"] is True


def test_the_host_journal_survives_a_process_and_lists_mounts_deepest_first(tmp_path: Path) -> None:
    journal = HostJournal(tmp_path / "host.json", sysctls={"kernel.panic": "1"}, bridges=["aidcbr0"])
    journal.save()
    loaded = HostJournal.load(tmp_path / "host.json")
    assert (loaded.sysctls, loaded.bridges, loaded.nft_tables) == ({"kernel.panic": "1"}, ["aidcbr0"], None)
    assert HostJournal.load(tmp_path / "missing.json").is_empty()
    points = mounts_under(["/proc"])
    assert points and points[-1] == "/proc"  # children before their parent


def _bed_running(folder: Path, binary: str, pid: int) -> Layout:
    """A bed whose state names one running real-node process (``pid``, started from ``binary``)."""
    layout = Layout(folder)
    folder.mkdir(parents=True, exist_ok=True)
    running = [RunningProcess("kubelet-real-0", pid, binary, str(folder / "kubelet.log"))]
    TestbedState(ports=Ports(1, 2, 3, 4, 5, 6), config={}, processes=running).save(layout.state_file)
    return layout


def test_one_bed_runs_real_nodes_on_a_machine_and_a_gone_one_is_taken_over(tmp_path: Path) -> None:
    claim_file = tmp_path / "run" / "real-nodes"
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        first = _bed_running(tmp_path / "first", "sleep", sleeper.pid)
        second = Layout(tmp_path / "second")
        machine.claim(first, claim_file)
        machine.claim(first, claim_file)  # the same bed again: its own claim
        with pytest.raises(machine.MachineTakenError, match=r"another test bed runs real nodes .*first.*down --dir"):
            machine.claim(second, claim_file)
        assert machine.other_owner(second, claim_file) == first.root.resolve()
        assert machine.other_owner(first, claim_file) is None
        machine.release(second, claim_file)  # not its claim: nothing changes
        assert claim_file.read_text() == str(first.root.resolve())
    finally:
        sleeper.kill()
        sleeper.wait()
    machine.claim(second, claim_file)  # the first bed's nodes are gone: the machine is free
    assert claim_file.read_text() == str(second.root.resolve())
    machine.release(second, claim_file)
    assert not claim_file.parent.exists()


def test_a_bed_attached_by_its_kubeconfig_knows_what_it_was_started_with(tmp_path: Path) -> None:
    """AIDC_KUBECONFIG of a bed with real nodes: the e2e tests must see its real nodes, not a default of none."""
    from aidc_testbed import Testbed

    config = TestbedConfig(state_dir=tmp_path, real_nodes=2, nodes=1, volumes=3, eviction_toleration_seconds=7)
    assert TestbedConfig.from_json(config.to_json()) == config
    TestbedState(ports=PORTS, config=config.to_json()).save(Layout(tmp_path).state_file)
    assert Testbed.attach(kubeconfig=tmp_path / "kubeconfig").config == config
    assert Testbed.attach(kubeconfig=tmp_path / "elsewhere" / "kubeconfig").config.real_nodes == 0


def test_a_real_node_is_found_by_name_only_among_the_beds_own(tmp_path: Path) -> None:
    from aidc_testbed.realnode_lifecycle import node_named

    config, layout = TestbedConfig(state_dir=tmp_path, real_nodes=2), Layout(tmp_path)
    (layout.real_nodes / "real-1").mkdir(parents=True)
    node = node_named(config, layout, "real-1")
    assert (node.name, node.root) == ("real-1", layout.real_nodes / "real-1")
    assert node.image_store == config.image_store / "real-1"
    for stranger in ("real-2", "kwok-gpu-0"):
        with pytest.raises(ValueError, match="not a real node"):
            node_named(config, layout, stranger)
