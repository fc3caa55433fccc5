"""The alerts and the dashboard on paper: every expression parses (promtool), every alert fires on
synthetic series as tests/observability/alerts_test.yaml expects, and has a runbook."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from tests.chart.rendering import REPO_ROOT, render_text, require_helm
from tests.observability.queries import (
    DASHBOARD,
    PROMTOOL,
    alerts,
    dashboard,
    panel_queries,
    require,
    rule_groups,
    write_rules,
)

HERE = Path(__file__).resolve().parent
RUNBOOKS = REPO_ROOT / "docs" / "observability.md"


def promtool(*args: str, cwd: Path | None = None) -> str:
    done = subprocess.run([str(require(PROMTOOL)), *args], capture_output=True, text=True, timeout=120, cwd=cwd,
                          check=False)  # fmt: skip
    assert done.returncode == 0, f"promtool {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def test_every_alert_and_every_dashboard_query_parses(tmp_path: Path) -> None:
    require_helm()
    groups = rule_groups()
    # the panels' queries as recording rules: promtool checks them as it checks the alerts
    panels = [{"record": f"aidc:dashboard_panel_{i}", "expr": expr} for i, (_, expr) in enumerate(panel_queries())]
    path = write_rules([*groups, {"name": "dashboard", "rules": panels}], tmp_path)
    output = promtool("check", "rules", str(path))
    assert f"SUCCESS: {len(alerts(groups)) + len(panels)} rules found" in output, output


def test_each_alert_fires_on_synthetic_series_and_only_then(tmp_path: Path) -> None:
    require_helm()
    write_rules(rule_groups(), tmp_path)
    shutil.copy(HERE / "alerts_test.yaml", tmp_path / "alerts_test.yaml")
    promtool("test", "rules", "alerts_test.yaml", cwd=tmp_path)


def test_every_alert_has_a_rule_test_a_runbook_and_a_summary() -> None:
    require_helm()
    tested = {case["alertname"] for test in yaml.safe_load((HERE / "alerts_test.yaml").read_text())["tests"]
              for case in test.get("alert_rule_test", [])}  # fmt: skip
    runbooks = {re.sub(r"[^a-z0-9]", "", line[4:].lower()) for line in RUNBOOKS.read_text().splitlines()
                if line.startswith("### ")}  # fmt: skip
    found = alerts(rule_groups())
    assert len(found) >= 8
    for alert in found:
        name = alert["alert"]
        assert name in tested, f"{name} has no case in alerts_test.yaml"
        assert alert["annotations"]["runbook_url"].endswith(f"#{name.lower()}")
        assert name.lower() in runbooks, f"{name} has no runbook section (### {name}) in {RUNBOOKS}"
        assert alert["annotations"]["summary"] and alert["labels"]["severity"] in ("warning", "critical")


def test_the_thresholds_are_the_values(tmp_path: Path) -> None:
    require_helm()
    values = {"pendingFor": "2h", "heartbeatStalledSeconds": 120, "restartsThreshold": 5, "restartsWindow": "3h"}
    by_name = {a["alert"]: a for a in alerts(rule_groups(values))}
    assert by_name["AidcTrainingJobStuckPending"]["for"] == "2h"
    assert "> 120" in by_name["AidcTrainingJobHeartbeatStalled"]["expr"]
    assert "[3h]" in by_name["AidcTrainingJobRestartsRepeating"]["expr"]
    assert ">= 5" in by_name["AidcTrainingJobRestartsRepeating"]["expr"]


def test_the_dashboard_is_what_hack_dashboard_writes() -> None:
    done = subprocess.run([sys.executable, str(REPO_ROOT / "hack" / "dashboard.py"), "--check"],
                          capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr


def test_the_dashboard_shows_what_the_issue_asks_for() -> None:
    text = json.dumps(dashboard())
    wanted = [
        "aidc_operator_trainingjobs",  # jobs by phase and namespace
        "aidc_operator_trainingjob_time_to_running_seconds_bucket",  # submit -> Running
        "aidc_operator_trainingjob_scheduling_wait_seconds_bucket",  # queue wait
        "aidc_operator_trainingjob_restarts_total",  # restarts by reason
        "aidc_operator_gpu_seconds_total",  # GPU-hours
        "aidc_trainer_step",
        "aidc_trainer_loss",
        "aidc_trainer_samples_per_second",
        "aidc_server_requests_total",
        "aidc_server_request_duration_seconds_bucket",
        "aidc_server_batch_size_bucket",
        "aidc_server_time_to_first_token_seconds_bucket",
        "aidc_server_generated_tokens_total",
        "aidc_operator_reconcile_duration_seconds_bucket",
        "aidc_operator_api_requests_total",
        "aidc_operator_pod_lists_total",  # watch restarts
    ]
    assert [w for w in wanted if w not in text] == []
    assert all(panel.get("targets") for panel in dashboard()["panels"] if panel["type"] != "row")


def test_the_chart_ships_the_dashboard_for_grafanas_sidecar() -> None:
    require_helm()
    values = {"metrics": {"dashboard": {"enabled": True, "namespace": "monitoring",
                                        "annotations": {"grafana_folder": "aidc"}}}}  # fmt: skip
    maps = [d for d in yaml.safe_load_all(render_text(values)) if d and d["kind"] == "ConfigMap"]
    (found,) = [m for m in maps if m["metadata"]["name"].endswith("-dashboard")]
    assert found["metadata"]["namespace"] == "monitoring"
    assert found["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert found["metadata"]["annotations"] == {"grafana_folder": "aidc"}
    assert json.loads(found["data"]["aidc-fleet.json"]) == json.loads(DASHBOARD.read_text())
    off = [d for d in yaml.safe_load_all(render_text()) if d and d["kind"] in ("ConfigMap", "PrometheusRule")]
    assert not [d for d in off if d["metadata"]["name"].endswith("-dashboard") or d["kind"] == "PrometheusRule"]
