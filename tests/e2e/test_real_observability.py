"""The dashboard and the alerts against a real Prometheus that scrapes a small fleet on the real node.

Prometheus (built from its pinned module) discovers its targets through the bed's API server with the
chart's own PodMonitors and ServiceMonitor, translated as the Prometheus Operator translates them: the
operator pods of the Helm release, rank 0 of each TrainingJob and the serving pods, relabelled with
their job or InferenceService. The fleet: a language model that trains and is served (v2, with bad
requests among the good, and the OpenAI routes), a job that fails at once, and one that restarts
before it fails. Then every dashboard query must have returned data, every series an alert reads must
exist with every label the alert groups or joins by, and the alerts the fleet earned must fire.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from aidc_testbed.realnodes import placement
from tests.chart.rendering import render_text
from tests.cluster.resources import condition, condition_is, create, get
from tests.e2e.conftest import Release
from tests.e2e.test_real_nodes import ISVC, TJ, finished, training_job, unique
from tests.observability import prometheus as prom
from tests.observability.monitors import scrape_configs
from tests.observability.queries import alerts, panel_queries, rule_groups, write_rules

pytestmark = pytest.mark.e2e
LANGUAGE_MODEL = {
    "task": "language-model", "dataset": {"source": "synthetic"}, "epochs": 1000, "maxSteps": 1600, "batchSize": 8,
    "learningRate": 0.003, "seed": 0, "languageModel": {"contextLength": 32, "layers": 2, "heads": 2, "embedding": 64},
}  # fmt: skip


def _monitors(release: Release) -> list[dict[str, Any]]:
    """The chart's PodMonitors and ServiceMonitor, as the e2e release would install them."""
    values = {"watchNamespaces": [release.watched],
              "metrics": {"serviceMonitor": {"enabled": True}, "podMonitors": {"enabled": True}}}  # fmt: skip
    text = render_text(values, release=release.name, namespace=release.namespace)
    return [d for d in yaml.safe_load_all(text) if d and d["kind"] in ("PodMonitor", "ServiceMonitor")]


def _failing_job(name: str, backoff_limit: int) -> dict[str, Any]:
    """A rank that exits 1 at once: a job that fails, or restarts ``backoff_limit`` times first."""
    body = training_job(name, max_steps=10, every_steps=10, replicas=1,
                        command=["python", "-c", "raise SystemExit(1)"])  # fmt: skip
    body["spec"]["failurePolicy"] = {"restartPolicy": "OnFailure", "backoffLimit": backoff_limit, "backoffSeconds": 0}
    return body


def _start_fleet(kube: client.ApiClient, namespace: str) -> dict[str, str]:
    names = {"lm": unique("lm"), "fails": unique("fails"), "flaky": unique("flaky")}
    lm = training_job(names["lm"], max_steps=1600, every_steps=400, replicas=1)
    lm["spec"]["trainer"] = LANGUAGE_MODEL
    create(kube, namespace, TJ, lm)
    create(kube, namespace, TJ, _failing_job(names["fails"], 0))
    create(kube, namespace, TJ, _failing_job(names["flaky"], 1))
    isvc = {"apiVersion": "aidc.io/v1alpha1", "kind": "InferenceService", "metadata": {"name": names["lm"]},
            "spec": {"model": {"fromTrainingJob": {"name": names["lm"]}}, "placement": placement(),
                     "resources": {"cpu": "500m", "memory": "1Gi"}}}  # fmt: skip
    create(kube, namespace, ISVC, isvc)
    return names


def _post(url: str, body: Any) -> int:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


def _ask(kube: client.ApiClient, namespace: str, name: str) -> list[int]:
    """A few requests straight to the serving pod (the host reaches pod addresses on the bridge)."""
    pods = client.CoreV1Api(kube).list_namespaced_pod(namespace, label_selector=f"aidc.io/inference-service={name}")
    base = f"http://{next(p.status.pod_ip for p in pods.items if p.status.pod_ip)}:8080"
    ids = {"inputs": [{"name": "input_ids", "shape": [1, 4], "datatype": "INT64", "data": [72, 105, 33, 32]}]}
    codes = [_post(f"{base}/v2/models/{name}/infer", ids) for _ in range(5)]
    codes += [_post(f"{base}/v2/models/{name}/infer", {"inputs": "not a list"}) for _ in range(2)]
    completion = {"model": name, "prompt": "hello", "max_tokens": 8, "temperature": 0}
    return codes + [_post(f"{base}/v1/completions", completion) for _ in range(3)]


def test_every_dashboard_query_and_alert_reads_real_series_of_a_small_fleet(
    kube: client.ApiClient, testbed: Any, release: Release, wait_for: Callable[..., Any], tmp_path: Path
) -> None:
    namespace = release.watched
    rules = write_rules(rule_groups({"restartsThreshold": 1}), tmp_path)  # one restart is enough here
    with prom.running(tmp_path, scrape_configs(_monitors(release), testbed.kubeconfig), [rules]) as prometheus:
        # the operator scraped first: the fleet's first waits must land on series Prometheus already has
        wait_for(lambda: prometheus.has_data("aidc_operator_leader == 1"), timeout=60)
        names = _start_fleet(kube, namespace)
        try:
            _check_the_fleet(kube, prometheus, namespace, names, wait_for)
        finally:  # the server would take the real node's CPU from the tests after this one
            client.CustomObjectsApi(kube).delete_namespaced_custom_object(
                "aidc.io", "v1alpha1", namespace, ISVC, names["lm"]
            )


def _check_the_fleet(
    kube: client.ApiClient, prometheus: prom.Prometheus, namespace: str, names: dict[str, str],
    wait_for: Callable[..., Any],
) -> None:  # fmt: skip
    # rank 0 serves its series only while it trains, and Prometheus's discovery hands new targets to
    # the scrapers at most every 5 s: 400 steps (4 s on an idle machine) once ended unscraped
    _scraped(prometheus, f'aidc_trainer_step{{trainingjob="{names["lm"]}"}} > 0', wait_for, timeout=120)
    done = {key: finished(kube, namespace, name, wait_for) for key, name in names.items()}
    assert condition_is(done["lm"], "Succeeded"), done["lm"]["status"]
    for key in ("fails", "flaky"):
        assert condition(done[key], "Failed")["reason"] == "BackoffLimitExceeded", done[key]["status"]
    assert done["flaky"]["status"]["restarts"] == 1
    wait_for(lambda: get(kube, namespace, ISVC, names["lm"]), until=lambda s: condition_is(s, "Ready"), timeout=240)
    # two rounds, each scraped whole before the next: a server's series are born with their first
    # request, and a rate (what the panels show) needs an increase after that. A scrape in the middle
    # of a round proves nothing for the requests after it, so each wait counts the round's last
    # requests, the completions, which _ask sends after the others.
    for round_ in (1, 2):
        assert _ask(kube, namespace, names["lm"]) == [200] * 5 + [400] * 2 + [200] * 3
        completions = f'sum(aidc_server_requests_total{{endpoint="/v1/completions", code="200"}}) >= {3 * round_}'
        _scraped(prometheus, completions, wait_for, timeout=60)
    _the_dashboard_had_data(prometheus)
    _the_alerts_read_real_labels(prometheus)
    _the_earned_alerts_fire(prometheus, namespace, names, wait_for)


def _scraped(prometheus: prom.Prometheus, expr: str, wait_for: Callable[..., Any], timeout: float) -> None:
    """Waits until ``expr`` has data; a failure lists the targets Prometheus discovered and their health."""
    try:
        wait_for(lambda: prometheus.has_data(expr), timeout=timeout)
    except Exception as error:
        raise AssertionError(f"{expr}: no data; targets: {prometheus.targets()}") from error


def _the_dashboard_had_data(prometheus: prom.Prometheus) -> None:
    empty = [(title, expr) for title, expr in panel_queries() if not prometheus.has_data(expr)]
    seen = {s["name"]: _history(prometheus, s["name"]) for _, e in empty for s in prom.selectors(prometheus.parse(e))}
    assert not empty, f"dashboard queries that never returned data: {empty}; what their series held: {seen}"


def _history(prometheus: prom.Prometheus, metric: str) -> list[tuple[dict[str, str], list[str]]]:
    """Each series of ``metric`` with the distinct values it took, in order: what a failure shows."""
    found = []
    for series in prometheus.query_range(metric)[:6]:
        values = [v for i, (_, v) in enumerate(series["values"]) if i == 0 or v != series["values"][i - 1][1]]
        found.append((series["metric"], values[:8]))
    return found


def _the_alerts_read_real_labels(prometheus: prom.Prometheus) -> None:
    missing = []
    for alert in alerts(rule_groups()):
        prometheus.query_range(alert["expr"])  # evaluates, whatever it returns
        for metric, labels in prom.label_demands(prometheus.parse(alert["expr"])):
            sets = prometheus.label_sets(metric)
            if not any(labels <= found.keys() for found in sets):
                missing.append((alert["alert"], metric, sorted(labels), sets[:2]))
    assert not missing, f"alerts reading series that do not exist with those labels: {missing}"
    rules = [r for g in prometheus.api("rules")["groups"] for r in g["rules"]]
    assert rules and all(r["health"] == "ok" for r in rules), [(r["name"], r.get("lastError")) for r in rules]


def _the_earned_alerts_fire(
    prometheus: prom.Prometheus, namespace: str, names: dict[str, str], wait_for: Callable[..., Any]
) -> None:
    def firing() -> set[tuple[str, str]]:
        found = prometheus.api("alerts")["alerts"]
        return {(a["labels"]["alertname"], a["labels"].get("trainingjob", "")) for a in found
                if a["state"] == "firing" and a["labels"].get("namespace") == namespace}  # fmt: skip

    earned = {("AidcTrainingJobBackoffLimitExceeded", names["fails"]),
              ("AidcTrainingJobBackoffLimitExceeded", names["flaky"]),
              ("AidcTrainingJobRestartsRepeating", names["flaky"])}  # fmt: skip
    wait_for(firing, until=lambda now: earned <= now, timeout=30)
    assert ("AidcTrainingJobBackoffLimitExceeded", names["lm"]) not in firing()
