"""The NetworkPolicies that fence in a gang and a model server (ingress only).

A gang's ranks admit each other on any TCP port: torchrun's store listens on the rendezvous port,
but gloo and NCCL open their data connections to listeners on ports the kernel picks from the
ephemeral range, so no fixed list of ports would let a collective through. Everything else
reaches a rank only on its metrics port, and only from the metrics scraper. A model server admits
the peers its spec allows (its own namespace by default) and the scraper, both on the server's
one port, which also serves /metrics. Traffic from the pod's own node (the kubelet's probes) is
always allowed by NetworkPolicy semantics. Egress stays open: the ranks reach the API server and
DNS. The policies only take effect where the cluster's network plugin enforces NetworkPolicy.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

from aidc import contract
from aidc.api.inferenceservice import InferenceService
from aidc.api.trainingjob import TrainingJob
from aidc.identity.fingerprint import spec_hash
from aidc.identity.labels import job_labels, owner_reference, selector_labels, serving_labels
from aidc.identity.names import gang_policy_name, serving_policy_name

COMPONENT = "network-policy"
# every pod of the policy's own namespace: an InferenceService's default audience
OWN_NAMESPACE: tuple[dict[str, Any], ...] = ({"podSelector": {}},)

Peers = Sequence[Mapping[str, Any]]


def _tcp(port: int | None = None) -> dict[str, Any]:
    """A NetworkPolicyPort: one TCP port, or every TCP port when ``port`` is None."""
    return {"protocol": "TCP"} if port is None else {"protocol": "TCP", "port": port}


def _copies(peers: Peers) -> list[dict[str, Any]]:
    """Peers copied deeply: the rendered object is the caller's to change, the settings are not."""
    return [copy.deepcopy(dict(peer)) for peer in peers]


def _metrics_rule(metrics_from: Peers, port: int) -> list[dict[str, Any]]:
    """The scraper's rule, or none: an empty ``from`` would admit every source, not none."""
    if not metrics_from:
        return []
    return [{"from": _copies(metrics_from), "ports": [_tcp(port)]}]


def _policy(
    name: str, owner: TrainingJob | InferenceService, labels: dict[str, str], spec: dict[str, Any]
) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {
            "name": name,
            "namespace": owner.metadata["namespace"],
            "labels": {**labels, contract.LABEL_APP_COMPONENT: COMPONENT},
            "annotations": {contract.ANNOTATION_SPEC_HASH: spec_hash(spec)},
            "ownerReferences": [owner_reference(owner)],
        },
        "spec": spec,
    }


def gang_policy(job: TrainingJob, metrics_from: Peers) -> dict[str, Any]:
    """The gang's ranks take connections from each other (any TCP port) and from the scraper (metrics)."""
    gang = {"matchLabels": {contract.LABEL_JOB_NAME: str(job.metadata["name"])}}
    spec = {
        "podSelector": gang,
        "policyTypes": ["Ingress"],
        "ingress": [
            {"from": [{"podSelector": gang}], "ports": [_tcp()]},
            *_metrics_rule(metrics_from, contract.TRAINER_METRICS_PORT),
        ],
    }
    return _policy(gang_policy_name(job), job, job_labels(job), spec)


def serving_policy(isvc: InferenceService, metrics_from: Peers) -> dict[str, Any]:
    """The server's port takes connections from ``spec.network.allowFrom`` (its namespace by default)
    and from the scraper."""
    network = isvc.spec.network
    allowed = [peer.to_wire() for peer in network.allow_from] if network and network.allow_from else OWN_NAMESPACE
    spec = {
        "podSelector": {"matchLabels": selector_labels(isvc)},
        "policyTypes": ["Ingress"],
        "ingress": [
            {"from": _copies(allowed), "ports": [_tcp(contract.SERVER_PORT)]},
            *_metrics_rule(metrics_from, contract.SERVER_PORT),
        ],
    }
    return _policy(serving_policy_name(isvc), isvc, serving_labels(isvc), spec)
