"""Operator settings, read once from the environment (the Helm chart sets them)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field


def _int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def _float(name: str, default: float) -> float:
    return float(os.environ.get(name, default))


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
    # the ClusterRole (shipped by the chart, named after its release) that lets serving pods with
    # spec.auth.kubernetes create TokenReviews and SubjectAccessReviews
    inference_reviewer_role: str = "aidc-operator-inference-reviewer"
    extra_pod_labels: dict[str, str] = field(default_factory=dict)

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
            inference_reviewer_role=os.environ.get("AIDC_INFERENCE_REVIEWER_ROLE", cls.inference_reviewer_role),
        )
