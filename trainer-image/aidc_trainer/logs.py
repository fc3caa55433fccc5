"""Structured logs: one JSON object per line on stderr.

Log collectors (Loki, Cloud Logging, ``kubectl logs | jq``) index JSON lines without a parser
per application, so every record carries the time, level, rank and a short message, plus the
event's own fields passed as ``extra=fields(step=..., path=...)``. Only rank 0 logs at INFO:
a gang of 64 ranks repeating every line would bury the one warning that matters.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Mapping
from typing import Any

from aidc_trainer import contract

_RESERVED = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}


def fields(**values: Any) -> dict[str, Any]:
    """The ``extra`` argument that attaches ``values`` to a record as structured fields."""
    return {"fields": values}


class JsonFormatter(logging.Formatter):
    """Render a record as one JSON line; exceptions go into an ``error`` field, still one line.

    The keys are the operator's too (``time``, ``level``, ``logger``, ``message``, ``namespace``,
    ``job``): one log pipeline parses all three."""

    def __init__(self, rank: int, identity: dict[str, str] | None = None) -> None:
        super().__init__()
        self._rank = rank
        self._identity = dict(identity or {})

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "rank": self._rank,
            "logger": record.name,
            "message": record.getMessage(),
            **self._identity,
        }
        extra = getattr(record, "fields", None)
        if isinstance(extra, dict):
            entry.update(extra)
        for key, value in record.__dict__.items():
            if key not in _RESERVED and key != "fields":
                entry[key] = value
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def identity(environ: Mapping[str, str]) -> dict[str, str]:
    """The namespace and the TrainingJob of this pod, from the variables the operator sets."""
    found = {"namespace": environ.get(contract.ENV_POD_NAMESPACE), "job": environ.get(contract.ENV_JOB_NAME)}
    return {key: value for key, value in found.items() if value}


def configure_logging(rank: int, environ: Mapping[str, str] | None = None) -> None:
    """Send the ``aidc_trainer`` loggers to stderr as JSON; INFO on rank 0, WARNING elsewhere."""
    logger = logging.getLogger("aidc_trainer")
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(rank, identity(os.environ if environ is None else environ)))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO if rank == 0 else logging.WARNING)
    logger.propagate = False
