"""What the observability tests check: the chart's alerting rules, the dashboard's queries, promtool.

The rules come from ``helm template`` of the chart (what a user installs), not from a copy; the
dashboard's queries from its JSON, with Grafana's variables given values a Prometheus accepts.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.chart.rendering import CHART, TOOLS, render_text

PROMTOOL = TOOLS / "promtool"
PROMETHEUS = TOOLS / "prometheus"
DASHBOARD = CHART / "dashboards" / "aidc-fleet.json"
# Grafana's variables as a query run by hand gets them: every namespace, a window that holds a few scrapes
VARIABLES = {"$__rate_interval": "1m", "$__range": "15m", "$__interval": "15s"}


def require(binary: Path) -> Path:
    """``binary``, or a skip when `make tools` has not built it."""
    if not binary.is_file():
        pytest.skip(f"{binary} is not built (make tools)")
    return binary


def rule_groups(values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """The groups of the chart's PrometheusRule, rendered with ``values`` under metrics.prometheusRule."""
    rule = {"enabled": True, **(values or {})}
    documents = yaml.safe_load_all(render_text({"metrics": {"prometheusRule": rule}}))
    found = [d for d in documents if d and d.get("kind") == "PrometheusRule"]
    assert len(found) == 1, found
    groups: list[dict[str, Any]] = found[0]["spec"]["groups"]
    return groups


def alerts(groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def write_rules(groups: list[dict[str, Any]], folder: Path) -> Path:
    """A rules file as Prometheus and promtool read it."""
    path = folder / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
    return path


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def panel_queries(namespace: str = ".*") -> list[tuple[str, str]]:
    """(panel title, query) of every panel, with the dashboard's variables filled in."""
    found = []
    for panel in dashboard()["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"].replace("$namespace", namespace)
            for variable, value in VARIABLES.items():
                expr = expr.replace(variable, value)
            found.append((panel["title"], expr))
    return found
