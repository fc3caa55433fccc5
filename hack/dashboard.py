"""Writes the fleet's Grafana dashboard, charts/aidc-operator/dashboards/aidc-fleet.json (`make dashboard`).

The panels are written here, a line each, rather than in the JSON, so a reviewer reads the queries and
not Grafana's layout keys; tests/observability checks the JSON is what this writes, that every query
parses, and that every query returns data from a Prometheus that scraped a real workload.
Usage: python hack/dashboard.py [--check]
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parents[1] / "charts" / "aidc-operator" / "dashboards" / "aidc-fleet.json"
NS = 'namespace=~"$namespace"'
RATE = "$__rate_interval"


@dataclass(frozen=True)
class Panel:
    title: str
    queries: tuple[tuple[str, str], ...]  # (expression, legend)
    unit: str = "short"
    kind: str = "timeseries"
    description: str = ""


def quantiles(metric: str, by: str, selector: str = NS) -> tuple[tuple[str, str], ...]:
    """p50, p90 and p99 of a histogram, each a query."""
    by_le = f"{by}, le" if by else "le"
    legend = "{{" + by.replace(", ", "}} {{") + "}} " if by else ""
    series = f"{metric}_bucket{{{selector}}}" if selector else f"{metric}_bucket"
    return tuple(
        (f"histogram_quantile({q}, sum by ({by_le}) (rate({series}[{RATE}])))", f"{legend}p{p}")
        for q, p in ((0.5, 50), (0.9, 90), (0.99, 99))
    )


def sel(metric: str, extra: str = "") -> str:
    """``metric`` in the namespaces the dashboard's variable chose."""
    return f"{metric}{{{', '.join(m for m in (NS, extra) if m)}}}"


def rate(metric: str, extra: str = "") -> str:
    return f"rate({sel(metric, extra)}[{RATE}])"


FAILED = 'code=~"4..|5.."'
JOB, SERVICE = "{{namespace}}/{{trainingjob}}", "{{namespace}}/{{inferenceservice}}"

FLEET = [
    Panel(
        "TrainingJobs by phase", ((f"sum by (phase) ({sel('aidc_operator_trainingjobs')})", "{{phase}}"),), kind="stat"
    ),
    Panel(
        "TrainingJobs by namespace and phase",
        ((f"sum by (namespace, phase) ({sel('aidc_operator_trainingjobs')}) > 0", "{{namespace}} {{phase}}"),),
    ),
    Panel(
        "Submit to Running",
        quantiles("aidc_operator_trainingjob_time_to_running_seconds", ""),
        unit="s",
        description="A job's creation to all ranks of its first gang running.",
    ),
    Panel(
        "Queue wait",
        quantiles("aidc_operator_trainingjob_scheduling_wait_seconds", ""),
        unit="s",
        description="A gang's creation to all its ranks running: queueing (Kueue, Volcano) and scheduling.",
    ),
    Panel(
        "Gang restarts by reason",
        ((f"sum by (reason) (increase({sel('aidc_operator_trainingjob_restarts_total')}[$__range]))", "{{reason}}"),),
        kind="bargauge",
    ),
    Panel(
        "GPU-hours by namespace",
        (
            (
                f"sum by (namespace) (increase({sel('aidc_operator_gpu_seconds_total')}[$__range])) / 3600",
                "{{namespace}}",
            ),
        ),
        kind="bargauge",
    ),
    Panel("GPUs in use", ((f"sum by (namespace) ({sel('aidc_operator_trainingjob_gpus')})", "{{namespace}}"),)),
]

TRAINING = [
    Panel(
        "Progress",
        ((f"max by (namespace, trainingjob) ({sel('aidc_trainer_step')} / {sel('aidc_trainer_total_steps')})", JOB),),
        unit="percentunit",
    ),
    Panel("Loss", ((f"max by (namespace, trainingjob) ({sel('aidc_trainer_loss')})", JOB),)),
    Panel(
        "Throughput",
        ((f"max by (namespace, trainingjob) ({sel('aidc_trainer_samples_per_second')})", JOB),),
        unit="samples/s",
    ),
    Panel(
        "Validation metrics",
        (
            (
                f"max by (namespace, trainingjob, metric) ({sel('aidc_trainer_validation_metric')})",
                f"{JOB} {{{{metric}}}}",
            ),
        ),
    ),
    Panel("Checkpoint save and load", quantiles("aidc_trainer_checkpoint_seconds", "operation"), unit="s"),
]

SERVING = [
    Panel(
        "InferenceServices by phase",
        ((f"sum by (namespace, phase) ({sel('aidc_operator_inferenceservices')}) > 0", "{{namespace}} {{phase}}"),),
    ),
    Panel(
        "Requests",
        (
            (
                f"sum by (namespace, inferenceservice, code) ({rate('aidc_server_requests_total')})",
                f"{SERVICE} {{{{code}}}}",
            ),
        ),
        unit="reqps",
    ),
    Panel(
        "Errors (4xx and 5xx)",
        (
            (
                f"sum by (namespace, inferenceservice, code) ({rate('aidc_server_requests_total', FAILED)})",
                f"{SERVICE} {{{{code}}}}",
            ),
        ),
        unit="reqps",
    ),
    Panel(
        "Request latency",
        quantiles("aidc_server_request_duration_seconds", "namespace, inferenceservice", f'{NS}, endpoint!="/metrics"'),
        unit="s",
    ),
    Panel(
        "Batch size",
        quantiles("aidc_server_batch_size", "namespace, inferenceservice"),
        description="Rows per forward pass of the dynamic batcher.",
    ),
    Panel(
        "Time to first token",
        quantiles("aidc_server_time_to_first_token_seconds", "namespace, inferenceservice"),
        unit="s",
    ),
    Panel(
        "Generated tokens/s",
        ((f"sum by (namespace, inferenceservice) ({rate('aidc_server_generated_tokens_total')})", SERVICE),),
    ),
]

OPERATOR = [
    Panel("Leading replicas", (("sum(aidc_operator_leader)", "leaders"),), kind="stat"),
    Panel("Reconcile latency", quantiles("aidc_operator_reconcile_duration_seconds", "kind", ""), unit="s"),
    Panel(
        "Reconcile errors",
        ((f"sum by (kind) (rate(aidc_operator_reconcile_errors_total[{RATE}]))", "{{kind}}"),),
        unit="ops",
    ),
    Panel(
        "API requests",
        (
            (
                f"sum by (verb, resource, code) (rate(aidc_operator_api_requests_total[{RATE}]))",
                "{{verb}} {{resource}} {{code}}",
            ),
        ),
        unit="reqps",
    ),
    Panel(
        "Rank pod watch restarts",
        ((f"sum by (reason) (increase(aidc_operator_pod_lists_total[{RATE}]))", "{{reason}}"),),
        description="Lists of rank pods: one per watch start, more when a watch expired or failed.",
    ),
    Panel(
        "Operator memory",
        (("process_resident_memory_bytes and on (instance) aidc_operator_leader", "{{instance}}"),),
        unit="bytes",
    ),
]

ROWS = (("Fleet", FLEET), ("Training", TRAINING), ("Serving", SERVING), ("Operator", OPERATOR))


def _panel(panel: Panel, panel_id: int, x: int, y: int) -> dict[str, Any]:
    targets = [
        {"refId": chr(ord("A") + i), "expr": expr, "legendFormat": legend, "datasource": {"uid": "${datasource}"}}
        for i, (expr, legend) in enumerate(panel.queries)
    ]
    return {
        "id": panel_id,
        "type": panel.kind,
        "title": panel.title,
        "description": panel.description,
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "gridPos": {"h": 8, "w": 8, "x": x, "y": y},
        "fieldConfig": {"defaults": {"unit": panel.unit}, "overrides": []},
        "targets": targets,
    }


def dashboard() -> dict[str, Any]:
    panels: list[dict[str, Any]] = []
    y = 0
    for title, row in ROWS:
        panels.append({"id": len(panels) + 1, "type": "row", "title": title, "collapsed": False,
                       "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}, "panels": []})  # fmt: skip
        y += 1
        for i, panel in enumerate(row):
            panels.append(_panel(panel, len(panels) + 1, (i % 3) * 8, y + (i // 3) * 8))
        y += ((len(row) + 2) // 3) * 8
    return {
        "uid": "aidc-fleet",
        "title": "aidc: training and serving fleet",
        "tags": ["aidc"],
        "timezone": "utc",
        "schemaVersion": 39,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {"list": [_datasource(), _namespace()]},
        "panels": panels,
    }


def _datasource() -> dict[str, Any]:
    return {"name": "datasource", "label": "Prometheus", "type": "datasource", "query": "prometheus"}


def _namespace() -> dict[str, Any]:
    return {
        "name": "namespace",
        "label": "Namespace",
        "type": "query",
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "query": "label_values(aidc_operator_trainingjobs, namespace)",
        "includeAll": True,
        "multi": True,
        "allValue": ".*",
        "current": {"text": "All", "value": "$__all"},
        "refresh": 2,
    }


def rendered() -> str:
    return json.dumps(dashboard(), indent=1) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail when the checked-in JSON differs")
    args = parser.parse_args()
    if args.check:
        if not OUT.exists() or OUT.read_text() != rendered():
            print(f"{OUT} is out of date: run `make dashboard`", file=sys.stderr)
            return 1
        return 0
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(rendered())
    return 0


if __name__ == "__main__":
    sys.exit(main())
