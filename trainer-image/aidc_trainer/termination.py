"""The pod's termination message: a one-line JSON summary of how the run ended.

Kubernetes copies ``/dev/termination-log`` into the container status, where the operator (and
``kubectl describe``) read it without fetching logs; it keeps at most 4 KiB of it.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Final

_log = logging.getLogger(__name__)

_LIMIT: Final = 4096


def termination_message(exit_code: int, reason: str, message: str, **details: Any) -> str:
    """The summary line; the message is shortened, never the structure, to stay under 4 KiB."""
    entry = {"exitCode": exit_code, "reason": reason, "message": message, **details}
    line = json.dumps(entry, separators=(",", ":"), default=str)
    while len(line.encode()) > _LIMIT and entry["message"]:
        entry["message"] = entry["message"][: len(entry["message"]) // 2] + "..."
        line = json.dumps(entry, separators=(",", ":"), default=str)
    return line


def write_termination_message(path: Path, exit_code: int, reason: str, message: str, **details: Any) -> None:
    """Write the summary to ``path`` when it is writable (outside Kubernetes it usually is not)."""
    line = termination_message(exit_code, reason, message, **details)
    try:
        with path.open("w") as handle:
            handle.write(line + "\n")
    except OSError as error:
        _log.debug("no termination log", extra={"fields": {"path": str(path), "error": str(error)}})
