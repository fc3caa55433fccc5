"""Operator settings, read once from the environment (the Helm chart sets them)."""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass
from typing import Any


def _int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def _float(name: str, default: float) -> float:
    return float(os.environ.get(name, default))


def _bool(name: str, default: bool) -> bool:
    """``true`` or ``false`` (as Helm quotes a boolean); anything else stops the operator at start-up."""
    value = os.environ.get(name)
    if value is None:
        return default
    if value.strip().lower() not in ("true", "false"):
        raise ValueError(f"{name} must be true or false, got {value!r}")
    return value.strip().lower() == "true"


def _peers(name: str, default: tuple[dict[str, Any], ...]) -> tuple[dict[str, Any], ...]:
    """A JSON list of NetworkPolicy peers; a value that is not one stops the operator at start-up."""
    value = os.environ.get(name)
    if value is None:
        return default
    peers = json.loads(value)
    if not isinstance(peers, list) or not all(isinstance(p, dict) for p in peers):
        raise ValueError(f"{name} must be a JSON list of NetworkPolicy peers, got {value!r}")
    return tuple(peers)


# Where Prometheus scrapes from unless the chart says otherwise: pods labelled as Prometheus (the
# Prometheus Operator's and the prometheus chart's servers are) in any namespace.
DEFAULT_METRICS_FROM: tuple[dict[str, Any], ...] = (
    {"namespaceSelector": {}, "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}},
)


def _candidate_identity() -> str:
    """The pod's name (the chart sets POD_NAME from the downward API), else host and process: unique
    among the candidates for one lease, and readable in `kubectl get lease`."""
    return os.environ.get("POD_NAME") or f"{socket.gethostname()}-{os.getpid()}"


@dataclass(frozen=True)
class OperatorSettings:
    """What the operator needs to know about the cluster it runs in."""

    trainer_image: str = "ghcr.io/aidc/trainer:0.1.0-cpu"
    image_pull_policy: str = "IfNotPresent"
    # namespaces the operator watches; empty means cluster-wide
    namespaces: tuple[str, ...] = ()
    metrics_port: int = 8000
    health_port: int = 8080
    # a safety net: every job is reconciled at least this often even without events
    resync_seconds: int = 60
    # pods stuck Terminating this long past their grace period (their node is gone) are force-deleted
    stuck_terminating_seconds: int = 60
    # pods created but not delivered by the watch within this long are checked with the API server:
    # expected for another window when it has them, else treated as gone
    expectation_seconds: int = 30
    max_concurrent_api_calls: int = 64
    # A job's status is written at once when its phase changes; other changes (replica counts,
    # condition messages, the first Pending) wait up to this long, so the passes of a gang
    # coming up (pods created, scheduled, started) make one write instead of one each. Short,
    # so every state that lasts longer (WaitingForGang with the scheduler's reason) still shows.
    # 0: no wait.
    status_batch_seconds: float = 1.0
    # Once a job's first status is written, the progress of its gang coming up (ranks created,
    # scheduled, containers starting: counts and messages, no phase change, no warning reason)
    # waits up to this long instead: a gang is of no use until all its ranks run, and in a busy
    # cluster its pods trickle through the scheduler. Warnings (Unschedulable, ImagePullFailed,
    # CreationFailed) and Running still go out at once or after status_batch_seconds.
    gang_progress_seconds: float = 30.0
    # after the first pass, a woken worker waits this long so one pass serves a burst of events
    # (a gang's ranks are created, bound and started within moments of each other); a graceful
    # stop lets a worker within the wait make its pass (Workers.stop)
    settle_seconds: float = 0.2
    cluster_domain: str = "cluster.local"
    # a NetworkPolicy per TrainingJob and per InferenceService (enforced where the CNI enforces them)
    network_policy: bool = True
    # NetworkPolicy peers admitted to the metrics ports of ranks and servers; empty: none
    metrics_from: tuple[dict[str, Any], ...] = DEFAULT_METRICS_FROM
    # Leader election on a Lease, so several replicas may run and only one reconciles. Off for a
    # process started by hand; the chart and config/ turn it on.
    leader_election: bool = False
    lease_name: str = "aidc-operator"
    # empty: the pod's own namespace (POD_NAMESPACE, from the downward API)
    lease_namespace: str = ""
    # a standby takes over once the lease has not been renewed for this long (by its own clock)
    lease_duration_seconds: int = 15
    # a leader that has not renewed for this long stops (exits) before anyone may take over
    lease_renew_deadline_seconds: float = 10.0
    # how often the leader renews and a standby tries
    lease_retry_period_seconds: float = 2.0
    # who this process is among the candidates (the pod's name)
    leader_identity: str = ""
    # the ClusterRole (shipped by the chart, named after its release) that lets serving pods with
    # spec.auth.kubernetes create TokenReviews and SubjectAccessReviews
    inference_reviewer_role: str = "aidc-operator-inference-reviewer"

    @classmethod
    def from_env(cls) -> OperatorSettings:
        namespaces = tuple(n for n in os.environ.get("AIDC_NAMESPACES", "").replace(",", " ").split() if n)
        return cls(
            trainer_image=os.environ.get("AIDC_TRAINER_IMAGE", cls.trainer_image),
            image_pull_policy=os.environ.get("AIDC_IMAGE_PULL_POLICY", cls.image_pull_policy),
            namespaces=namespaces,
            metrics_port=_int("AIDC_METRICS_PORT", cls.metrics_port),
            health_port=_int("AIDC_HEALTH_PORT", cls.health_port),
            resync_seconds=_int("AIDC_RESYNC_SECONDS", cls.resync_seconds),
            stuck_terminating_seconds=_int("AIDC_STUCK_TERMINATING_SECONDS", cls.stuck_terminating_seconds),
            expectation_seconds=_int("AIDC_EXPECTATION_SECONDS", cls.expectation_seconds),
            max_concurrent_api_calls=_int("AIDC_MAX_CONCURRENT_API_CALLS", cls.max_concurrent_api_calls),
            status_batch_seconds=_float("AIDC_STATUS_BATCH_SECONDS", cls.status_batch_seconds),
            gang_progress_seconds=_float("AIDC_GANG_PROGRESS_SECONDS", cls.gang_progress_seconds),
            settle_seconds=_float("AIDC_SETTLE_SECONDS", cls.settle_seconds),
            cluster_domain=os.environ.get("AIDC_CLUSTER_DOMAIN", cls.cluster_domain),
            network_policy=_bool("AIDC_NETWORK_POLICY", cls.network_policy),
            metrics_from=_peers("AIDC_NETWORK_POLICY_METRICS_FROM", cls.metrics_from),
            leader_election=_bool("AIDC_LEADER_ELECTION", cls.leader_election),
            lease_name=os.environ.get("AIDC_LEASE_NAME", cls.lease_name),
            lease_namespace=os.environ.get("AIDC_LEASE_NAMESPACE") or os.environ.get("POD_NAMESPACE", ""),
            lease_duration_seconds=_int("AIDC_LEASE_DURATION_SECONDS", cls.lease_duration_seconds),
            lease_renew_deadline_seconds=_float("AIDC_LEASE_RENEW_DEADLINE_SECONDS", cls.lease_renew_deadline_seconds),
            lease_retry_period_seconds=_float("AIDC_LEASE_RETRY_PERIOD_SECONDS", cls.lease_retry_period_seconds),
            leader_identity=_candidate_identity(),
            inference_reviewer_role=os.environ.get("AIDC_INFERENCE_REVIEWER_ROLE", cls.inference_reviewer_role),
        )
