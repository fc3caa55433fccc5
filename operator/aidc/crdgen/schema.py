"""Pydantic models -> structural OpenAPI v3 schemas, as apiextensions.k8s.io/v1 wants them.

Pydantic's own JSON schema uses ``$ref``, ``anyOf`` for optionals and keywords Kubernetes
rejects, so this walks the model fields directly: every node gets a ``type`` and a
description, optionals simply leave ``required``, constraints become minimum/maximum/
minLength/pattern, Literal becomes ``enum``, and each model's CEL rules become
``x-kubernetes-validations``.
"""

from __future__ import annotations

import types
from datetime import datetime
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import annotated_types
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from aidc.api.base import ApiModel, FieldRule
from aidc.api.markers import FreeForm, IntOrString, ListMapKeys

Schema = dict[str, Any]

_SCALARS: dict[type, str] = {str: "string", int: "integer", float: "number", bool: "boolean"}


class SchemaError(TypeError):
    """A model uses a type or omits a description the generator cannot turn into a CRD."""


def model_schema(model: type[BaseModel], description: str | None = None) -> Schema:
    """The structural schema of a model: an object with one property per field."""
    properties: dict[str, Schema] = {}
    required: list[str] = []
    for name, field in model.model_fields.items():
        alias = field.alias or name
        if not field.description:
            raise SchemaError(f"{model.__name__}.{name} has no description")
        properties[alias] = field_schema(field)
        if field.is_required():
            required.append(alias)
    schema: Schema = {"type": "object"}
    doc = description or " ".join((model.__doc__ or "").strip().split("\n\n")[0].split())
    if doc:
        schema["description"] = doc
    if properties:  # the API server drops an empty map, and a CRD applied twice would then conflict
        schema["properties"] = properties
    if required:
        schema["required"] = required
    if issubclass(model, ApiModel) and model.cel_rules:
        schema["x-kubernetes-validations"] = [rule.as_schema() for rule in model.cel_rules]
    return schema


def field_schema(field: FieldInfo) -> Schema:
    """Schema of one field: its type, constraints, default, description and extras."""
    schema = type_schema(field.annotation, list(field.metadata))
    schema = {"description": field.description, **schema}
    default = _default(field)
    if default is not None:
        schema["default"] = default
    if isinstance(field.json_schema_extra, dict):
        schema.update(field.json_schema_extra)
    return schema


def _default(field: FieldInfo) -> Any:
    if field.default_factory is not None:
        value = field.default_factory()  # type: ignore[call-arg]
    elif field.default is PydanticUndefined:
        return None
    else:
        value = field.default
    if isinstance(value, BaseModel):
        # spelled out in full: CEL rules see a default as written, before nested defaults apply
        value = _without_empty(value.model_dump(mode="json", by_alias=True, exclude_none=True))
        return value
    if value is None or value in ([], {}):
        return None
    return value


def _without_empty(value: dict[str, Any]) -> dict[str, Any]:
    pruned = {}
    for key, item in value.items():
        kept = _without_empty(item) if isinstance(item, dict) else item
        if kept not in ({}, []):
            pruned[key] = kept
    return pruned


def type_schema(annotation: Any, metadata: list[Any]) -> Schema:
    """Schema of a Python type with its constraint metadata; ``FieldRule`` metadata becomes its CEL rules."""
    origin = get_origin(annotation)
    if origin is Annotated:
        inner, *extra = get_args(annotation)
        # a Field() inside Annotated (within an Optional, pydantic keeps it whole) carries constraints too
        unpacked = [c for m in extra for c in (m.metadata if isinstance(m, FieldInfo) else [m])]
        return type_schema(inner, [*unpacked, *metadata])
    schema = _plain_type_schema(annotation, metadata)
    rules = [m.as_schema() for m in metadata if isinstance(m, FieldRule)]
    if rules:
        schema["x-kubernetes-validations"] = rules
    return schema


def _plain_type_schema(annotation: Any, metadata: list[Any]) -> Schema:
    origin = get_origin(annotation)
    if annotation is Any:
        return {"x-kubernetes-preserve-unknown-fields": True}
    if any(isinstance(m, FreeForm) for m in metadata):
        if origin is dict or annotation is dict:
            return {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
        return {"x-kubernetes-preserve-unknown-fields": True}
    marker = next((m for m in metadata if isinstance(m, IntOrString)), None)
    if marker is not None:
        either: Schema = {"anyOf": [{"type": "integer"}, {"type": "string"}], "x-kubernetes-int-or-string": True}
        if marker.max_length:
            either["maxLength"] = marker.max_length
        return either
    if origin in (Union, types.UnionType):
        members = [a for a in get_args(annotation) if a is not type(None)]
        if len(members) != 1:
            raise SchemaError(f"unions other than Optional are not structural: {annotation}")
        return type_schema(members[0], metadata)
    if origin is Literal:
        values = list(get_args(annotation))
        kinds = {type(v) for v in values}
        if len(kinds) != 1 or next(iter(kinds)) not in _SCALARS:
            raise SchemaError(f"mixed or non-scalar Literal: {annotation}")
        return {"type": _SCALARS[next(iter(kinds))], "enum": values}
    if origin is list:
        (item,) = get_args(annotation)
        schema: Schema = {"type": "array", "items": type_schema(item, [])}
        for m in metadata:
            if isinstance(m, ListMapKeys):
                schema["x-kubernetes-list-type"] = "map"
                schema["x-kubernetes-list-map-keys"] = list(m.keys)
        return _constrained(schema, metadata, "Items")
    if origin is dict:
        key, value = get_args(annotation)
        if key is not str:
            raise SchemaError(f"map keys must be strings: {annotation}")
        return _constrained({"type": "object", "additionalProperties": type_schema(value, [])}, metadata, "Properties")
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return model_schema(annotation)
    if annotation is datetime:
        return {"type": "string", "format": "date-time"}
    if annotation in _SCALARS:
        return _constrained({"type": _SCALARS[annotation]}, metadata, "Length")
    raise SchemaError(f"no structural schema for {annotation!r}")


def _constrained(schema: Schema, metadata: list[Any], size_suffix: str) -> Schema:
    """Adds pydantic/annotated-types constraints under their OpenAPI names."""
    for m in metadata:
        if isinstance(m, annotated_types.Ge):
            schema["minimum"] = m.ge
        elif isinstance(m, annotated_types.Gt):
            schema["minimum"] = m.gt
            schema["exclusiveMinimum"] = True
        elif isinstance(m, annotated_types.Le):
            schema["maximum"] = m.le
        elif isinstance(m, annotated_types.Lt):
            schema["maximum"] = m.lt
            schema["exclusiveMaximum"] = True
        elif isinstance(m, annotated_types.MinLen):
            schema[f"min{size_suffix}"] = m.min_length
        elif isinstance(m, annotated_types.MaxLen):
            schema[f"max{size_suffix}"] = m.max_length
        elif getattr(m, "pattern", None):
            schema["pattern"] = m.pattern
    return schema


def nested_models(root: type[BaseModel]) -> set[type[BaseModel]]:
    """Every model reachable from ``root`` through its fields (``root`` included)."""
    found: set[type[BaseModel]] = set()
    pending: list[Any] = [root]
    while pending:
        annotation = pending.pop()
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            if annotation in found:
                continue
            found.add(annotation)
            pending.extend(field.annotation for field in annotation.model_fields.values())
        else:
            pending.extend(get_args(annotation))
    return found
