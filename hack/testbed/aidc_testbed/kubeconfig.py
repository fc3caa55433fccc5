"""Kubeconfig files for the admin and for each component.

Certificates are embedded rather than referenced by path, so a kubeconfig stays valid when it
is copied (``AIDC_KUBECONFIG`` may point at a copy) and reads on its own.
"""

from __future__ import annotations

import base64
from pathlib import Path

import yaml

from aidc_testbed.pki import ClientIdentity, Pki

CONTEXT = "aidc-testbed"


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def render_kubeconfig(server: str, pki: Pki, identity: ClientIdentity) -> dict[str, object]:
    """The kubeconfig of ``identity`` for the API server at ``server``."""
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": CONTEXT,
                "cluster": {"server": server, "certificate-authority-data": _b64(pki.ca_cert)},
            }
        ],
        "users": [
            {
                "name": identity.name,
                "user": {
                    "client-certificate-data": _b64(pki.client_cert(identity)),
                    "client-key-data": _b64(pki.client_key(identity)),
                },
            }
        ],
        "contexts": [{"name": CONTEXT, "context": {"cluster": CONTEXT, "user": identity.name}}],
        "current-context": CONTEXT,
        "preferences": {},
    }


def write_kubeconfig(path: Path, server: str, pki: Pki, identity: ClientIdentity) -> Path:
    """Write the kubeconfig of ``identity`` to ``path``, readable by its owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(render_kubeconfig(server, pki, identity), sort_keys=False))
    path.chmod(0o600)
    return path
