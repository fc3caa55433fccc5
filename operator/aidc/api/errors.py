"""Pydantic validation errors as one line a user can act on: ``spec.replicas: must be >= 1``."""

from __future__ import annotations

from pydantic import ValidationError


def _location(loc: tuple[int | str, ...]) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part.startswith(("function-", "tagged-union")) or "[" in part:
            continue  # pydantic's internal validator names carry no meaning for users
        else:
            path += f".{part}" if path else part
    return path


def describe_validation_error(error: ValidationError) -> str:
    """Field path and problem of every error, joined by '; ', without pydantic's URLs."""
    problems = []
    for item in error.errors(include_url=False):
        msg = item["msg"].removeprefix("Value error, ")
        where = _location(tuple(item["loc"]))
        problems.append(f"{where}: {msg}" if where else msg)
    return "; ".join(problems)
