"""Each pod's ``/etc/hosts``: the kubelet's file plus the names a cluster DNS would answer.

There is no cluster DNS here, and torch's rendezvous resolves ``MASTER_ADDR`` in C++ through
``getaddrinfo``, so a Python-level patch would not do: the names must be in the file the C
library reads. The agent bind-mounts a per-pod file over ``/etc/hosts`` holding

- what a kubelet writes: localhost, and the pod's own address with its hostname (gloo binds to
  the address its hostname resolves to, so this must be the pod's address, not loopback);
- the headless-Service names of every pod on this node that has a hostname and subdomain,
  ``<hostname>.<subdomain>.<namespace>.svc[.cluster.local]``, so ranks find rank 0 unchanged;
- ``kubernetes.default.svc`` and friends for the API server's Service address.

When a pod comes or goes, every pod's file is rewritten in place (same inode: a bind mount pins
the file, a rename would not be seen).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

CLUSTER_DOMAIN = "cluster.local"
HEADER = """# Kubernetes-managed hosts file (aidc node agent).
127.0.0.1\tlocalhost
::1\tlocalhost ip6-localhost ip6-loopback
fe00::0\tip6-localnet
fe00::1\tip6-allnodes
fe00::2\tip6-allrouters
"""


@dataclass(frozen=True)
class HostEntry:
    """A pod's address and DNS identity."""

    address: str
    hostname: str
    subdomain: str | None
    namespace: str

    def names(self) -> list[str]:
        """The names other pods may use for this one."""
        if not self.subdomain:
            return []
        base = f"{self.hostname}.{self.subdomain}.{self.namespace}"
        return [f"{base}.svc.{CLUSTER_DOMAIN}", f"{base}.svc", base]


def render(own: HostEntry, neighbours: Iterable[HostEntry], service_names: dict[str, str]) -> str:
    """The hosts file of the pod ``own``; ``service_names`` maps an address to its Service names."""
    lines = [HEADER.rstrip("\n")]
    lines.append("\t".join([own.address, *own.names(), own.hostname]))
    for entry in sorted(neighbours, key=lambda e: (e.namespace, e.hostname, e.address)):
        names = entry.names()
        if entry == own or not names:
            continue
        if entry.namespace == own.namespace:  # <hostname>.<subdomain> works within a namespace
            names.append(f"{entry.hostname}.{entry.subdomain}")
        lines.append("\t".join([entry.address, *names]))
    for address, service in sorted(service_names.items()):
        lines.append(f"{address}\t{service}")
    return "\n".join(lines) + "\n"


RESOLV_CONF = """# aidc node agent: no cluster DNS here; names come from /etc/hosts. A nameserver that answers
# at once (nothing listens) keeps an unknown name from waiting for DNS timeouts.
nameserver 127.0.0.1
options timeout:1 attempts:1
"""


def write_in_place(path: Path, text: str) -> None:
    """Replace the content of ``path`` keeping its inode (bind mounts see the change)."""
    data = text.encode()
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        os.pwrite(fd, data, 0)
        os.ftruncate(fd, len(data))
    finally:
        os.close(fd)
