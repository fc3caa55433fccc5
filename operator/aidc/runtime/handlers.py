"""kopf wiring: watch events feed indexes and poke the per-resource workers. Nothing else.

Run with ``kopf run -m aidc.runtime.handlers`` (``aidc run`` does it with the settings of
the Helm chart). Handlers only observe: all decisions live in the pure decision modules.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Iterable
from typing import Any

import kopf
from kubernetes import client, config
from prometheus_client import start_http_server

from aidc import contract
from aidc.management import metrics
from aidc.management.apiserver import ApiServer
from aidc.management.cluster import Cluster
from aidc.management.rank_pods import RankPods
from aidc.management.serving_decision import deployment_view
from aidc.management.serving_reconciler import ServingReconciler
from aidc.management.training_reconciler import TrainingReconciler
from aidc.management.workers import Workers
from aidc.settings import OperatorSettings

log = logging.getLogger(__name__)
GROUP_VERSION = (contract.GROUP, contract.VERSION)


class _NoDiffBase(kopf.AnnotationsDiffBaseStorage):
    """kopf's diff base, never built: aidc has no on.create/update/resume handlers, daemons or timers.

    kopf builds a diff-base "essence" of every object on every watch event (two deep copies of
    the body), but only changing handlers, daemons and timers read it; the handlers here only
    index and poke workers. Under a burst that copying was the largest single cost of the
    operator (a fifth of its CPU). Adding a changing handler means removing this class.
    """

    def build(self, *, body: kopf.Body, extra_fields: Iterable[Any] | None = None) -> kopf.BodyEssence:
        return kopf.BodyEssence()


class _Operator:
    """The state one operator process holds; built at start-up."""

    training: TrainingReconciler
    training_workers: Workers
    rank_pods: RankPods
    server: ApiServer
    serving: ServingReconciler
    serving_workers: Workers


STATE = _Operator()


def _api_client(settings: OperatorSettings) -> client.ApiClient:
    try:
        config.load_incluster_config()  # type: ignore[no-untyped-call]
    except config.ConfigException:
        # KUBECONFIG is read now, not at import time as the client's default does
        config.load_kube_config(config_file=os.environ.get("KUBECONFIG"))  # type: ignore[no-untyped-call]
    configuration = client.Configuration.get_default_copy()
    # one connection per concurrent call: urllib3's default pool of 10 serialises a gang's creation
    configuration.connection_pool_maxsize = settings.max_concurrent_api_calls
    return client.ApiClient(configuration)


@kopf.on.startup()
async def start(settings: kopf.OperatorSettings, **_: Any) -> None:
    operator = OperatorSettings.from_env()
    settings.persistence.finalizer = f"{contract.GROUP}/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=contract.GROUP)
    settings.persistence.diffbase_storage = _NoDiffBase(prefix=contract.GROUP, key="last-handled-configuration")
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 30
    settings.networking.request_timeout = 60
    api = _api_client(operator)
    STATE.server = ApiServer(api.configuration, operator.max_concurrent_api_calls)
    cluster = Cluster(api, STATE.server, operator.max_concurrent_api_calls)
    STATE.training = TrainingReconciler(cluster, operator)
    # rank pods are watched by the operator itself, not by kopf (see rank_pods.py), in kopf's scope
    STATE.rank_pods = RankPods(STATE.server, settings.peering.clusterwide, _poke_training)
    STATE.training.pods = STATE.rank_pods
    STATE.training_workers = Workers(
        "TrainingJob",
        STATE.training.reconcile,
        operator.resync_seconds,
        lambda kind: metrics.RECONCILE_ERRORS.labels(kind).inc(),
        operator.settle_seconds,
        ready=lambda key: STATE.rank_pods.ready(key[0]),
    )
    STATE.serving = ServingReconciler(cluster, operator)
    STATE.serving_workers = Workers(
        "InferenceService",
        STATE.serving.reconcile,
        operator.resync_seconds,
        lambda kind: metrics.RECONCILE_ERRORS.labels(kind).inc(),
    )
    if operator.metrics_port:
        start_http_server(operator.metrics_port)
    metrics.JOBS.clear()
    _export_phase_counts()


@kopf.on.login()
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """In-cluster token, else the kubeconfig KUBECONFIG names when the operator starts."""
    return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)


@kopf.on.cleanup()
async def stop(**_: Any) -> None:
    if hasattr(STATE, "training_workers"):
        await STATE.training_workers.stop()
    if hasattr(STATE, "serving_workers"):
        await STATE.serving_workers.stop()
    if hasattr(STATE, "rank_pods"):
        await STATE.rank_pods.stop()
    if hasattr(STATE, "server"):
        await STATE.server.close()


def _poke_training(key: tuple[str, str]) -> None:
    STATE.training_workers.poke(key)


# -- indexes: kopf fills them before any handler runs, so no pass ever lists -------------------
# (rank pods are not among them: rank_pods.py.) Every index and event handler is ``async``: kopf
# runs a plain ``def`` in a thread pool, two thread hand-offs per event, and a worker's
# asyncio.Event must be set on the loop.


@kopf.index("services", labels={contract.LABEL_JOB_NAME: kopf.PRESENT})
async def job_services(namespace: str, name: str, **_: Any) -> Any:
    return {(namespace, name): True}


@kopf.index("persistentvolumeclaims")
async def claims(namespace: str, name: str, status: kopf.Status, **_: Any) -> Any:
    return {(namespace, name): status.get("phase")}


@kopf.index("deployments", labels={contract.LABEL_SERVICE_NAME: kopf.PRESENT})
async def serving_deployments(namespace: str, labels: dict[str, str], body: kopf.Body, **_: Any) -> Any:
    return {(namespace, labels[contract.LABEL_SERVICE_NAME]): deployment_view(dict(body))}


@kopf.index("services", labels={contract.LABEL_SERVICE_NAME: kopf.PRESENT})
async def serving_services(namespace: str, labels: dict[str, str], **_: Any) -> Any:
    return {(namespace, labels[contract.LABEL_SERVICE_NAME]): True}


@kopf.index("horizontalpodautoscalers.v2.autoscaling", labels={contract.LABEL_SERVICE_NAME: kopf.PRESENT})
async def serving_autoscalers(namespace: str, labels: dict[str, str], annotations: dict[str, str], **_: Any) -> Any:
    return {(namespace, labels[contract.LABEL_SERVICE_NAME]): annotations.get(contract.ANNOTATION_SPEC_HASH, "")}


@kopf.index(*GROUP_VERSION, "trainingjobs")
async def training_models(namespace: str, name: str, status: kopf.Status, **_: Any) -> Any:
    return {(namespace, name): status.get("model")}


# -- events --------------------------------------------------------------------------------------


def _bind_indexes(indexes: dict[str, Any]) -> None:
    """kopf hands its (live) indexes to handlers; the reconcilers keep a reference to them."""
    training, serving = STATE.training, STATE.serving
    training.services = indexes["job_services"]
    training.claims = serving.claims = indexes["claims"]
    serving.deployments = indexes["serving_deployments"]
    serving.services = indexes["serving_services"]
    serving.autoscalers = indexes["serving_autoscalers"]
    serving.training_models = indexes["training_models"]


@kopf.on.event(*GROUP_VERSION, "trainingjobs")
async def training_job_event(event: dict[str, Any], body: kopf.Body, namespace: str, name: str, **kwargs: Any) -> None:
    _bind_indexes(kwargs)
    if event.get("type") == "DELETED":
        await STATE.training_workers.forget((namespace, name))
        if not STATE.training_workers.serves(namespace):
            await STATE.rank_pods.release(namespace)
    else:
        STATE.training_workers.offer((namespace, name), dict(body))
    for follower in STATE.serving.followers.get((namespace, name), ()):
        STATE.serving_workers.poke(follower)


@kopf.on.event(*GROUP_VERSION, "inferenceservices")
async def inference_service_event(
    event: dict[str, Any], body: kopf.Body, namespace: str, name: str, **kwargs: Any
) -> None:
    _bind_indexes(kwargs)
    if event.get("type") == "DELETED":
        await STATE.serving_workers.forget((namespace, name))
    else:
        STATE.serving_workers.offer((namespace, name), dict(body))


@kopf.on.event("deployments", labels={contract.LABEL_SERVICE_NAME: kopf.PRESENT})
async def serving_deployment_event(namespace: str, labels: dict[str, str], **_: Any) -> None:
    STATE.serving_workers.poke((namespace, labels[contract.LABEL_SERVICE_NAME]))


@kopf.on.event("services", labels={contract.LABEL_JOB_NAME: kopf.PRESENT})
async def rendezvous_service_event(namespace: str, labels: dict[str, str], **_: Any) -> None:
    STATE.training_workers.poke((namespace, labels[contract.LABEL_JOB_NAME]))


def _jobs_in(phase: str) -> int:
    return sum(1 for p in STATE.training_workers.phases() if (p or "Pending") == phase)


def _export_phase_counts() -> None:
    """The jobs-by-phase gauge is counted when Prometheus scrapes, not on every event (quadratic in a burst)."""
    for phase in ("Pending", "Queued", "Running", "Restarting", "Suspended", "Succeeded", "Failed"):
        metrics.JOBS.labels(phase).set_function(functools.partial(_jobs_in, phase))
