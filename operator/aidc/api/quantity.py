"""Resource quantities (``4``, ``500m``, ``16Gi``), checked at admission as the pod would be.

A quantity the API server only meets when the operator creates the pod (``16GB``, ``lots``)
would be refused there on every pass, long after ``kubectl apply`` said yes. So the CRD checks
it with CEL's ``isQuantity`` (Kubernetes 1.29 and later) and the model with the same grammar,
that of ``resource.Quantity``: a signed decimal number and one suffix, binary (Ki .. Ei),
decimal (m, k, M .. E) or an exponent (e3).
"""

from __future__ import annotations

import re
from typing import Annotated

from aidc.api.base import FieldRule
from aidc.api.markers import IntOrString

# a bound on the string keeps the rule's estimated cost within the API server's budget in lists (env)
MAX_LENGTH = 64
_QUANTITY = re.compile(r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([KMGTPE]i|[numkMGTPE]|[eE][+-]?[0-9]+)?")


def is_non_negative_quantity(value: object) -> bool:
    """Whether ``value`` is a quantity the API server parses, and not below zero."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return value >= 0
    if not isinstance(value, str) or len(value) > MAX_LENGTH:
        return False
    return _QUANTITY.fullmatch(value) is not None and not value.startswith("-")


QUANTITY_RULE = FieldRule(
    "type(self) == int ? self >= 0 : (isQuantity(self) && !quantity(self).isLessThan(quantity('0')))",
    "must be a non-negative Kubernetes quantity such as 4, 500m or 16Gi (Gi, not GB)",
    is_non_negative_quantity,
)

Quantity = Annotated[int | str, IntOrString(max_length=MAX_LENGTH), QUANTITY_RULE]
