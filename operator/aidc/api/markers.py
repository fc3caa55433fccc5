"""Annotations that tell the CRD generator how a Python type maps to Kubernetes' schema.

They carry no behaviour in pydantic; ``aidc.crdgen`` looks for them in a field's metadata.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any


@dataclass(frozen=True)
class IntOrString:
    """``x-kubernetes-int-or-string``: resource quantities such as ``4`` or ``"16Gi"``."""

    # maxLength of the string form (CEL cost estimates need a bound); none when 0
    max_length: int = 0


@dataclass(frozen=True)
class FreeForm:
    """``x-kubernetes-preserve-unknown-fields``: the pod-spec overrides, passed through verbatim
    and validated by the API server when the operator creates the pod (a refusal there fails
    the job with InvalidSpec). Tolerations, affinity and env are typed instead (``core``)."""


@dataclass(frozen=True)
class ListMapKeys:
    """``x-kubernetes-list-type: map`` keyed by these fields (conditions by ``type``)."""

    keys: tuple[str, ...]


FreeFormObject = Annotated[dict[str, Any], FreeForm()]
