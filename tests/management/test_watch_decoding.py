"""kopf's watch streams are decoded by orjson, to the same values the json module gives."""

from __future__ import annotations

import inspect
import json

from kopf._cogs.clients import api as kopf_api

from aidc.management import watch_decoding

EVENT = {
    "type": "MODIFIED",
    "object": {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "mnist-0", "labels": {"aidc.io/job-name": "mnist"}, "resourceVersion": "12"},
        "spec": {"containers": [{"name": "trainer", "resources": {"limits": {"nvidia.com/gpu": "8"}}}]},
        "status": {"phase": "Running", "containerStatuses": [{"restartCount": 0, "ready": True}], "ratio": 0.5},
        "unicode": "ünïcødé ✓",
    },
}


def test_kopf_still_decodes_watch_lines_with_json_loads() -> None:
    # the patch replaces exactly this call; a kopf release that changes it must be looked at
    assert "json.loads(line.decode('utf-8'))" in inspect.getsource(kopf_api.stream)


def test_installed_decoder_gives_what_json_gives() -> None:
    assert watch_decoding.install()
    assert watch_decoding.install()  # idempotent
    line = json.dumps(EVENT).encode()
    decoded = kopf_api.json.loads(line.decode("utf-8"))
    assert decoded == json.loads(line) == EVENT
    assert type(decoded["object"]["status"]["ratio"]) is float
