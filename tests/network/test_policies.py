"""The rendered NetworkPolicies against golden files (tests/network/golden/<case>.yaml).

Each case's input is in the table below and its expected policy in the file of the same name, so a
change to what the operator renders shows as a diff of YAML. ``AIDC_UPDATE_GOLDEN=1`` rewrites the
files from the renderer: review that diff like any other.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from aidc.network.policies import gang_policy, serving_policy
from aidc.settings import DEFAULT_METRICS_FROM
from tests.factories import inference_service, training_job

GOLDEN = Path(__file__).parent / "golden"
MONITORING = ({"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}},)
TEAMS = {
    "allowFrom": [
        {"namespaceSelector": {"matchLabels": {"team": "vision"}}, "podSelector": {"matchLabels": {"role": "api"}}},
        {"podSelector": {"matchExpressions": [{"key": "aidc.io/client", "operator": "Exists"}]}},
    ]
}

CASES: dict[str, Callable[[], dict[str, Any]]] = {
    "gang-default-scraper": lambda: gang_policy(training_job(), DEFAULT_METRICS_FROM),
    "gang-monitoring-namespace": lambda: gang_policy(training_job({"masterPort": 29400}), MONITORING),
    "gang-no-scraper": lambda: gang_policy(training_job(name="llm", namespace="research"), ()),
    "serving-own-namespace": lambda: serving_policy(inference_service(), DEFAULT_METRICS_FROM),
    "serving-allow-from": lambda: serving_policy(inference_service({"network": TEAMS}), MONITORING),
    "serving-every-namespace-no-scraper": lambda: serving_policy(
        inference_service({"network": {"allowFrom": [{"namespaceSelector": {}}]}}), ()
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_rendered_policy_is_the_golden_one(case: str) -> None:
    rendered = CASES[case]()
    path = GOLDEN / f"{case}.yaml"
    if os.environ.get("AIDC_UPDATE_GOLDEN") == "1":
        path.write_text(yaml.safe_dump(rendered, sort_keys=False))
    assert rendered == yaml.safe_load(path.read_text())


def test_every_golden_file_has_a_case() -> None:
    assert sorted(p.stem for p in GOLDEN.glob("*.yaml")) == sorted(CASES)


def test_the_settings_are_not_shared_with_the_rendered_object() -> None:
    """A caller that edits a rendered policy must not change what the next pass renders."""
    policy = gang_policy(training_job(), DEFAULT_METRICS_FROM)
    policy["spec"]["ingress"][1]["from"][0]["podSelector"]["matchLabels"]["x"] = "y"
    assert gang_policy(training_job(), DEFAULT_METRICS_FROM) != policy
