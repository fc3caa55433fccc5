"""The operator, the trainer and the model server write JSON lines with the same keys, so one log
pipeline parses all three: time, level, logger, message, and the resource's namespace and name."""

from __future__ import annotations

import json
import logging
import sys

import pytest

from aidc.runtime.logs import JsonLogFormatter
from aidc_trainer.logs import JsonFormatter, identity

SHARED = {"time", "level", "logger", "message"}


def _record(**extra: object) -> logging.LogRecord:
    record = logging.LogRecord("aidc.x", logging.WARNING, __file__, 1, "gang of %d restarts", (2,), None)
    record.__dict__.update(extra)
    return record


@pytest.mark.parametrize(("kind", "key"), [("TrainingJob", "job"), ("InferenceService", "inferenceService")])
def test_the_operator_names_the_resource_a_line_is_about(kind: str, key: str) -> None:
    ref = {"apiVersion": "aidc.io/v1alpha1", "kind": kind, "name": "digits", "uid": "u", "namespace": "ml"}
    line = json.loads(JsonLogFormatter().format(_record(k8s_ref=ref, reason="RankFailed")))
    assert line.keys() >= SHARED and line["message"] == "gang of 2 restarts" and line["level"] == "warning"
    assert (line["namespace"], line[key], line["reason"]) == ("ml", "digits", "RankFailed")
    assert "k8s_ref" not in line and line["time"].endswith("Z")


def test_the_trainer_writes_the_operators_keys_with_its_job() -> None:
    environ = {"AIDC_POD_NAMESPACE": "ml", "AIDC_JOB_NAME": "digits"}
    line = json.loads(JsonFormatter(0, identity(environ)).format(_record()))
    assert line.keys() >= SHARED and (line["namespace"], line["job"], line["rank"]) == ("ml", "digits", 0)
    operator_line = json.loads(JsonLogFormatter().format(_record(k8s_ref={"kind": "TrainingJob", "name": "digits",
                                                                          "namespace": "ml"})))  # fmt: skip
    common = {"time", "level", "logger", "message", "namespace", "job"}
    assert {k: line[k] for k in common - {"time"}} == {k: operator_line[k] for k in common - {"time"}}


def test_an_exception_stays_on_one_line() -> None:
    try:
        raise ValueError("torn checkpoint")
    except ValueError:
        record = logging.LogRecord("aidc", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    text = JsonLogFormatter().format(record)
    assert "\n" not in text and "torn checkpoint" in json.loads(text)["error"]
