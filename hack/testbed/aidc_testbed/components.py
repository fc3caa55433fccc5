"""The command line of each control-plane component.

Pure functions from the configuration, the file layout and the ports to an argv, so what the
test bed runs can be read in one place and checked without starting anything. Flags follow what
kubeadm and kwokctl pass, minus what a single-machine loopback cluster does not need (leader
election, cloud providers, aggregation front proxies).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

from aidc_testbed.config import TestbedConfig
from aidc_testbed.kwok import KUBELET_UP, LABEL_KUBELET
from aidc_testbed.layout import Layout
from aidc_testbed.pki import API_ADVERTISE_ADDRESS, KUBELET_CLIENT, Pki

SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
SERVICE_CLUSTER_IP_RANGE = "10.96.0.0/16"
CLUSTER_NAME = "aidc-testbed"

# Start order; `down` stops them in reverse.
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")


@dataclass(frozen=True)
class Ports:
    """The loopback ports of one test bed, picked at start (see :mod:`aidc_testbed.ports`)."""

    etcd_client: int
    etcd_peer: int
    apiserver: int
    controller_manager: int
    scheduler: int
    kwok: int

    @property
    def server(self) -> str:
        """The API server's URL."""
        return f"https://127.0.0.1:{self.apiserver}"


def _binary(config: TestbedConfig, name: str) -> str:
    return str(config.tools_dir / name)


def etcd(config: TestbedConfig, layout: Layout, ports: Ports) -> list[str]:
    """A one-member etcd. fsync is off: the data lives only as long as a test session."""
    client = f"http://127.0.0.1:{ports.etcd_client}"
    peer = f"http://127.0.0.1:{ports.etcd_peer}"
    return [
        _binary(config, "etcd"),
        "--name=testbed",
        f"--data-dir={layout.etcd_data}",
        f"--listen-client-urls={client}",
        f"--advertise-client-urls={client}",
        f"--listen-peer-urls={peer}",
        f"--initial-advertise-peer-urls={peer}",
        f"--initial-cluster=testbed={peer}",
        "--initial-cluster-state=new",
        "--unsafe-no-fsync=true",
        "--log-level=warn",
    ]


def kube_apiserver(config: TestbedConfig, layout: Layout, ports: Ports) -> list[str]:
    """The API server with Node+RBAC authorization, token issuing and the stock admission chain.

    PodSecurity and ValidatingAdmissionPolicy are in the default plugin set; NodeRestriction is
    added as in every kubeadm cluster. The default NoExecute tolerations are short so a failed
    node's pods are evicted within seconds, not five minutes.
    """
    pki = Pki(layout.pki)
    return [
        _binary(config, "kube-apiserver"),
        f"--etcd-servers=http://127.0.0.1:{ports.etcd_client}",
        *_reachability_flags(config, layout),
        f"--secure-port={ports.apiserver}",
        f"--tls-cert-file={pki.serving_cert}",
        f"--tls-private-key-file={pki.serving_key}",
        f"--client-ca-file={pki.ca_cert}",
        # No front proxy runs, but a request-header CA lets the controller manager and the
        # scheduler load their delegated authentication without complaining every second.
        f"--requestheader-client-ca-file={pki.ca_cert}",
        "--requestheader-allowed-names=front-proxy-client",
        "--requestheader-username-headers=X-Remote-User",
        "--requestheader-group-headers=X-Remote-Group",
        "--requestheader-extra-headers-prefix=X-Remote-Extra-",
        "--authorization-mode=Node,RBAC",
        "--enable-admission-plugins=NodeRestriction",
        f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
        f"--service-account-key-file={pki.service_account_pub}",
        f"--service-account-signing-key-file={pki.service_account_key}",
        f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
        "--allow-privileged=true",
        f"--default-not-ready-toleration-seconds={config.eviction_toleration_seconds}",
        f"--default-unreachable-toleration-seconds={config.eviction_toleration_seconds}",
        "--profiling=false",
    ]


def _reachability_flags(config: TestbedConfig, layout: Layout) -> list[str]:
    """Where the API server listens and what it advertises.

    Without real nodes: loopback only, and the `kubernetes` Service keeps no endpoints (a loopback
    address may not be advertised, and no pod runs a process that would call it). With real nodes,
    pods reach it through that Service: it advertises the first node's bridge address (kube-proxy
    routes 10.96.0.1 there), listens where pods reach it, and reaches the kubelets by their node IP
    with a client certificate of its own, which the kubelets verify and authorize by webhook.
    """
    if not config.real_nodes:
        return ["--advertise-address=127.0.0.1", "--endpoint-reconciler-type=none", "--bind-address=127.0.0.1"]
    pki = Pki(layout.pki)
    return [
        f"--advertise-address={API_ADVERTISE_ADDRESS}",
        "--bind-address=0.0.0.0",
        f"--kubelet-client-certificate={pki.client_cert(KUBELET_CLIENT)}",
        f"--kubelet-client-key={pki.client_key(KUBELET_CLIENT)}",
        f"--kubelet-certificate-authority={pki.ca_cert}",
        "--kubelet-preferred-address-types=InternalIP,Hostname",
    ]


def _serving_flags(layout: Layout, port: int, kubeconfig: str) -> list[str]:
    pki = Pki(layout.pki)
    return [
        f"--kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        "--bind-address=127.0.0.1",
        f"--secure-port={port}",
        f"--tls-cert-file={pki.serving_cert}",
        f"--tls-private-key-file={pki.serving_key}",
        "--leader-elect=false",
        "--profiling=false",
    ]


def kube_controller_manager(config: TestbedConfig, layout: Layout, ports: Ports) -> list[str]:
    """Every default controller, each with its own ServiceAccount's credentials (as kubeadm)."""
    pki = Pki(layout.pki)
    kubeconfig = str(layout.component_kubeconfigs / "kube-controller-manager")
    return [
        _binary(config, "kube-controller-manager"),
        *_serving_flags(layout, ports.controller_manager, kubeconfig),
        "--controllers=*",
        f"--cluster-name={CLUSTER_NAME}",
        "--use-service-account-credentials=true",
        f"--service-account-private-key-file={pki.service_account_key}",
        f"--root-ca-file={pki.ca_cert}",
        f"--cluster-signing-cert-file={pki.ca_cert}",
        f"--cluster-signing-key-file={pki.ca_key}",
    ]


def kube_scheduler(config: TestbedConfig, layout: Layout, ports: Ports) -> list[str]:
    """The default scheduler, so placement (GPUs, taints, affinity) is the real algorithm."""
    kubeconfig = str(layout.component_kubeconfigs / "kube-scheduler")
    return [_binary(config, "kube-scheduler"), *_serving_flags(layout, ports.scheduler, kubeconfig)]


def kwok(config: TestbedConfig, layout: Layout, ports: Ports) -> list[str]:
    """The kwok controller, playing the kubelet of every node labelled ``aidc.io/kwok-kubelet=up``."""
    return [
        _binary(config, "kwok"),
        f"--kubeconfig={layout.component_kubeconfigs / 'kwok'}",
        f"--config={','.join(str(p) for p in config.kwok_stages)}",
        f"--manage-nodes-with-label-selector={LABEL_KUBELET}={KUBELET_UP}",
        "--node-lease-duration-seconds=0",
        f"--server-address=127.0.0.1:{ports.kwok}",
    ]


def reclaimer(layout: Layout) -> list[str]:
    """The pool's reclaimer (:mod:`aidc_testbed.reclaimer`), on this interpreter, as the admin."""
    return [
        sys.executable,
        "-m",
        "aidc_testbed.reclaimer",
        f"--kubeconfig={layout.kubeconfig}",
        f"--volumes-dir={layout.volumes}",
    ]


def reclaimer_env() -> dict[str, str]:
    """This environment, with the folder that holds :mod:`aidc_testbed` on the reclaimer's path."""
    package_parent = str(Path(__file__).resolve().parent.parent)
    inherited = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": package_parent + (os.pathsep + inherited if inherited else "")}


def command_lines(config: TestbedConfig, layout: Layout, ports: Ports) -> dict[str, list[str]]:
    """Every component's argv, in start order."""
    builders = {
        "etcd": etcd,
        "kube-apiserver": kube_apiserver,
        "kube-controller-manager": kube_controller_manager,
        "kube-scheduler": kube_scheduler,
        "kwok": kwok,
    }
    return {name: builders[name](config, layout, ports) for name in COMPONENTS}
