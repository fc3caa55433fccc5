"""The base of every API model: frozen, camelCase on the wire, snake_case in Python.

Cross-field rules are declared once, as CEL for the API server, and checked by the same
model in Python (``cel_rules`` on the class plus a pydantic validator), so whatever the API
server admits the operator can parse.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, Self

from pydantic import BaseModel, ConfigDict, GetCoreSchemaHandler, model_validator
from pydantic.alias_generators import to_camel
from pydantic_core import core_schema


class CelRule:
    """An ``x-kubernetes-validations`` entry attached to a model's schema.

    ``check`` is the same rule in Python, run by pydantic; transition rules (those that
    read ``oldSelf``) have none because only the API server sees the old object.
    """

    def __init__(
        self,
        rule: str,
        message: str,
        check: Callable[[Any], bool] | None = None,
        field_path: str | None = None,
    ) -> None:
        self.rule = rule
        self.message = message
        self.check = check
        self.field_path = field_path

    def as_schema(self) -> dict[str, str]:
        entry = {"rule": self.rule, "message": self.message}
        if self.field_path:
            entry["fieldPath"] = self.field_path
        return entry


class FieldRule(CelRule):
    """A CEL rule on one field's value (``self`` is the value), used as ``Annotated`` metadata.

    The CRD generator puts it on the field's schema, so the API server names the field; pydantic
    runs ``check`` after the field's own validation, so the model names the same field.
    """

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        return core_schema.no_info_after_validator_function(self._validate, handler(source))

    def _validate(self, value: Any) -> Any:
        if self.check is not None and not self.check(value):
            raise ValueError(self.message)
        return value


class ApiModel(BaseModel):
    """Frozen model with camelCase aliases that rejects unknown fields."""

    model_config = ConfigDict(
        frozen=True,
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
        extra="forbid",
        use_attribute_docstrings=False,
    )

    # CEL rules the CRD generator attaches to this object's schema.
    cel_rules: ClassVar[tuple[CelRule, ...]] = ()

    @model_validator(mode="after")
    def _check_cel_rules(self) -> Self:
        for rule in type(self).cel_rules:
            if rule.check is not None and not rule.check(self):
                raise ValueError(rule.message)
        return self

    def to_wire(self) -> dict[str, Any]:
        """The object as it appears in Kubernetes: camelCase, unset fields left out."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class StatusModel(ApiModel):
    """Status is written by the operator and read back leniently across versions."""

    model_config = ConfigDict(extra="ignore")
