"""The operator's log lines: kopf's text, or one JSON object per line with the keys the trainer and
the model server use too (``time``, ``level``, ``logger``, ``message``, and ``namespace`` with
``job`` or ``inferenceService`` when the line is about one resource), so one pipeline parses all three.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any, Final

LOG_FORMATS: Final = ("text", "json")
TEXT_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s %(message)s"
# what kopf's per-object loggers attach (k8s_ref, settings) and what logging itself sets
_RESERVED: Final = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "k8s_ref",
    "k8s_skip",
    "settings",
}
_NAME_KEYS: Final = {"TrainingJob": "job", "InferenceService": "inferenceService"}


class JsonLogFormatter(logging.Formatter):
    """One JSON object per record; a resource's namespace and name from kopf's ``k8s_ref``."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(_resource(getattr(record, "k8s_ref", None)))
        entry.update({k: v for k, v in record.__dict__.items() if k not in _RESERVED})
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def _resource(ref: object) -> dict[str, str]:
    if not isinstance(ref, dict):
        return {}
    found = {"namespace": ref.get("namespace")}
    key = _NAME_KEYS.get(str(ref.get("kind")), "name")
    found[key] = ref.get("name")
    return {k: str(v) for k, v in found.items() if v}


def configure(log_format: str, verbose: bool) -> None:
    """The root logger on stderr in ``log_format``; kopf's per-event INFO lines only when verbose."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonLogFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    logging.captureWarnings(log_format == "json")  # Python's warnings as log lines too, not bare text
    # one INFO line per handled event drowns what matters at any scale
    logging.getLogger("kopf.objects").setLevel(logging.DEBUG if verbose else logging.WARNING)
