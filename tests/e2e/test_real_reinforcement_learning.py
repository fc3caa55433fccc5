"""examples/trainingjob-cartpole.yaml on the real node: a PPO gang of the trainer image trains, evaluates,
exports its policy, and an InferenceService serves that policy to a client pod through its Service.

The example is applied as written except for what a test must change: a unique name, a budget of a
few iterations instead of 100,000 steps, two evaluation episodes, and the bed's placement.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from aidc_testbed.realnodes import placement
from tests.cluster.resources import condition_is, create, get
from tests.e2e.conftest import Release
from tests.e2e.test_real_nodes import ISVC, TJ, claim_folder, finished, kubectl, run_client_pod, unique

pytestmark = pytest.mark.e2e
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "trainingjob-cartpole.yaml"
ITERATIONS = 3


def cartpole_job(name: str) -> tuple[dict[str, Any], int]:
    """The example, renamed and shortened to ``ITERATIONS`` PPO iterations; the steps that makes."""
    job = yaml.safe_load(EXAMPLE.read_text())
    spec = job["spec"]
    rl = spec["trainer"]["reinforcementLearning"]
    total = ITERATIONS * spec["replicas"] * rl["envsPerRank"] * rl["rolloutSteps"]
    rl.update(totalSteps=total, evaluationEpisodes=2)
    spec.update(schedulingPolicy={"placement": placement()}, failurePolicy={"backoffSeconds": 0},
                env=[{"name": "AIDC_HEARTBEAT_SECONDS", "value": "1"}])  # fmt: skip
    job["metadata"]["name"] = name
    return job, total


def column(table: str, name: str) -> str:
    """One cell of kubectl's one-row table, found by where its header starts (cells may be empty)."""
    header, row = table.splitlines()[:2]
    found = re.search(rf"(^|\s){name}(\s|$)", header)
    assert found is not None, header
    start = found.start() + len(found.group(1))
    return row[start:].split(" ", 1)[0]


ASK_THE_POLICY = """
import json, urllib.request
observations = [[0.0, 0.0, 0.0, 0.0], [0.02, 0.5, -0.1, -0.8], [-0.02, -0.5, 0.1, 0.8]]
body = {"inputs": [{"name": "observation", "shape": [3, 4], "datatype": "FP32",
                    "data": [x for row in observations for x in row]}]}
request = urllib.request.Request("URL/v2/models/NAME/infer", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
with urllib.request.urlopen(request, timeout=30) as response:
    print(json.dumps({o["name"]: o for o in json.load(response)["outputs"]}))
"""


def _serving(name: str, job: str) -> dict[str, Any]:
    return {
        "apiVersion": "aidc.io/v1alpha1",
        "kind": "InferenceService",
        "metadata": {"name": name},
        "spec": {"model": {"fromTrainingJob": {"name": job}}, "placement": placement(),
                 "resources": {"cpu": "250m", "memory": "1Gi"}},
    }  # fmt: skip


def test_the_cartpole_example_trains_on_real_pods_and_its_policy_is_served(
    kube: client.ApiClient, testbed: Any, release: Release, wait_for: Callable[..., Any]
) -> None:
    namespace, name = release.watched, unique("cartpole")
    body, total = cartpole_job(name)
    create(kube, namespace, TJ, body)
    create(kube, namespace, ISVC, _serving(f"{name}-policy", name))
    done = finished(kube, namespace, name, wait_for)
    assert condition_is(done, "Succeeded"), done["status"]["conditions"]
    progress = done["status"]["progress"]
    assert progress["step"] == progress["totalSteps"] == total
    metrics = progress["metrics"]
    assert 8 <= metrics["evaluationReturn"] <= 500, metrics  # CartPole's returns: one per step balanced
    assert metrics["episodicReturn"] > 0 and math.isfinite(metrics["entropy"]), metrics
    table = kubectl(testbed.kubeconfig, "-n", namespace, "get", "tj", name, "-o", "wide")
    assert float(column(table, "RETURN")) > 0, table

    export = claim_folder(kube, namespace, f"{name}-checkpoints") / name / "export" / "final"
    manifest = json.loads((export / "manifest.json").read_text())
    assert manifest["task"] == "reinforcement-learning" and (export / "model.pt").stat().st_uid == 1000

    ready = wait_for(lambda: get(kube, namespace, ISVC, f"{name}-policy"), until=lambda s: condition_is(s, "Ready"),
                     timeout=180)  # fmt: skip
    from aidc_testbed.release import image_refs

    script = ASK_THE_POLICY.replace("URL", ready["status"]["url"]).replace("NAME", f"{name}-policy")
    printed = run_client_pod(kube, namespace, image_refs(testbed.config)["aidc-trainer"], script, wait_for)
    outputs = json.loads(printed.strip().splitlines()[-1])
    assert set(outputs["action"]["data"]) <= {0, 1} and len(outputs["action"]["data"]) == 3
    probabilities = outputs["probabilities"]["data"]
    assert [round(sum(probabilities[i : i + 2]), 4) for i in (0, 2, 4)] == [1.0, 1.0, 1.0]
    assert len(outputs["value"]["data"]) == 3 and all(math.isfinite(v) for v in outputs["value"]["data"])
