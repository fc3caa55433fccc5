"""kopf wiring: watch events feed indexes and poke the per-resource workers. Nothing else.

Run with ``kopf run -m aidc.runtime.handlers`` (``aidc run`` does it with the settings of
the Helm chart). Handlers only observe: all decisions live in the pure decision modules.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import kopf

from aidc import contract
from aidc.management.metrics import OperatorMetrics
from aidc.management.observe import controller_uid
from aidc.management.serving_decision import deployment_view
from aidc.runtime.assembly import Operator, assemble, count_the_fleet, serve_metrics
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


def _configure(settings: kopf.OperatorSettings) -> None:
    """kopf's own bookkeeping under the aidc.io prefix; watches that outlive a quiet API server."""
    settings.persistence.finalizer = f"{contract.GROUP}/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=contract.GROUP)
    settings.persistence.diffbase_storage = _NoDiffBase(prefix=contract.GROUP, key="last-handled-configuration")
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 30
    settings.networking.request_timeout = 60


@kopf.on.startup()
async def start(settings: kopf.OperatorSettings, memo: kopf.Memo, **kwargs: Any) -> None:
    """Builds the operator's parts into ``memo.operator``, from the settings ``aidc run`` read
    (``memo.settings``), else from the environment, read here once (``kopf run -m``).

    kopf hands its indexes (live, and filled before any event handler runs) to every handler as
    keyword arguments named after their functions, so the reconcilers are given them once, here.
    ``aidc run`` serves the metrics before kopf starts (``memo.metrics``: a standby replica reports
    too); under ``kopf run -m`` they are made and served here.
    """
    _configure(settings)
    operator_settings = memo.get("settings") or OperatorSettings.from_env()
    metrics = memo.get("metrics")
    if metrics is None:
        metrics = OperatorMetrics()
        serve_metrics(operator_settings, metrics)
    # rank pods are watched by the operator itself, not by kopf (see rank_pods.py), in kopf's scope
    operator = assemble(operator_settings, settings.peering.clusterwide, kwargs, metrics)
    memo.operator = operator
    count_the_fleet(operator)
    metrics.leader.set(1)  # kopf starts only in the replica that leads


@kopf.on.login()
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """In-cluster token, else the kubeconfig KUBECONFIG names when the operator starts."""
    return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)


@kopf.on.cleanup()
async def stop(memo: kopf.Memo, **_: Any) -> None:
    operator: Operator | None = memo.get("operator")
    if operator is not None:
        await operator.stop()
        operator.metrics.leader.set(0)


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


@kopf.index(
    "networking.k8s.io", "v1", "networkpolicies", labels={contract.LABEL_APP_MANAGED_BY: contract.OPERATOR_NAME}
)
async def network_policies(namespace: str, name: str, meta: kopf.Meta, annotations: dict[str, str], **_: Any) -> Any:
    """(controller uid, spec hash): a policy of the right name that another owner controls is no stand-in."""
    return {(namespace, name): (controller_uid(dict(meta)), annotations.get(contract.ANNOTATION_SPEC_HASH, ""))}


@kopf.index(*GROUP_VERSION, "trainingjobs")
async def training_models(namespace: str, name: str, status: kopf.Status, **_: Any) -> Any:
    return {(namespace, name): status.get("model")}


# -- events --------------------------------------------------------------------------------------


@kopf.on.event(*GROUP_VERSION, "trainingjobs")
async def training_job_event(
    event: dict[str, Any], body: kopf.Body, namespace: str, name: str, memo: kopf.Memo, **_: Any
) -> None:
    operator: Operator = memo.operator
    if event.get("type") == "DELETED":
        await operator.training_workers.forget((namespace, name))
        if not operator.training_workers.serves(namespace):
            await operator.rank_pods.release(namespace)
    else:
        operator.training_workers.offer((namespace, name), dict(body))
    for follower in operator.serving.followers.get((namespace, name), ()):
        operator.serving_workers.poke(follower)


@kopf.on.event(*GROUP_VERSION, "inferenceservices")
async def inference_service_event(
    event: dict[str, Any], body: kopf.Body, namespace: str, name: str, memo: kopf.Memo, **_: Any
) -> None:
    operator: Operator = memo.operator
    if event.get("type") == "DELETED":
        await operator.serving_workers.forget((namespace, name))
    else:
        operator.serving_workers.offer((namespace, name), dict(body))


@kopf.on.event("deployments", labels={contract.LABEL_SERVICE_NAME: kopf.PRESENT})
async def serving_deployment_event(namespace: str, labels: dict[str, str], memo: kopf.Memo, **_: Any) -> None:
    memo.operator.serving_workers.poke((namespace, labels[contract.LABEL_SERVICE_NAME]))


@kopf.on.event("services", labels={contract.LABEL_JOB_NAME: kopf.PRESENT})
async def rendezvous_service_event(namespace: str, labels: dict[str, str], memo: kopf.Memo, **_: Any) -> None:
    memo.operator.training_workers.poke((namespace, labels[contract.LABEL_JOB_NAME]))


@kopf.on.event(
    "networking.k8s.io", "v1", "networkpolicies", labels={contract.LABEL_APP_MANAGED_BY: contract.OPERATOR_NAME}
)
async def network_policy_event(
    event: dict[str, Any], namespace: str, labels: dict[str, str], memo: kopf.Memo, **_: Any
) -> None:
    """A policy deleted by hand is made again at once, not at the next resync; the operator's own
    creates and updates need no pass."""
    if event.get("type") != "DELETED":
        return
    operator: Operator = memo.operator
    if contract.LABEL_JOB_NAME in labels:
        operator.training_workers.poke((namespace, labels[contract.LABEL_JOB_NAME]))
    elif contract.LABEL_SERVICE_NAME in labels:
        operator.serving_workers.poke((namespace, labels[contract.LABEL_SERVICE_NAME]))
