"""Gang scheduling through the engines people already run: Kueue, Volcano, Coscheduling.

The operator only labels pods and, for Volcano and Coscheduling, creates the PodGroup; the
engine decides when the whole gang may start.
"""

from __future__ import annotations

from typing import Any

from aidc.api.trainingjob import TrainingJob
from aidc.identity.labels import job_labels, owner_reference

KUEUE_QUEUE = "kueue.x-k8s.io/queue-name"
KUEUE_GROUP = "kueue.x-k8s.io/pod-group-name"
KUEUE_TOTAL = "kueue.x-k8s.io/pod-group-total-count"
KUEUE_RETRIABLE = "kueue.x-k8s.io/retriable-in-group"
KUEUE_GATE = "kueue.x-k8s.io/admission"
# The operator's own scheduling gate on every rank of a Kueue gang. Kueue admits a gang whole but
# lifts its gate pod by pod (one API call each, behind its client's rate limiter), and the
# kube-scheduler starts each pod it may: measured in the test bed, one rank ran while another still
# waited for admission. The operator lifts this gate from every rank at once, and only when no rank
# carries Kueue's any more, so no rank starts before the whole gang is admitted.
GANG_GATE = "aidc.io/gang"
# Kueue holds every pod it manages with this finalizer until it has counted how the pod ended
KUEUE_FINALIZER = "kueue.x-k8s.io/managed"
# the pod condition Kueue sets, with its reason and message, before it deletes a pod it stops
# (a preempted or evicted workload): reason WorkloadEvictedDueTo<Evicted's reason>, e.g. ...Preempted
KUEUE_TERMINATION = "TerminationTarget"
KUEUE_WORKLOAD_API = "kueue.x-k8s.io/v1beta2"
KUEUE_WORKLOADS = "workloads"
VOLCANO_GROUP = "scheduling.k8s.io/group-name"
COSCHEDULING_GROUP = "scheduling.x-k8s.io/pod-group"
VOLCANO_SCHEDULER = "volcano"
COSCHEDULING_SCHEDULER = "scheduler-plugins-scheduler"


def group_name(job: TrainingJob) -> str:
    return str(job.metadata["name"])


def kueue_wait(workload: dict[str, Any] | None) -> str | None:
    """Why Kueue has not admitted a gang's Workload (named after the pod group), in its own words."""
    conditions = {c.get("type"): c for c in ((workload or {}).get("status") or {}).get("conditions") or []}
    for type_, status in (("Evicted", "True"), ("QuotaReserved", "False"), ("Admitted", "False")):
        found = conditions.get(type_)
        if found is not None and found.get("status") == status and found.get("message"):
            return str(found["message"])
    return None


def gang_labels(job: TrainingJob) -> dict[str, str]:
    policy = job.spec.scheduling_policy
    if policy.gang_scheduler == "Kueue":
        labels = {KUEUE_GROUP: group_name(job)}
        if policy.queue:
            labels[KUEUE_QUEUE] = policy.queue
        return labels
    if policy.gang_scheduler == "Coscheduling":
        return {COSCHEDULING_GROUP: group_name(job)}
    return {}


def gang_annotations(job: TrainingJob) -> dict[str, str]:
    policy = job.spec.scheduling_policy
    if policy.gang_scheduler == "Kueue":
        return {KUEUE_TOTAL: str(job.spec.replicas)}
    if policy.gang_scheduler == "Volcano":
        return {VOLCANO_GROUP: group_name(job)}
    return {}


def scheduling_gates(job: TrainingJob) -> list[dict[str, str]]:
    """The gates a rank is created with: the operator's gang gate under Kueue, else none."""
    return [{"name": GANG_GATE}] if job.spec.scheduling_policy.gang_scheduler == "Kueue" else []


def scheduler_name(job: TrainingJob) -> str | None:
    policy = job.spec.scheduling_policy
    if policy.scheduler_name:
        return policy.scheduler_name
    return {"Volcano": VOLCANO_SCHEDULER, "Coscheduling": COSCHEDULING_SCHEDULER}.get(policy.gang_scheduler)


def binds_all_at_once(job: TrainingJob) -> bool:
    """Whether the gang scheduler binds the ranks only all together (PodGroup ``minMember`` is every
    rank): Volcano and Coscheduling. Kueue admits the gang as a whole and gates it until then."""
    return job.spec.scheduling_policy.gang_scheduler in ("Volcano", "Coscheduling")


def _min_resources(job: TrainingJob) -> dict[str, str]:
    resources = job.spec.resources
    total: dict[str, str] = {}
    if resources.gpus:
        total[resources.gpu_resource] = str(resources.gpus * job.spec.replicas)
    return total


def pod_group(job: TrainingJob) -> dict[str, Any] | None:
    """The PodGroup Volcano or scheduler-plugins needs, owned by the job; None for the others."""
    policy = job.spec.scheduling_policy
    metadata = {
        "name": group_name(job),
        "namespace": job.metadata["namespace"],
        "labels": job_labels(job, component="podgroup"),
        "ownerReferences": [owner_reference(job)],
    }
    spec: dict[str, Any] = {"minMember": job.spec.replicas}
    if minimum := _min_resources(job):
        spec["minResources"] = minimum
    if policy.gang_scheduler == "Volcano":
        if policy.queue:
            spec["queue"] = policy.queue
        if policy.placement.priority_class_name:
            spec["priorityClassName"] = policy.placement.priority_class_name
        return {"apiVersion": "scheduling.volcano.sh/v1beta1", "kind": "PodGroup", "metadata": metadata, "spec": spec}
    if policy.gang_scheduler == "Coscheduling":
        spec["scheduleTimeoutSeconds"] = policy.schedule_timeout_seconds
        return {"apiVersion": "scheduling.x-k8s.io/v1alpha1", "kind": "PodGroup", "metadata": metadata, "spec": spec}
    return None
