"""Real nodes: containerd, runc and a kubelet per node, and one kube-proxy for the machine.

What each real node is (its name, bridge, addresses, folders, ports) and the configuration of each
of its components, as pure functions: the test bed starts what these describe, and a test can read
them without starting anything. The choices that matter on these machines are in FACTS ("Real
nodes") and hack/README.md; each is explained where it is made.

Addresses: node ``i`` has the bridge ``aidcbr<i>`` with 10.245.<i>.1/24, which is both its node IP and
its pods' gateway; its pods take the rest of that /24. 10.245.0.0/16 is the cluster's pod range,
apart from kwok's fake pod addresses (10.64.0.0/10), buildah's and podman's 10.88.0.0/16 and the
Service range 10.96.0.0/16.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aidc_testbed.components import SERVICE_CLUSTER_IP_RANGE

CLUSTER_CIDR = "10.245.0.0/16"
CLUSTER_DNS = "10.96.0.10"
CLUSTER_DOMAIN = "cluster.local"
NODE_NAME_PREFIX = "real-"
BRIDGE_PREFIX = "aidcbr"
# Real nodes carry this label; while kwok nodes share the bed, also a NoSchedule taint of the same key,
# so the kwok-based tests keep their fake nodes and the real ones run only what asks for them.
LABEL_REAL_NODE = "aidc.io/real-node"
SANDBOX_IMAGE = "registry.k8s.io/pause:3.10.2"  # containerd 2.4's default; built from pause.c (make images)
# The kubelet rewrites these at every start (protectKernelDefaults off); the bed puts them back.
KUBELET_SYSCTLS = ("vm.overcommit_memory", "kernel.panic", "kernel.panic_on_oops")


@dataclass(frozen=True)
class RealNode:
    """One real node of the bed: index ``index`` under ``root`` (the bed's ``realnodes/<name>``)."""

    index: int
    root: Path
    kubelet_port: int
    kubelet_healthz_port: int
    # containerd's root (content, snapshots, metadata) outlives the bed, as a machine's image store
    # does: the images of `make images` are imported once, not at every start (seconds per GB)
    image_store: Path

    @property
    def name(self) -> str:
        return f"{NODE_NAME_PREFIX}{self.index}"

    @property
    def bridge(self) -> str:
        return f"{BRIDGE_PREFIX}{self.index}"

    @property
    def pod_cidr(self) -> str:
        return f"10.245.{self.index}.0/24"

    @property
    def address(self) -> str:
        """The node IP: the bridge's address, where the kubelet listens and pods find their gateway."""
        return str(next(ipaddress.ip_network(self.pod_cidr).hosts()))

    @property
    def cgroup_root(self) -> str:
        """The node's own cgroup parent, so several kubelets on one machine never share ``kubepods``."""
        return f"/aidc-{self.name}"

    # -- folders -------------------------------------------------------------------------------

    @property
    def containerd_config(self) -> Path:
        return self.root / "containerd.toml"

    @property
    def containerd_root(self) -> Path:
        return self.image_store

    @property
    def containerd_state(self) -> Path:
        return self.root / "containerd" / "state"

    @property
    def containerd_socket(self) -> Path:
        return containerd_socket(self.root)

    @property
    def runc_root(self) -> Path:
        return self.root / "containerd" / "runc"

    @property
    def cni_bin(self) -> Path:
        return self.root / "cni" / "bin"

    @property
    def cni_conf(self) -> Path:
        return self.root / "cni" / "net.d"

    @property
    def kubelet_root(self) -> Path:
        return self.root / "kubelet"

    @property
    def kubelet_config(self) -> Path:
        return self.root / "kubelet-config.yaml"

    @property
    def kubelet_kubeconfig(self) -> Path:
        return self.root / "kubelet.kubeconfig"

    @property
    def pod_logs(self) -> Path:
        return self.root / "pod-logs"

    @property
    def resolv_conf(self) -> Path:
        return self.root / "resolv.conf"

    def folders(self) -> tuple[Path, ...]:
        """What the node's processes write under ``root`` (made before they start)."""
        return (
            self.containerd_root,
            self.containerd_state,
            self.runc_root,
            self.cni_bin,
            self.cni_conf,
            self.kubelet_root,
            self.pod_logs,
        )


def containerd_socket(node_root: Path) -> Path:
    """A node's containerd socket, from its folder alone (``down`` knows no more after a crash)."""
    return node_root / "containerd" / "containerd.sock"


CNI_PLUGINS = ("bridge", "host-local", "loopback", "portmap")


def containerd_toml(node: RealNode) -> str:
    """containerd 2.x (config version 3) for one node: its own root, state, socket, CNI and runc root.

    ``restrict_oom_score_adj``: these VMs lack CAP_SYS_RESOURCE, a negative oom_score_adj is refused
    and every sandbox would fail. NRI and the ``opt`` plugin are off (they write to /var/run/nri and
    /opt/containerd), network namespaces live under the node's state, CDI scans nothing.
    """
    runtime = "plugins.'io.containerd.cri.v1.runtime'"
    return f"""version = 3
root = '{node.containerd_root}'
state = '{node.containerd_state}'
disabled_plugins = ['io.containerd.nri.v1.nri', 'io.containerd.internal.v1.opt', 'io.containerd.internal.v1.tracing']

[grpc]
  address = '{node.containerd_socket}'

[ttrpc]
  address = '{node.containerd_socket}.ttrpc'

[metrics]
  address = ''

[plugins.'io.containerd.cri.v1.images']
  snapshotter = 'overlayfs'
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = '{SANDBOX_IMAGE}'

[{runtime}]
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  cdi_spec_dirs = []
  enable_criu = false
  [{runtime}.containerd]
    default_runtime_name = 'runc'
    [{runtime}.containerd.runtimes.runc]
      runtime_type = 'io.containerd.runc.v2'
      [{runtime}.containerd.runtimes.runc.options]
        BinaryName = 'runc'
        Root = '{node.runc_root}'
        SystemdCgroup = false
  [{runtime}.cni]
    bin_dirs = ['{node.cni_bin}']
    conf_dir = '{node.cni_conf}'
    max_conf_num = 1

[plugins.'io.containerd.grpc.v1.cri']
  disable_tcp_service = true
  stream_server_address = '127.0.0.1'
  stream_server_port = '0'
"""


def cni_config(node: RealNode) -> dict[str, Any]:
    """The pod network: the node's bridge (made by the bed, reused by the plugin), host-local IPAM.

    ``hairpinMode`` lets a pod reach itself through its own Service; ``ipMasq`` is off because
    nothing leaves the machine (the bed drops forwarding off the bridges).
    """
    return {
        "cniVersion": "1.0.0",
        "name": "aidc-testbed",
        "plugins": [
            {
                "type": "bridge",
                "bridge": node.bridge,
                "isGateway": True,
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": node.pod_cidr, "gateway": node.address}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": str(node.root / "cni" / "ipam"),
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }


def kubelet_configuration(
    node: RealNode, ca_cert: Path, serving: tuple[Path, Path], *, tainted: bool
) -> dict[str, Any]:
    """The KubeletConfiguration of one node.

    The API server is authenticated by the bed's CA and authorized by webhook (SubjectAccessReview),
    never anonymously. Eviction and image GC thresholds are low: the bed shares a developer's disk,
    and a kubelet that evicts because that disk is 90 % full tests nothing of aidc.
    """
    cert, key = serving
    config: dict[str, Any] = {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": node.address,
        "port": node.kubelet_port,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": node.kubelet_healthz_port,
        "tlsCertFile": str(cert),
        "tlsPrivateKeyFile": str(key),
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(ca_cert)},
        },
        "authorization": {"mode": "Webhook"},
        "containerRuntimeEndpoint": f"unix://{node.containerd_socket}",
        "cgroupDriver": "cgroupfs",
        "cgroupRoot": node.cgroup_root,
        "failCgroupV1": False,  # these VMs are cgroup v1 (hybrid); 1.37 refuses v1 by default
        "failSwapOn": False,
        "clusterDNS": [CLUSTER_DNS],
        "clusterDomain": CLUSTER_DOMAIN,
        "resolvConf": str(node.resolv_conf),
        "podLogsDir": str(node.pod_logs),
        "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%", "imagefs.available": "1%"},
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "serializeImagePulls": False,
        "syncFrequency": "10s",
        "nodeStatusUpdateFrequency": "10s",
        "rotateCertificates": False,
        "serverTLSBootstrap": False,
        "enforceNodeAllocatable": ["pods"],
        "shutdownGracePeriod": "0s",
        "maxPods": 110,
    }
    if tainted:
        config["registerWithTaints"] = [{"key": LABEL_REAL_NODE, "value": "true", "effect": "NoSchedule"}]
    return config


def kubelet_argv(node: RealNode, kubelet: Path) -> list[str]:
    return [
        str(kubelet),
        f"--config={node.kubelet_config}",
        f"--kubeconfig={node.kubelet_kubeconfig}",
        f"--root-dir={node.kubelet_root}",
        f"--cert-dir={node.kubelet_root / 'pki'}",
        f"--hostname-override={node.name}",
        f"--node-ip={node.address}",
        f"--node-labels={LABEL_REAL_NODE}=true",
        "--v=1",
    ]


def containerd_argv(node: RealNode, containerd: Path) -> list[str]:
    return [str(containerd), f"--config={node.containerd_config}", "--log-level=warn"]


def kube_proxy_configuration(node: RealNode, kubeconfig: Path, ports: tuple[int, int]) -> dict[str, Any]:
    """kube-proxy in iptables mode, leaving the host's own settings alone.

    One runs per machine (the nodes share its network namespace, and two would fight over the same
    chains). Zero conntrack sizes and timeouts keep it from writing the host's conntrack sysctls;
    ``localhostNodePorts: false`` from setting route_localnet; NodePorts answer on the bridge only.
    """
    healthz, metrics = ports
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": str(kubeconfig)},
        "hostnameOverride": node.name,
        "bindAddress": node.address,
        "healthzBindAddress": f"127.0.0.1:{healthz}",
        "metricsBindAddress": f"127.0.0.1:{metrics}",
        "mode": "iptables",
        "clusterCIDR": CLUSTER_CIDR,
        "nodePortAddresses": [f"{node.address}/32"],
        "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s"},
        "iptables": {"localhostNodePorts": False},
    }


def kube_proxy_argv(config_file: Path, kube_proxy: Path) -> list[str]:
    return [str(kube_proxy), f"--config={config_file}", "--v=1"]


def service_route() -> tuple[str, str]:
    """The Service range and the bridge it is routed onto, so the machine's own calls to a ClusterIP
    leave from the bridge's address and stay on the machine."""
    return SERVICE_CLUSTER_IP_RANGE, f"{BRIDGE_PREFIX}0"


def placement() -> dict[str, Any]:
    """``nodeSelector`` and ``tolerations`` that put a pod on a real node (TrainingJob and
    InferenceService take them as ``placement``)."""
    return {
        "nodeSelector": {LABEL_REAL_NODE: "true"},
        "tolerations": [{"key": LABEL_REAL_NODE, "operator": "Exists", "effect": "NoSchedule"}],
    }
