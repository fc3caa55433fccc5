"""Types both custom resources share: conditions, resources, pod template overrides."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator

from aidc.api.base import ApiModel, CelRule, StatusModel
from aidc.api.core import MAX_ITEMS, Affinity, Toleration
from aidc.api.markers import FreeFormObject, ListMapKeys
from aidc.api.quantity import Quantity

# Names become Service names, pod hostnames and the prefix of pod names ("<name>-<rank>").
MAX_NAME_LENGTH = 52
_DNS_1035_LABEL = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")


def _name_is_valid(resource: Any) -> bool:
    name = str(resource.metadata.get("name", ""))
    return not name or (len(name) <= MAX_NAME_LENGTH and _DNS_1035_LABEL.fullmatch(name) is not None)


NAME_RULE = CelRule(
    f"self.metadata.name.size() <= {MAX_NAME_LENGTH} && self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')",
    f"metadata.name must be a DNS-1035 label (lowercase letters, digits and '-', starting with a letter) of at "
    f"most {MAX_NAME_LENGTH} characters: it names the Service and the pods' hostnames",
    _name_is_valid,
)

ConditionStatus = Literal["True", "False", "Unknown"]


class Condition(StatusModel):
    """A metav1.Condition: the state of one aspect of the resource, with a reason to act on."""

    type: str = Field(description="Type of the condition in CamelCase, e.g. Succeeded or Ready.")
    status: ConditionStatus = Field(description="Whether the condition holds: True, False or Unknown.")
    reason: str = Field(description="A CamelCase, machine-readable reason for the last transition.")
    message: str = Field(default="", description="A human-readable message a user can act on.")
    observed_generation: int | None = Field(
        default=None, description="The .metadata.generation the condition was set from."
    )
    last_transition_time: datetime = Field(description="When the status last changed.")


Conditions = Annotated[list[Condition], ListMapKeys(("type",))]


class Resources(ApiModel):
    """What each pod asks for. GPUs are requested and limited as one extended resource."""

    gpus: int = Field(default=0, ge=0, le=64, description="GPUs per pod, requested and limited as gpuResource.")
    gpu_resource: str = Field(
        default="nvidia.com/gpu", description="Extended resource name of the GPUs (nvidia.com/gpu by default)."
    )
    cpu: Quantity | None = Field(default=None, description="CPU request per pod, e.g. 4 or 500m.")
    memory: Quantity | None = Field(default=None, description="Memory request and limit per pod, e.g. 16Gi.")
    cpu_limit: Quantity | None = Field(default=None, description="CPU limit per pod; unlimited when unset.")
    shared_memory: Quantity | None = Field(
        default=None,
        description="Size of a memory-backed /dev/shm (data loaders and NCCL need more than the default 64Mi).",
    )


class PodTemplateOverrides(ApiModel):
    """The escape hatch: metadata and pod-spec fields merged into every pod the operator creates."""

    labels: dict[str, str] = Field(default_factory=dict, description="Labels added to every pod.")
    annotations: dict[str, str] = Field(default_factory=dict, description="Annotations added to every pod.")
    spec: FreeFormObject = Field(
        default_factory=dict,
        description=(
            "PodSpec fields merged into every pod (for example serviceAccountName, volumes, "
            "runtimeClassName). Containers merge by name; the operator's own fields win on conflict."
        ),
    )

    @field_validator("spec")
    @classmethod
    def _spec_is_mergeable(cls, spec: dict[str, Any]) -> dict[str, Any]:
        return _check_pod_spec_overrides(spec)


# pod-spec fields the operator owns: a gang restarts as a whole and ranks find each other by hostname
OPERATOR_OWNED_POD_FIELDS = ("hostname", "subdomain", "restartPolicy")


def _check_pod_spec_overrides(spec: dict[str, Any]) -> dict[str, Any]:
    """Checks the free-form pod-spec overrides where the API server cannot (they are schemaless)."""
    owned = [key for key in OPERATOR_OWNED_POD_FIELDS if key in spec]
    if owned:
        raise ValueError(f"{', '.join(owned)} cannot be overridden: the operator sets them for the gang")
    for key in ("containers", "initContainers", "volumes"):
        items = spec.get(key, [])
        if not isinstance(items, list) or not all(isinstance(i, dict) and i.get("name") for i in items):
            raise ValueError(f"{key} must be a list of objects, each with a name")
    return spec


class Placement(ApiModel):
    """Where pods may run."""

    node_selector: dict[str, str] = Field(default_factory=dict, description="Node labels every pod requires.")
    tolerations: Annotated[list[Toleration], Field(max_length=MAX_ITEMS)] = Field(
        default_factory=list, description="Taints the pods tolerate (for example the GPU nodes' taint)."
    )
    affinity: Affinity | None = Field(default=None, description="Node affinity, pod affinity and anti-affinity.")
    priority_class_name: str | None = Field(default=None, description="PriorityClass of the pods.")
