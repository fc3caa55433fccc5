"""Who may reach a served model: NetworkPolicy peers in the shape Kubernetes gives them.

Typed rather than free-form, so ``kubectl explain inferenceservice.spec.network.allowFrom`` reads
like NetworkPolicyPeer and a malformed selector is refused when the InferenceService is applied,
not later when the operator creates the NetworkPolicy from it.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from aidc.api.base import ApiModel, CelRule

SelectorOperator = Literal["In", "NotIn", "Exists", "DoesNotExist"]


class LabelSelectorRequirement(ApiModel):
    """One expression of a label selector, as in metav1.LabelSelectorRequirement."""

    key: str = Field(min_length=1, max_length=317, description="The label key the expression applies to.")
    operator: SelectorOperator = Field(description="In, NotIn, Exists or DoesNotExist.")
    values: list[str] | None = Field(
        default=None,
        max_length=64,
        description="Values for In and NotIn (at least one); empty for Exists and DoesNotExist.",
    )

    cel_rules = (
        CelRule(
            "self.operator in ['In', 'NotIn'] ? (has(self.values) && size(self.values) > 0)"
            " : (!has(self.values) || size(self.values) == 0)",
            "values must be non-empty for In and NotIn, and empty for Exists and DoesNotExist",
            lambda r: bool(r.values) if r.operator in ("In", "NotIn") else not r.values,
        ),
    )


class LabelSelector(ApiModel):
    """A metav1.LabelSelector: every matchLabels pair and every expression must hold; empty matches all."""

    match_labels: dict[str, str] | None = Field(default=None, description="Labels that must all be present.")
    match_expressions: list[LabelSelectorRequirement] | None = Field(
        default=None, max_length=16, description="Expressions that must all hold."
    )


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
