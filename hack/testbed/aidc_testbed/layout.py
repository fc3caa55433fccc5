"""Where each file of a test bed lives inside its state directory.

Written down once so that `up`, `down`, `status` and a test that reads a component's log agree
on the paths, and so that a fresh start removes only what a test bed wrote there.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Layout:
    """The files and folders of one test bed under ``root``."""

    root: Path

    @property
    def kubeconfig(self) -> Path:
        """The admin kubeconfig (group system:masters) for kubectl, tests and the demo."""
        return self.root / "kubeconfig"

    @property
    def state_file(self) -> Path:
        """Process ids and ports of the running components (see :mod:`aidc_testbed.state`)."""
        return self.root / "state.json"

    @property
    def pki(self) -> Path:
        return self.root / "pki"

    @property
    def component_kubeconfigs(self) -> Path:
        """One kubeconfig per component, each with its own client certificate."""
        return self.root / "kubeconfigs"

    @property
    def etcd_data(self) -> Path:
        return self.root / "etcd"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def volumes(self) -> Path:
        """The host folders behind the pool of hostPath PersistentVolumes."""
        return self.root / "volumes"

    @property
    def real_nodes(self) -> Path:
        """One folder per real node: containerd's and the kubelet's state, configs, pod logs."""
        return self.root / "realnodes"

    @property
    def host_journal(self) -> Path:
        """What real nodes changed on the machine, to be undone (see :mod:`aidc_testbed.host`)."""
        return self.root / "host.json"

    def log(self, component: str) -> Path:
        return self.logs / f"{component}.log"

    def generated(self) -> tuple[Path, ...]:
        """Everything a start writes, and so everything a fresh start may remove."""
        return (
            self.kubeconfig,
            self.state_file,
            self.pki,
            self.component_kubeconfigs,
            self.etcd_data,
            self.logs,
            self.volumes,
            self.real_nodes,
        )
