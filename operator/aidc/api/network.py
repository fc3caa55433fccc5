"""Who may reach a served model: NetworkPolicy peers in the shape Kubernetes gives them.

Typed rather than free-form, so ``kubectl explain inferenceservice.spec.network.allowFrom`` reads
like NetworkPolicyPeer and a malformed selector is refused when the InferenceService is applied,
not later when the operator creates the NetworkPolicy from it.
"""

from __future__ import annotations

from pydantic import Field

from aidc.api.base import ApiModel, CelRule
from aidc.api.core import LabelSelector


class NetworkPeer(ApiModel):
    """A NetworkPolicyPeer: both selectors mean those pods in those namespaces; podSelector alone, in its own."""

    # (podSelector alone selects pods of the InferenceService's own namespace, as in NetworkPolicy)

    namespace_selector: LabelSelector | None = Field(
        default=None, description="Namespaces whose pods may connect ({} for every namespace)."
    )
    pod_selector: LabelSelector | None = Field(
        default=None, description="Pods that may connect ({} for every pod of the selected namespaces)."
    )

    cel_rules = (
        CelRule(
            "has(self.namespaceSelector) || has(self.podSelector)",
            "set namespaceSelector, podSelector or both",
            lambda p: p.namespace_selector is not None or p.pod_selector is not None,
        ),
    )


class ServingNetwork(ApiModel):
    """Who may reach the server; applies where the operator makes NetworkPolicies and the CNI enforces them."""

    allow_from: list[NetworkPeer] | None = Field(
        default=None,
        min_length=1,
        max_length=32,
        description=(
            "Pods that may connect to the inference port, as NetworkPolicy peers; when unset, every pod of "
            "the InferenceService's namespace. [{namespaceSelector: {}}] admits pods of every namespace."
        ),
    )
