"""A real Prometheus (the bed's build, ``make tools``) for the tests, and what they ask of its HTTP API.

Queries are range queries over the test's window, as a dashboard asks them: the trainers' series
end with their pods, so an instant query at the end would miss them.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from aidc_testbed.ports import free_ports
from aidc_testbed.process import spawn, stop
from tests.observability.queries import PROMETHEUS, require


@dataclass(frozen=True)
class Prometheus:
    url: str
    started: float  # Unix time: the start of every range query

    def api(self, path: str, **params: str) -> Any:
        query = urllib.parse.urlencode(params, doseq=True)
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}?{query}", timeout=30) as response:
            body = json.load(response)
        assert body["status"] == "success", body
        return body["data"]

    def query_range(self, expr: str) -> list[dict[str, Any]]:
        """Every series ``expr`` gave from the start until now, a point a second."""
        data = self.api("query_range", query=expr, start=str(self.started), end=str(time.time()), step="1s")
        return list(data["result"])

    def has_data(self, expr: str) -> bool:
        """Whether ``expr`` had a finite value at any point of the window."""
        return any(math.isfinite(float(v)) for series in self.query_range(expr) for _, v in series["values"])

    def label_sets(self, metric: str) -> list[dict[str, str]]:
        data = self.api("series", **{"match[]": metric, "start": str(self.started), "end": str(time.time())})
        return list(data)

    def targets(self) -> list[tuple[str, str, str, str]]:
        """(scrape job, address, health, last error) of every target Prometheus discovered: what a
        failing test shows."""
        active = self.api("targets")["activeTargets"]
        return [(t["scrapePool"], t["scrapeUrl"], t["health"], t["lastError"]) for t in active]

    def parse(self, expr: str) -> dict[str, Any]:
        """The expression's syntax tree, as the Prometheus UI's explain view gets it."""
        tree: dict[str, Any] = self.api("parse_query", query=expr)
        return tree


@contextlib.contextmanager
def running(folder: Path, scrape_configs: list[dict[str, Any]], rule_files: list[Path]) -> Iterator[Prometheus]:
    """Prometheus on a loopback port, scraping ``scrape_configs`` and evaluating ``rule_files`` every second."""
    binary = require(PROMETHEUS)
    port = free_ports(1)[0]
    config = {"global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
              "rule_files": [str(p) for p in rule_files], "scrape_configs": scrape_configs}  # fmt: skip
    (folder / "prometheus.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    argv = [str(binary), f"--config.file={folder / 'prometheus.yaml'}", f"--storage.tsdb.path={folder / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"]  # fmt: skip
    started = time.time()
    process = spawn("prometheus", argv, folder / "prometheus.log", die_with_parent=True)
    prometheus = Prometheus(f"http://127.0.0.1:{port}", started)
    try:
        _wait_ready(prometheus, folder / "prometheus.log")
        yield prometheus
    finally:
        stop([process])


def _wait_ready(prometheus: Prometheus, log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), urllib.request.urlopen(f"{prometheus.url}/-/ready", timeout=2) as answer:
            if answer.status == 200:
                return
        time.sleep(0.25)
    raise AssertionError(f"Prometheus not ready after {timeout}s:\n{log.read_text()[-3000:]}")


def selectors(node: Any) -> list[dict[str, Any]]:
    """The vector and matrix selectors of a parsed expression."""
    if not isinstance(node, dict):
        return []
    if node.get("type") in ("vectorSelector", "matrixSelector"):
        return [node]
    return [s for key in ("expr", "lhs", "rhs", "param") for s in selectors(node.get(key))] + [
        s for arg in node.get("args", []) for s in selectors(arg)
    ]


def label_demands(node: Any) -> list[tuple[str, frozenset[str]]]:
    """(metric, labels its series must carry) for every selector of a parsed expression: the labels its
    matchers name, and those of every ``by`` and ``on`` above it."""
    if not isinstance(node, dict):
        return []
    kind = node.get("type")
    if kind in ("vectorSelector", "matrixSelector"):
        named = frozenset(m["name"] for m in node.get("matchers", []) if m["name"] != "__name__")
        return [(node["name"], named)]
    demanded: frozenset[str] = frozenset()
    if kind == "aggregation" and not node.get("without"):
        demanded = frozenset(node.get("grouping") or ())
    elif kind == "binaryExpr" and (node.get("matching") or {}).get("on"):
        demanded = frozenset(node["matching"].get("labels") or ())
    found = [(s["name"], demanded) for s in selectors(node)] if demanded else []
    children = [node.get(key) for key in ("expr", "lhs", "rhs", "param")] + list(node.get("args", []))
    return found + [d for child in children for d in label_demands(child)]
