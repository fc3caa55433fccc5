"""A TrainingJob's spec is parsed once per (uid, generation); its status on every new version."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from aidc.management.job_parsing import parse_spec_once as _parse
from aidc.management.workers import Memory

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "trainingjob-digits-cpu.yaml"


def job(generation: int, uid: str = "u1", replicas: int = 2, phase: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = copy.deepcopy(yaml.safe_load(EXAMPLE.read_text()))
    body["metadata"].update(namespace="ml", uid=uid, generation=generation, resourceVersion=str(generation * 10))
    body["spec"]["replicas"] = replicas
    if phase:
        body["status"] = {"phase": phase}
    return body


def test_a_status_only_version_keeps_the_parsed_spec_and_reads_the_new_status() -> None:
    memory = Memory()
    first = _parse(job(1), memory)
    second = _parse(job(1, phase="Running"), memory)
    assert second.spec is first.spec
    assert second.status is not None and second.status.phase == "Running"


@pytest.mark.parametrize(("generation", "uid"), [(2, "u1"), (1, "u2")], ids=["spec changed", "job recreated"])
def test_a_new_generation_or_a_new_job_is_parsed_again(generation: int, uid: str) -> None:
    memory = Memory()
    _parse(job(1), memory)
    again = _parse(job(generation, uid=uid, replicas=3), memory)
    assert again.spec.replicas == 3


def test_an_invalid_new_spec_is_still_refused() -> None:
    memory = Memory()
    _parse(job(1), memory)
    bad = job(2)
    bad["spec"]["replicas"] = -1
    with pytest.raises(ValidationError):
        _parse(bad, memory)
