"""The chart's PodMonitors and ServiceMonitor as the scrape configs the Prometheus Operator makes of them.

The bed runs no Prometheus Operator, so the tests translate its objects the way it does (the selector
into keep rules on the discovered labels, the port by name, finished pods dropped, namespace, pod and
job labels, then the monitor's own relabelings) and hand them to a real Prometheus. What the monitors
select and how they relabel is then what the dashboard's queries see.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

RELABEL_KEYS = {"sourceLabels": "source_labels", "targetLabel": "target_label", "regex": "regex",
                "action": "action", "replacement": "replacement", "separator": "separator"}  # fmt: skip


def _sanitized(label: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_]", "_", label)


def _keep_labels(role: str, match_labels: dict[str, str]) -> list[dict[str, Any]]:
    return [
        {"source_labels": [f"__meta_kubernetes_{role}_label_{_sanitized(k)}",
                           f"__meta_kubernetes_{role}_labelpresent_{_sanitized(k)}"],
         "regex": f"({re.escape(v)});true", "action": "keep"}
        for k, v in sorted(match_labels.items())
    ]  # fmt: skip


def _relabelings(endpoint: dict[str, Any]) -> list[dict[str, Any]]:
    return [{RELABEL_KEYS[k]: v for k, v in r.items()} for r in endpoint.get("relabelings", [])]


def _discovery(role: str, kubeconfig: Path, selector: dict[str, Any], default: str) -> dict[str, Any]:
    config: dict[str, Any] = {"role": role, "kubeconfig_file": str(kubeconfig)}
    if not selector.get("any"):
        config["namespaces"] = {"names": selector.get("matchNames") or [default]}
    return config


def pod_monitor_jobs(monitor: dict[str, Any], kubeconfig: Path, interval: str) -> list[dict[str, Any]]:
    """One scrape config per endpoint of a PodMonitor."""
    meta, spec = monitor["metadata"], monitor["spec"]
    jobs = []
    for i, endpoint in enumerate(spec["podMetricsEndpoints"]):
        relabel = [
            *_keep_labels("pod", spec["selector"].get("matchLabels", {})),
            {"source_labels": ["__meta_kubernetes_pod_phase"], "regex": "(Failed|Succeeded)", "action": "drop"},
            {"source_labels": ["__meta_kubernetes_pod_container_port_name"], "regex": endpoint["port"],
             "action": "keep"},
            {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
            {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
            {"target_label": "job", "replacement": f"{meta['namespace']}/{meta['name']}"},
            *_relabelings(endpoint),
        ]  # fmt: skip
        discovery = _discovery("pod", kubeconfig, spec.get("namespaceSelector", {}), meta["namespace"])
        jobs.append(_job(f"podMonitor/{meta['namespace']}/{meta['name']}/{i}", endpoint, interval, relabel, discovery))
    return jobs


def service_monitor_jobs(monitor: dict[str, Any], kubeconfig: Path, interval: str) -> list[dict[str, Any]]:
    """One scrape config per endpoint of a ServiceMonitor (by EndpointSlices, as the operator does now)."""
    meta, spec = monitor["metadata"], monitor["spec"]
    jobs = []
    for i, endpoint in enumerate(spec["endpoints"]):
        relabel = [
            *_keep_labels("service", spec["selector"].get("matchLabels", {})),
            {"source_labels": ["__meta_kubernetes_endpointslice_port_name"], "regex": endpoint["port"],
             "action": "keep"},
            {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
            {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
            {"source_labels": ["__meta_kubernetes_service_name"], "target_label": "job"},
            *_relabelings(endpoint),
        ]  # fmt: skip
        discovery = _discovery("endpointslice", kubeconfig, spec.get("namespaceSelector", {}), meta["namespace"])
        name = f"serviceMonitor/{meta['namespace']}/{meta['name']}/{i}"
        jobs.append(_job(name, endpoint, interval, relabel, discovery))
    return jobs


def _job(name: str, endpoint: dict[str, Any], interval: str, relabel: list[dict[str, Any]],
         discovery: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
    return {
        "job_name": name,
        "scrape_interval": interval,  # the chart's 30s would make a test wait minutes
        "scrape_timeout": interval,
        "honor_labels": bool(endpoint.get("honorLabels", False)),
        "metrics_path": endpoint.get("path", "/metrics"),
        "scheme": endpoint.get("scheme", "http"),
        "kubernetes_sd_configs": [discovery],
        "relabel_configs": relabel,
    }


def scrape_configs(objects: list[dict[str, Any]], kubeconfig: Path, interval: str = "1s") -> list[dict[str, Any]]:
    """The scrape configs of every PodMonitor and ServiceMonitor among ``objects``."""
    jobs = []
    for obj in objects:
        if obj.get("kind") == "PodMonitor":
            jobs += pod_monitor_jobs(obj, kubeconfig, interval)
        elif obj.get("kind") == "ServiceMonitor":
            jobs += service_monitor_jobs(obj, kubeconfig, interval)
    return jobs
