"""The reinforcement-learning task on the real control plane: examples/trainingjob-cartpole.yaml applied as
is, admitted with its defaults filled, rendered into the gang's AIDC_TRAINER_CONFIG, and its RL heartbeat
shown by ``kubectl get tj``. The pods are kwok's: nothing trains here (the trainer tests do that)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from aidc import contract
from tests.cluster.resources import annotate_pod, condition_is, exit_pod, get, pods

pytestmark = pytest.mark.cluster
ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "trainingjob-cartpole.yaml"
TJ = "trainingjobs"


@pytest.fixture(autouse=True)
def _quiet_operator(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIDC_METRICS_PORT", "0")  # several operators run in one test process
    monkeypatch.setenv("AIDC_RESYNC_SECONDS", "5")


def _trainer_config(pod: client.V1Pod) -> dict[str, Any]:
    env = {e.name: e.value for e in pod.spec.containers[0].env if e.value is not None}
    config: dict[str, Any] = json.loads(env[contract.ENV_TRAINER_CONFIG])
    return config


def _wide_row(kubectl: list[str], name: str) -> dict[str, str]:
    """``kubectl get tj -o wide`` as {column: value}: the printer columns of the real CRD."""
    lines = subprocess.run([*kubectl, "get", "tj", name, "-o", "wide"], check=True, capture_output=True, text=True)
    header, row = lines.stdout.splitlines()[:2]
    return dict(zip(header.split(), row.split(), strict=False))


def _admitted_with_defaults(kube: client.ApiClient, namespace: str) -> dict[str, Any]:
    stored = get(kube, namespace, TJ, "cartpole")
    rl = stored["spec"]["trainer"]["reinforcementLearning"]
    # written in the example: kept; left out: filled by the API server from the CRD's defaults
    assert rl["environment"] == {"gymnasiumId": "CartPole-v1"} and rl["totalSteps"] == 100000
    assert rl["ppo"]["valueCoef"] == 0.5 and rl["ppo"]["maxGradNorm"] == 0.5
    assert "dataset" not in stored["spec"]["trainer"]
    return rl


def test_the_cartpole_example_runs_as_a_gang_with_its_config_and_reports_returns(
    kube: client.ApiClient,
    crds_applied: list[str],
    namespace: str,
    run_operator: Any,
    wait_for: Callable[..., Any],
    testbed: Any,
) -> None:
    kubectl = ["kubectl", "--kubeconfig", str(testbed.kubeconfig), "-n", namespace]
    with run_operator(namespace):
        subprocess.run([*kubectl, "apply", "-f", str(EXAMPLE)], check=True, capture_output=True)
        rl = _admitted_with_defaults(kube, namespace)
        gang = wait_for(lambda: pods(kube, namespace, "cartpole"), until=lambda p: len(p) == 2, message="2 ranks")
        for pod in gang:
            sent = _trainer_config(pod)
            assert sent["task"] == "reinforcement-learning" and sent["reinforcementLearning"] == rl
            assert sent["learningRate"] == 0.001 and "dataset" not in sent
        client.CoreV1Api(kube).read_namespaced_persistent_volume_claim("cartpole-checkpoints", namespace)
        wait_for(lambda: get(kube, namespace, TJ, "cartpole"), until=lambda j: condition_is(j, "Running"), timeout=60)

        # no episode has ended yet: the trainer's mean return is NaN, which must not break the status write
        early = {"step": 1024, "totalSteps": 100000, "loss": 0.4, "metrics": {"episodicReturn": float("nan")}}
        annotate_pod(kube, namespace, "cartpole-0", {contract.ANNOTATION_PROGRESS: json.dumps(early)})
        wait_for(
            lambda: get(kube, namespace, TJ, "cartpole"),
            until=lambda j: (j["status"].get("progress") or {}).get("step") == 1024,
            message="the early heartbeat in status",
        )
        final = {
            "step": 100352,
            "totalSteps": 100000,
            "loss": 0.02,
            "metrics": {"episodicReturn": 487.5, "entropy": 0.52, "evaluationReturn": 500.0},
        }
        annotate_pod(kube, namespace, "cartpole-0", {contract.ANNOTATION_PROGRESS: json.dumps(final)})
        job = wait_for(
            lambda: get(kube, namespace, TJ, "cartpole"),
            until=lambda j: (j["status"].get("progress") or {}).get("step") == 100352,
            message="the final heartbeat in status",
        )
        assert job["status"]["progress"]["metrics"]["evaluationReturn"] == 500.0
        row = _wide_row(kubectl, "cartpole")
        assert (row["STEP"], row["LOSS"], row["RETURN"], row["PROGRESS"]) == ("100352", "0.02", "487.5", "100")

        for pod in gang:
            exit_pod(kube, namespace, pod.metadata.name, 0)
        subprocess.run([*kubectl, "wait", "--for=condition=Succeeded", "tj/cartpole", "--timeout=60s"], check=True)
        done = get(kube, namespace, TJ, "cartpole")
        assert done["status"]["progress"]["metrics"]["evaluationReturn"] == 500.0  # kept once the gang is gone
