"""The core/v1 types a spec embeds: EnvVar, Toleration and Affinity, with their schemas.

They were free-form objects, so a bad operator or an env name with ``=`` was admitted and
then refused at every pod create. Typed here, the CRD carries their schema (``kubectl
explain`` describes them) and the rules the API server applies to a pod are checked at
admission. Field names and meanings follow core/v1; rules are those of the pod validation.
Not modelled: ``valueFrom.fileKeyRef`` (alpha in Kubernetes 1.34).
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import Field

from aidc.api.base import ApiModel, CelRule, FieldRule
from aidc.api.quantity import Quantity

# a label key: an optional DNS-1123 subdomain prefix and '/', then a name of at most 63 characters
_LABEL_NAME = r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
LABEL_KEY_PATTERN = rf"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?{_LABEL_NAME}$"
LABEL_VALUE_PATTERN = rf"^({_LABEL_NAME})?$"
LabelKey = Annotated[str, Field(min_length=1, max_length=317, pattern=LABEL_KEY_PATTERN)]
LabelValue = Annotated[str, Field(max_length=63, pattern=LABEL_VALUE_PATTERN)]
# bounds keep the CEL cost of rules on list items within the API server's budget
MAX_ITEMS = 64
MAX_VALUES = 256
MAX_ENV = 256

# --- env ------------------------------------------------------------------------------------------


class ObjectFieldSelector(ApiModel):
    """A field of the pod, e.g. metadata.name or status.podIP."""

    api_version: str | None = Field(default=None, description='Version of the schema fieldPath is in ("v1").')
    field_path: str = Field(min_length=1, description="Path of the field, e.g. metadata.labels['team'].")


class ResourceFieldSelector(ApiModel):
    """A resource limit or request of a container, e.g. limits.memory."""

    container_name: str | None = Field(default=None, description="Container whose resource is read.")
    resource: str = Field(min_length=1, description="limits.cpu, limits.memory, requests.cpu, ...")
    divisor: Quantity | None = Field(default=None, description="Unit the value is divided by (1 when unset).")


class KeySelector(ApiModel):
    """A key of a ConfigMap or Secret in the pod's namespace."""

    name: str = Field(min_length=1, description="Name of the ConfigMap or Secret.")
    key: str = Field(min_length=1, description="The key to read.")
    optional: bool | None = Field(default=None, description="Whether the pod starts when the key is missing.")


_SOURCES = ("fieldRef", "resourceFieldRef", "configMapKeyRef", "secretKeyRef")


class EnvVarSource(ApiModel):
    """Where the value of an environment variable comes from: exactly one source."""

    field_ref: ObjectFieldSelector | None = Field(default=None, description="A field of the pod.")
    resource_field_ref: ResourceFieldSelector | None = Field(
        default=None, description="A resource limit or request of the container."
    )
    config_map_key_ref: KeySelector | None = Field(default=None, description="A key of a ConfigMap.")
    secret_key_ref: KeySelector | None = Field(default=None, description="A key of a Secret.")

    cel_rules = (
        CelRule(
            "[" + ", ".join(f"has(self.{s})" for s in _SOURCES) + "].filter(x, x).size() == 1",
            "valueFrom needs exactly one of fieldRef, resourceFieldRef, configMapKeyRef or secretKeyRef",
            lambda v: [v.field_ref, v.resource_field_ref, v.config_map_key_ref, v.secret_key_ref].count(None) == 3,
        ),
    )


ENV_NAME_RULE = FieldRule(
    "self.matches('^[ -<>-~]+$')",
    "an environment variable name is printable ASCII characters other than '='",
    lambda name: all(" " <= c <= "~" and c != "=" for c in name),
)


class EnvVar(ApiModel):
    """An environment variable, as in a container spec."""

    name: Annotated[str, ENV_NAME_RULE] = Field(min_length=1, max_length=1024, description="Name of the variable.")
    value: str | None = Field(default=None, description="Literal value.")
    value_from: EnvVarSource | None = Field(default=None, description="Where the value comes from instead.")

    cel_rules = (
        CelRule(
            "!(has(self.value) && has(self.valueFrom))",
            "set either value or valueFrom, not both",
            lambda env: env.value is None or env.value_from is None,
        ),
    )


# --- tolerations ----------------------------------------------------------------------------------


class Toleration(ApiModel):
    """Lets a pod run on nodes with a matching taint (key, value and effect)."""

    key: LabelKey | None = Field(default=None, description="Taint key; unset with Exists matches every taint.")
    operator: Literal["Exists", "Equal"] | None = Field(
        default=None, description="Equal (the default) matches the value too; Exists any value."
    )
    value: LabelValue | None = Field(default=None, description="Taint value matched by Equal.")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        default=None, description="Taint effect matched; every effect when unset."
    )
    toleration_seconds: int | None = Field(
        default=None, description="How long a NoExecute taint is tolerated before eviction; forever when unset."
    )

    cel_rules = (
        CelRule(
            "has(self.key) || (has(self.operator) && self.operator == 'Exists')",
            "a toleration without a key needs operator Exists",
            lambda t: t.key is not None or t.operator == "Exists",
        ),
        CelRule(
            "!has(self.operator) || self.operator != 'Exists' || !has(self.value) || self.value == ''",
            "a toleration with operator Exists has no value",
            lambda t: t.operator != "Exists" or not t.value,
        ),
        CelRule(
            "!has(self.tolerationSeconds) || (has(self.effect) && self.effect == 'NoExecute')",
            "tolerationSeconds needs effect NoExecute",
            lambda t: t.toleration_seconds is None or t.effect == "NoExecute",
        ),
    )


# --- affinity -------------------------------------------------------------------------------------


def _cel_list(names: tuple[str, ...]) -> str:
    return "[" + ", ".join(f"'{n}'" for n in names) + "]"


_INTEGER = re.compile(r"-?[0-9]+")


def _values_rules(
    listed: tuple[str, ...], bare: tuple[str, ...], compared: tuple[str, ...] = ()
) -> tuple[CelRule, ...]:
    """The rules on ``values`` of a selector requirement, per its operator (as the pod validation has them)."""
    rules: tuple[CelRule, ...] = (
        CelRule(
            f"!(self.operator in {_cel_list(listed)}) || (has(self.values) && self.values.size() > 0)",
            f"operators {' and '.join(listed)} need values",
            lambda r: r.operator not in listed or bool(r.values),
        ),
        CelRule(
            f"!(self.operator in {_cel_list(bare)}) || !has(self.values) || self.values.size() == 0",
            f"operators {' and '.join(bare)} take no values",
            lambda r: r.operator not in bare or not r.values,
        ),
    )
    if compared:
        rules += (
            CelRule(
                f"!(self.operator in {_cel_list(compared)}) || (has(self.values) && self.values.size() == 1 && "
                "self.values[0].matches('^-?[0-9]+$'))",
                f"operators {' and '.join(compared)} need exactly one integer value",
                lambda r: (
                    r.operator not in compared or bool(len(r.values or []) == 1 and _INTEGER.fullmatch(r.values[0]))
                ),
            ),
        )
    return rules


Values = Annotated[list[Annotated[str, Field(max_length=1024)]], Field(max_length=MAX_VALUES)]


class NodeSelectorRequirement(ApiModel):
    """A node label (or field) compared with values."""

    key: LabelKey = Field(description="The label key (or field name) compared.")
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt"] = Field(
        description="In, NotIn, Exists, DoesNotExist, Gt or Lt (Gt and Lt compare one integer)."
    )
    values: Values | None = Field(default=None, description="Values for In and NotIn; one integer for Gt and Lt.")

    cel_rules = _values_rules(("In", "NotIn"), ("Exists", "DoesNotExist"), ("Gt", "Lt"))


Requirements = Annotated[list[NodeSelectorRequirement], Field(max_length=MAX_ITEMS)]


class NodeSelectorTerm(ApiModel):
    """Requirements a node must all meet (an empty term matches no node)."""

    match_expressions: Requirements | None = Field(default=None, description="Requirements on node labels.")
    match_fields: Requirements | None = Field(default=None, description="Requirements on node fields.")


class NodeSelector(ApiModel):
    """Terms of which a node must meet at least one."""

    node_selector_terms: Annotated[list[NodeSelectorTerm], Field(min_length=1, max_length=MAX_ITEMS)] = Field(
        description="The terms, ORed."
    )


Weight = Annotated[int, Field(ge=1, le=100)]


class PreferredSchedulingTerm(ApiModel):
    """A node term that adds its weight to the nodes that meet it."""

    weight: Weight = Field(description="Weight of the term, 1 to 100.")
    preference: NodeSelectorTerm = Field(description="The node term.")


class NodeAffinity(ApiModel):
    """Which nodes a pod may or prefers to run on, by their labels."""

    required_during_scheduling_ignored_during_execution: NodeSelector | None = Field(
        default=None, description="Nodes the pod must run on."
    )
    preferred_during_scheduling_ignored_during_execution: (
        Annotated[list[PreferredSchedulingTerm], Field(max_length=MAX_ITEMS)] | None
    ) = Field(default=None, description="Nodes the pod prefers, by the sum of the weights they meet.")


class LabelSelectorRequirement(ApiModel):
    """A label compared with values."""

    key: LabelKey = Field(description="The label key.")
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"] = Field(description="In, NotIn, Exists or DoesNotExist.")
    values: Values | None = Field(default=None, description="Values for In and NotIn.")

    cel_rules = _values_rules(("In", "NotIn"), ("Exists", "DoesNotExist"))


class LabelSelector(ApiModel):
    """A label query: matchLabels and matchExpressions, ANDed."""

    match_labels: dict[str, str] | None = Field(default=None, description="Labels that must all be equal.")
    match_expressions: Annotated[list[LabelSelectorRequirement], Field(max_length=MAX_ITEMS)] | None = Field(
        default=None, description="Requirements on labels."
    )


class PodAffinityTerm(ApiModel):
    """Pods (by labels, in some namespaces) whose topology domain (node, zone, ...) is meant."""

    label_selector: LabelSelector | None = Field(default=None, description="The pods; none when unset.")
    namespace_selector: LabelSelector | None = Field(
        default=None, description="Namespaces of the pods by label; with namespaces, the union."
    )
    namespaces: list[str] | None = Field(
        default=None, description="Namespaces of the pods; the pod's own when this and namespaceSelector are unset."
    )
    topology_key: LabelKey = Field(description="Node label of the domain, e.g. kubernetes.io/hostname.")
    match_label_keys: list[str] | None = Field(
        default=None, description="Label keys whose values in the incoming pod are added to labelSelector (In)."
    )
    mismatch_label_keys: list[str] | None = Field(
        default=None, description="Label keys whose values in the incoming pod are added to labelSelector (NotIn)."
    )


class WeightedPodAffinityTerm(ApiModel):
    """A pod affinity term that adds its weight to the nodes that meet it."""

    weight: Weight = Field(description="Weight of the term, 1 to 100.")
    pod_affinity_term: PodAffinityTerm = Field(description="The pod affinity term.")


class PodAffinity(ApiModel):
    """Run in the same topology domain as the selected pods."""

    required_during_scheduling_ignored_during_execution: (
        Annotated[list[PodAffinityTerm], Field(max_length=MAX_ITEMS)] | None
    ) = Field(default=None, description="Terms every placement must meet.")
    preferred_during_scheduling_ignored_during_execution: (
        Annotated[list[WeightedPodAffinityTerm], Field(max_length=MAX_ITEMS)] | None
    ) = Field(default=None, description="Terms a placement prefers, by the sum of the weights it meets.")


class PodAntiAffinity(PodAffinity):
    """Stay out of the topology domains of the selected pods."""


class Affinity(ApiModel):
    """Scheduling constraints: node affinity, pod affinity and pod anti-affinity."""

    node_affinity: NodeAffinity | None = Field(default=None, description="Constraints on the node's labels.")
    pod_affinity: PodAffinity | None = Field(default=None, description="Run near the selected pods.")
    pod_anti_affinity: PodAntiAffinity | None = Field(default=None, description="Run away from the selected pods.")
