"""Faster decoding of kopf's watch streams.

kopf parses every line of every watch stream with the standard library's ``json.loads``. Under
a burst that was the largest single cost on the operator's event loop: a third of the loop's
busy time in a 150-job burst (py-spy, benchmarks/operator/RESULTS.md). orjson parses the same
text into the same dicts, lists and numbers in about half the time. kopf has no setting for its
decoder, so ``install`` gives kopf's API client module a ``json`` whose ``loads`` is orjson's
(nothing else in that module uses ``json``). If a kopf release changes that module, ``install``
leaves it alone and says so; ``tests/management/test_watch_decoding.py`` notices too.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import orjson
from kopf._cogs.clients import api as kopf_api

log = logging.getLogger(__name__)


class _Json:
    """Stands in for the json module inside kopf's API client."""

    @staticmethod
    def loads(text: str | bytes) -> Any:
        return orjson.loads(text)

    dumps = staticmethod(json.dumps)


def install() -> bool:
    """Decode kopf's watch events with orjson; False when kopf's client no longer fits the patch."""
    current = getattr(kopf_api, "json", None)
    if isinstance(current, _Json):
        return True
    if current is not json:
        log.warning("kopf's API client no longer decodes with the json module; watch decoding is unchanged")
        return False
    setattr(kopf_api, "json", _Json())  # noqa: B010 (mypy: kopf's module has no writable json)
    return True
