"""The composition root: every part of one operator process, built once at start-up.

The settings are read once, before this; the API server's session, the rank pod watch, the reconcilers with
the indexes they read, the workers and the metrics endpoint are made here and handed to kopf's
handlers through its ``memo``. Nothing else in the package holds state of the process.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kubernetes import client, config
from prometheus_client import start_http_server

from aidc.management.apiserver import ApiServer
from aidc.management.cluster import Cluster
from aidc.management.metrics import OperatorMetrics
from aidc.management.rank_pods import RankPods
from aidc.management.serving_reconciler import ServingIndexes, ServingReconciler
from aidc.management.training_reconciler import TrainingIndexes, TrainingReconciler
from aidc.management.workers import Workers
from aidc.settings import OperatorSettings


@dataclass(frozen=True)
class Operator:
    """The parts one operator process holds."""

    settings: OperatorSettings
    metrics: OperatorMetrics
    server: ApiServer
    rank_pods: RankPods
    training: TrainingReconciler
    training_workers: Workers
    serving: ServingReconciler
    serving_workers: Workers

    async def stop(self) -> None:
        """Workers first (a woken one makes its last pass with the client still open), then the watch."""
        await self.training_workers.stop()
        await self.serving_workers.stop()
        await self.rank_pods.stop()
        await self.server.close()


def api_configuration() -> client.Configuration:
    """The in-cluster identity, else the kubeconfig ``KUBECONFIG`` names now (not at import time)."""
    try:
        config.load_incluster_config()  # type: ignore[no-untyped-call]
    except config.ConfigException:
        config.load_kube_config(config_file=os.environ.get("KUBECONFIG"))  # type: ignore[no-untyped-call]
    return client.Configuration.get_default_copy()


def assemble(
    settings: OperatorSettings, clusterwide: bool, indexes: Mapping[str, Any], metrics: OperatorMetrics
) -> Operator:
    """The operator's parts; ``indexes``: kopf's live indexes by the name of their handler; ``metrics``:
    made before, so the endpoint also answers while a replica waits for the lease."""
    server = ApiServer(api_configuration(), settings.max_concurrent_api_calls)
    cluster = Cluster(server, metrics)

    def count_error(kind: str) -> None:
        metrics.reconcile_errors.labels(kind).inc()

    def wake_training(key: tuple[str, str]) -> None:
        # the pod watch wakes the workers whose passes read it: they are built just below
        training_workers.poke(key)

    rank_pods = RankPods(server, clusterwide, wake_training, metrics)
    training = TrainingReconciler(
        cluster,
        settings,
        TrainingIndexes(
            pods=rank_pods,
            services=indexes["job_services"],
            claims=indexes["claims"],
            policies=indexes["network_policies"],
        ),
        metrics,
    )
    training_workers = Workers(
        "TrainingJob",
        training.reconcile,
        settings.resync_seconds,
        count_error,
        settings.settle_seconds,
        ready=lambda key: rank_pods.ready(key[0]),  # a first pass waits for its namespace's pods
    )
    serving_indexes = ServingIndexes(
        deployments=indexes["serving_deployments"],
        services=indexes["serving_services"],
        autoscalers=indexes["serving_autoscalers"],
        training_models=indexes["training_models"],
        claims=indexes["claims"],
        policies=indexes["network_policies"],
    )
    serving = ServingReconciler(cluster, settings, serving_indexes, metrics)
    serving_workers = Workers("InferenceService", serving.reconcile, settings.resync_seconds, count_error)
    return Operator(settings, metrics, server, rank_pods, training, training_workers, serving, serving_workers)


def serve_metrics(settings: OperatorSettings, metrics: OperatorMetrics) -> None:
    """Start the metrics endpoint (a thread of prometheus_client's), unless its port is 0."""
    if settings.metrics_port:
        start_http_server(settings.metrics_port, registry=metrics.registry)


def count_the_fleet(operator: Operator) -> None:
    """The fleet's series are counted from the workers when Prometheus scrapes, not on every event
    (that was quadratic in a burst)."""
    operator.metrics.fleet.watch(operator.training_workers.held, operator.serving_workers.held)
