"""The operator as production runs it: its own process (`aidc run`), liveness and Prometheus metrics."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from tests.cluster.resources import condition_is, create, exit_pod, get, pods
from tests.factories import training_job_body

pytestmark = pytest.mark.cluster


@pytest.fixture
def operator_process(testbed: Any, namespace: str, tmp_path: Path) -> Iterator[dict[str, int]]:
    from aidc_testbed.ports import free_ports

    metrics, health = free_ports(2)
    env = {**os.environ, "KUBECONFIG": str(testbed.kubeconfig), "AIDC_METRICS_PORT": str(metrics),
           "AIDC_HEALTH_PORT": str(health), "AIDC_NAMESPACES": namespace}  # fmt: skip
    log = (tmp_path / "operator.log").open("wb")
    aidc = Path(sys.executable).with_name("aidc")
    argv = [str(aidc), "run", "--standalone", "--log-format", "json"]
    process = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield {"metrics": metrics, "health": health}
    finally:
        process.terminate()
        text = (tmp_path / "operator.log").read_text()
        assert process.wait(timeout=30) == 0, text[-3000:]
    # every line one JSON object with the keys the trainer and the server write
    lines = [json.loads(line) for line in text.splitlines() if line.strip()]
    assert lines and all({"time", "level", "logger", "message"} <= line.keys() for line in lines), text[-3000:]


def _get(port: int, path: str) -> tuple[int, str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
        return response.status, response.read().decode()


def test_operator_process_serves_liveness_and_metrics(
    kube: client.ApiClient,
    crds_applied: list[str],
    namespace: str,
    operator_process: dict[str, int],
    wait_for: Callable[..., Any],
) -> None:
    wait_for(lambda: _get(operator_process["health"], "/healthz")[0] == 200, ignore=(OSError,), timeout=30)
    create(kube, namespace, "trainingjobs", training_job_body("metered", {"replicas": 2}))
    wait_for(
        lambda: get(kube, namespace, "trainingjobs", "metered"), until=lambda j: condition_is(j, "Running"), timeout=60
    )
    for pod in pods(kube, namespace, "metered"):
        exit_pod(kube, namespace, pod.metadata.name, 0)
    wait_for(
        lambda: get(kube, namespace, "trainingjobs", "metered"),
        until=lambda j: condition_is(j, "Succeeded"),
        timeout=60,
    )
    text = wait_for(
        lambda: _get(operator_process["metrics"], "/metrics")[1],
        until=lambda t: f'aidc_operator_trainingjobs{{namespace="{namespace}",phase="Succeeded"}} 1.0' in t,
    )
    assert 'aidc_operator_trainingjob_transitions_total{from_phase="Running",to_phase="Succeeded"} 1.0' in text
    assert 'aidc_operator_api_requests_total{code="2xx",resource="pod",verb="create"} 2.0' in text
    assert f'aidc_operator_trainingjob_time_to_running_seconds_count{{namespace="{namespace}"}} 1.0' in text
    labels = f'namespace="{namespace}",phase="Succeeded",reason="Succeeded",trainingjob="metered"'
    assert f"aidc_operator_trainingjob_phase{{{labels}}} 1.0" in text
    assert "aidc_operator_reconcile_duration_seconds_count" in text
