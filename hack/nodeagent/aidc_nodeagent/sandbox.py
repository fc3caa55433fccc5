"""Pod sandboxes: what a pod's containers share (address, network namespace, hosts file, GPUs).

A sandbox is made before the first container starts and removed when the pod has ended or is
deleted, as a container runtime's pod sandbox is. Its record (``pod.json``) is what a restarted
agent reads to adopt the pod: the address stays, the namespace is still there, the GPUs stay
assigned.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from aidc_nodeagent import hostsfile, network
from aidc_nodeagent.apiservice import ApiService
from aidc_nodeagent.config import GPU_RESOURCE
from aidc_nodeagent.layout import PodDir, read_json, write_json

_log = logging.getLogger(__name__)
SERVICE_NAMES = "kubernetes kubernetes.default kubernetes.default.svc kubernetes.default.svc.cluster.local"


@dataclass
class PodRecord:
    """A pod's sandbox, as kept in its folder."""

    uid: str
    namespace: str
    name: str
    hostname: str
    subdomain: str | None
    address: str
    netns: str | None
    gpus: list[int] = field(default_factory=list)
    start_time: str = ""
    removed: bool = False  # the sandbox is gone (pod ended or deleted); the folder stays for its logs

    @property
    def netns_path(self) -> Path | None:
        return network.netns_path(self.netns) if self.netns else None

    def entry(self) -> hostsfile.HostEntry:
        return hostsfile.HostEntry(self.address, self.hostname, self.subdomain, self.namespace)

    def save(self, pod_dir: PodDir) -> None:
        write_json(pod_dir.record, asdict(self))

    @classmethod
    def load(cls, pod_dir: PodDir) -> PodRecord | None:
        data = read_json(pod_dir.record)
        return cls(**data) if isinstance(data, dict) else None


def gpu_request(pod: dict[str, Any]) -> int:
    """GPUs the pod asks for (limits, as the device plugin counts them; init containers may ask more)."""

    def of(container: dict[str, Any]) -> int:
        resources = container.get("resources") or {}
        return int((resources.get("limits") or resources.get("requests") or {}).get(GPU_RESOURCE, 0))

    spec = pod["spec"]
    main = sum(of(c) for c in spec.get("containers") or [])
    init = max((of(c) for c in spec.get("initContainers") or []), default=0)
    return max(main, init)


def pod_hostname(pod: dict[str, Any]) -> str:
    """``spec.hostname``, else the pod's name (truncated to 63 characters, as a kubelet does)."""
    return str(pod["spec"].get("hostname") or pod["metadata"]["name"])[:63].rstrip("-.")


class Sandboxes:
    """The node's sandboxes: addresses, GPUs and hosts files shared by every pod worker."""

    def __init__(self, node_network: network.NodeNetwork, api_service: ApiService, gpus: int) -> None:
        self.network = node_network
        self._api_service = api_service
        self._gpus = gpus
        self._lock = threading.RLock()
        self._live: dict[str, tuple[PodRecord, PodDir]] = {}
        self._pool = network.AddressPool(node_network)

    @property
    def service_address(self) -> tuple[str, int]:
        return self._api_service.address, self._api_service.port

    def _free_gpus(self) -> list[int]:
        used = {g for record, _ in self._live.values() for g in record.gpus}
        return [g for g in range(self._gpus) if g not in used]

    def create(self, pod: dict[str, Any], pod_dir: PodDir, start_time: str) -> PodRecord:
        """Address, GPUs, network namespace, hosts file and API Service for a new pod."""
        meta = pod["metadata"]
        uid = meta["uid"]
        with self._lock:
            wanted = gpu_request(pod)
            free = self._free_gpus()
            if wanted > len(free):
                raise network.NetworkError(f"{wanted} GPUs asked, {len(free)} free on this node")
            record = PodRecord(
                uid=uid,
                namespace=meta["namespace"],
                name=meta["name"],
                hostname=pod_hostname(pod),
                subdomain=pod["spec"].get("subdomain"),
                address=self._pool.allocate(uid),
                netns=None,
                gpus=free[:wanted],
                start_time=start_time,
            )
            pod_dir.path.mkdir(parents=True, exist_ok=True)
            pod_dir.resolv_conf.write_text(hostsfile.RESOLV_CONF)
            record.save(pod_dir)  # the address is taken even if what follows fails
            self._live[uid] = (record, pod_dir)
        try:
            record.netns = network.create_sandbox(self.network, uid, record.address, [self._api_service.address])
            record.save(pod_dir)
            self._api_service.open(uid, network.netns_path(record.netns))
        except BaseException:
            self.remove(record, pod_dir)
            raise
        self._rewrite_hosts()
        return record

    def adopt(self, record: PodRecord, pod_dir: PodDir) -> bool:
        """Take back a sandbox a previous agent made; False when its namespace is gone."""
        if record.netns is None or not network.netns_path(record.netns).exists():
            return False
        with self._lock:
            self._pool = network.AddressPool(
                self.network, {r.uid: r.address for r, _ in self._live.values()} | {record.uid: record.address}
            )
            self._live[record.uid] = (record, pod_dir)
        self._api_service.open(record.uid, network.netns_path(record.netns))
        self._rewrite_hosts()
        return True

    def remove(self, record: PodRecord, pod_dir: PodDir) -> None:
        """Tear the sandbox down; the pod's folder (logs) stays."""
        with self._lock:
            self._live.pop(record.uid, None)
            self._pool.release(record.uid)
        self._api_service.close(record.uid)
        if record.netns:
            network.delete_sandbox(record.netns)
        record.removed = True
        with contextlib.suppress(OSError):
            record.save(pod_dir)
        self._rewrite_hosts()

    def _rewrite_hosts(self) -> None:
        with self._lock:
            live = list(self._live.values())
            entries = [record.entry() for record, _ in live]
            services = {self._api_service.address: SERVICE_NAMES}
            for record, pod_dir in live:
                try:
                    hostsfile.write_in_place(pod_dir.hosts, hostsfile.render(record.entry(), entries, services))
                except OSError as error:
                    _log.warning("hosts file of %s/%s not written: %s", record.namespace, record.name, error)
