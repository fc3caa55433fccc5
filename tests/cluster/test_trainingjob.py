"""TrainingJobs on the real control plane, their pods played by kwok, the operator in-process."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from typing import Any

import pytest
from kubernetes import client

from tests.cluster.resources import (
    annotate_pod,
    condition,
    condition_is,
    create,
    exit_pod,
    get,
    patch_spec,
    pods,
)
from tests.factories import training_job_body

pytestmark = pytest.mark.cluster
TJ = "trainingjobs"


@pytest.fixture(autouse=True)
def _quiet_operator(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIDC_METRICS_PORT", "0")  # several operators run in one test process
    monkeypatch.setenv("AIDC_RESYNC_SECONDS", "5")


def env_of(pod: client.V1Pod) -> dict[str, str]:
    return {e.name: e.value for e in pod.spec.containers[0].env if e.value is not None}


def test_gang_is_created_as_designed_and_succeeds(
    kube: client.ApiClient,
    crds_applied: list[str],
    namespace: str,
    run_operator: Any,
    wait_for: Callable[..., Any],
    testbed: Any,
) -> None:
    spec = {"resources": {"gpus": 8, "cpu": "2", "memory": "4Gi"}, "storage": {"checkpoints": {"size": "1Gi"}}}
    with run_operator(namespace):
        create(kube, namespace, TJ, training_job_body("gang", spec))
        made = wait_for(lambda: pods(kube, namespace, "gang"), until=lambda p: len(p) == 2, message="2 rank pods")
        service = client.CoreV1Api(kube).read_namespaced_service("gang-gang", namespace)
        assert service.spec.cluster_ip == "None" and service.spec.publish_not_ready_addresses
        for rank, pod in enumerate(made):
            assert pod.metadata.name == f"gang-{rank}" and pod.spec.hostname == f"gang-{rank}"
            assert pod.spec.subdomain == "gang-gang"
            assert pod.metadata.labels["aidc.io/replica-index"] == str(rank)
            assert pod.metadata.labels["app.kubernetes.io/managed-by"] == "aidc-operator"
            assert pod.metadata.owner_references[0].kind == "TrainingJob"
            limits = pod.spec.containers[0].resources.limits
            assert limits["nvidia.com/gpu"] == "8"
            env = env_of(pod)
            assert env["MASTER_ADDR"] == f"gang-0.gang-gang.{namespace}.svc"
            assert env["WORLD_SIZE"] == "2" and env["RANK"] == str(rank) and env["PET_NODE_RANK"] == str(rank)
            mounts = [m.mount_path for m in pod.spec.containers[0].volume_mounts or []]
            assert ("/mnt/checkpoints" in mounts) == (rank == 0)  # only rank 0 writes checkpoints
        claim = client.CoreV1Api(kube).read_namespaced_persistent_volume_claim("gang-checkpoints", namespace)
        assert claim.metadata.owner_references is None  # kept after the job: checkpoints are data
        running = wait_for(
            lambda: get(kube, namespace, TJ, "gang"),
            until=lambda j: condition_is(j, "Running"),
            timeout=60,
            message="Running",
        )
        assert running["status"]["phase"] == "Running" and running["status"]["ready"] == "2/2"
        assert running["status"]["startTime"]
        for pod in made:
            exit_pod(kube, namespace, pod.metadata.name, 0)
        kubectl = ["kubectl", "--kubeconfig", str(testbed.kubeconfig), "-n", namespace]
        subprocess.run([*kubectl, "wait", "--for=condition=Succeeded", "tj/gang", "--timeout=60s"], check=True)
        done = get(kube, namespace, TJ, "gang")
        assert done["status"]["phase"] == "Succeeded" and done["status"]["completionTime"]
        events = client.CoreV1Api(kube).list_namespaced_event(namespace, field_selector="involvedObject.name=gang")
        assert {"Running", "Succeeded"} <= {e.reason for e in events.items}


def test_a_preempted_rank_restarts_the_whole_gang_and_a_bad_exit_fails_it(
    kube: client.ApiClient, crds_applied: list[str], namespace: str, run_operator: Any, wait_for: Callable[..., Any]
) -> None:
    with run_operator(namespace):
        create(kube, namespace, TJ, training_job_body("pre", {"failurePolicy": {"backoffSeconds": 1}}))
        wait_for(lambda: get(kube, namespace, TJ, "pre"), until=lambda j: condition_is(j, "Running"), timeout=60)
        first = {p.metadata.name: p.metadata.uid for p in pods(kube, namespace, "pre")}
        exit_pod(kube, namespace, "pre-1", 143)
        wait_for(
            lambda: get(kube, namespace, TJ, "pre"),
            until=lambda j: j["status"].get("restarts") == 1 and condition_is(j, "Running"),
            timeout=60,
            message="restarted once and running again",
        )
        second = pods(kube, namespace, "pre")
        assert sorted(p.metadata.name for p in second) == sorted(first)  # same names, same hostnames
        assert all(p.metadata.uid != first[p.metadata.name] for p in second)  # but every pod replaced
        assert {p.metadata.labels["aidc.io/gang-attempt"] for p in second} == {"1"}
        exit_pod(kube, namespace, "pre-0", 65)
        failed = wait_for(
            lambda: get(kube, namespace, TJ, "pre"), until=lambda j: condition_is(j, "Failed"), timeout=60
        )
        message = condition(failed, "Failed")["message"]  # type: ignore[index]
        assert "rank 0 (pod pre-0) exited with code 65" in message
        assert failed["status"]["restarts"] == 1


def test_backoff_limit_ends_a_crashing_job(
    kube: client.ApiClient, crds_applied: list[str], namespace: str, run_operator: Any, wait_for: Callable[..., Any]
) -> None:
    spec = {"replicas": 1, "failurePolicy": {"backoffSeconds": 0, "backoffLimit": 1}}
    with run_operator(namespace):
        create(
            kube,
            namespace,
            TJ,
            training_job_body(
                "crash", spec, pod_annotations={"aidc.io/kwok-exit-code": "137", "aidc.io/kwok-exit-after": "1s"}
            ),
        )
        failed = wait_for(
            lambda: get(kube, namespace, TJ, "crash"), until=lambda j: condition_is(j, "Failed"), timeout=90
        )
        assert condition(failed, "Failed")["reason"] == "BackoffLimitExceeded"  # type: ignore[index]
        assert failed["status"]["restarts"] == 1


def test_an_unschedulable_gang_reports_the_scheduler_and_fails_by_policy(
    kube: client.ApiClient, crds_applied: list[str], namespace: str, run_operator: Any, wait_for: Callable[..., Any]
) -> None:
    spec = {"resources": {"gpus": 9}, "schedulingPolicy": {"scheduleTimeoutSeconds": 8, "onScheduleTimeout": "Fail"}}
    with run_operator(namespace):
        create(kube, namespace, TJ, training_job_body("huge", spec))
        waiting = wait_for(
            lambda: get(kube, namespace, TJ, "huge"),
            until=lambda j: (
                (condition(j, "Scheduled") or {}).get("reason") == "WaitingForGang"
                and "Insufficient" in condition(j, "Scheduled")["message"]
            ),  # type: ignore[index]
            timeout=30,
        )
        assert "Insufficient nvidia.com/gpu" in condition(waiting, "Scheduled")["message"]  # type: ignore[index]
        failed = wait_for(
            lambda: get(kube, namespace, TJ, "huge"), until=lambda j: condition_is(j, "Failed"), timeout=30
        )
        assert condition(failed, "Failed")["reason"] == "Unschedulable"  # type: ignore[index]
        wait_for(
            lambda: pods(kube, namespace, "huge"),
            until=lambda p: all(x.metadata.deletion_timestamp for x in p),
            message="pending ranks of a failed job are deleted",
        )


def test_suspend_deletes_the_gang_and_resume_recreates_it(
    kube: client.ApiClient, crds_applied: list[str], namespace: str, run_operator: Any, wait_for: Callable[..., Any]
) -> None:
    with run_operator(namespace):
        create(kube, namespace, TJ, training_job_body("nap"))
        wait_for(lambda: get(kube, namespace, TJ, "nap"), until=lambda j: condition_is(j, "Running"), timeout=60)
        patch_spec(kube, namespace, TJ, "nap", {"runPolicy": {"suspend": True}})
        wait_for(lambda: get(kube, namespace, TJ, "nap"), until=lambda j: j["status"]["phase"] == "Suspended")
        wait_for(lambda: pods(kube, namespace, "nap"), until=lambda p: p == [], message="gang deleted")
        patch_spec(kube, namespace, TJ, "nap", {"runPolicy": {"suspend": False}})
        resumed = wait_for(
            lambda: get(kube, namespace, TJ, "nap"), until=lambda j: condition_is(j, "Running"), timeout=60
        )
        assert resumed["status"]["restarts"] == 0 and resumed["status"]["gangAttempt"] == 1


def test_deadline_and_ttl(
    kube: client.ApiClient, crds_applied: list[str], namespace: str, run_operator: Any, wait_for: Callable[..., Any]
) -> None:
    spec = {"runPolicy": {"activeDeadlineSeconds": 2, "ttlSecondsAfterFinished": 2}}
    with run_operator(namespace):
        create(kube, namespace, TJ, training_job_body("late", spec))
        failed = wait_for(
            lambda: get(kube, namespace, TJ, "late"), until=lambda j: condition_is(j, "Failed"), timeout=60
        )
        assert condition(failed, "Failed")["reason"] == "DeadlineExceeded"  # type: ignore[index]
        api = client.CustomObjectsApi(kube)
        wait_for(
            lambda: [
                j["metadata"]["name"]
                for j in api.list_namespaced_custom_object("aidc.io", "v1alpha1", namespace, TJ)["items"]
            ],
            until=lambda names: names == [],
            timeout=30,
            message="ttlSecondsAfterFinished deleted the job",
        )


def test_a_hand_made_pod_with_our_labels_is_ignored(
    kube: client.ApiClient, crds_applied: list[str], namespace: str, run_operator: Any, wait_for: Callable[..., Any]
) -> None:
    intruder = {
        "metadata": {
            "name": "solo-1",
            "labels": {"aidc.io/job-name": "solo", "aidc.io/replica-index": "1", "aidc.io/gang-attempt": "0"},
        },
        "spec": {"containers": [{"name": "trainer", "image": "busybox"}]},
    }
    client.CoreV1Api(kube).create_namespaced_pod(namespace, intruder)
    with run_operator(namespace):
        create(kube, namespace, TJ, training_job_body("solo", {"replicas": 1}))
        job = wait_for(lambda: get(kube, namespace, TJ, "solo"), until=lambda j: condition_is(j, "Running"), timeout=60)
        assert job["status"]["replicaCounts"]["desired"] == 1 and job["status"]["ready"] == "1/1"
        intruder_now = client.CoreV1Api(kube).read_namespaced_pod("solo-1", namespace)
        assert not intruder_now.metadata.owner_references  # not adopted, not deleted


def test_operator_restarts_without_duplicates_or_lost_jobs(
    kube: client.ApiClient, crds_applied: list[str], namespace: str, run_operator: Any, wait_for: Callable[..., Any]
) -> None:
    with run_operator(namespace):
        create(kube, namespace, TJ, training_job_body("phoenix", {"replicas": 4}))
        wait_for(lambda: pods(kube, namespace, "phoenix"), until=lambda p: len(p) == 4)
        # the operator has recorded the gang (before that, a rank gone while it is down cannot be
        # told from one never created, and is created again: the decision tables cover that case)
        wait_for(lambda: get(kube, namespace, TJ, "phoenix"), until=lambda j: "gangCreatedTime" in j.get("status", {}))
    # while no operator runs, a rank is lost
    client.CoreV1Api(kube).delete_namespaced_pod("phoenix-2", namespace, grace_period_seconds=0)
    wait_for(lambda: pods(kube, namespace, "phoenix"), until=lambda p: len(p) == 3)
    create(kube, namespace, TJ, training_job_body("late-arrival", {"replicas": 2}))
    with run_operator(namespace):
        # the lost rank fails the gang: it is replaced as a whole, once
        for name, replicas, restarts in (("phoenix", 4, 1), ("late-arrival", 2, 0)):
            wait_for(
                lambda name=name: get(kube, namespace, TJ, name),
                until=lambda j, replicas=replicas, restarts=restarts: (
                    condition_is(j, "Running")
                    and j["status"]["restarts"] == restarts
                    and j["status"]["ready"] == f"{replicas}/{replicas}"
                ),
                timeout=60,
                message=f"{name} running",
            )
            names = [p.metadata.name for p in pods(kube, namespace, name) if not p.metadata.deletion_timestamp]
            assert sorted(names) == [f"{name}-{r}" for r in range(replicas)]


def test_a_gang_the_quota_refuses_in_part_is_completed_not_restarted(
    kube: client.ApiClient, crds_applied: list[str], namespace: str, run_operator: Any, wait_for: Callable[..., Any]
) -> None:
    core = client.CoreV1Api(kube)
    quota = {"metadata": {"name": "pods"}, "spec": {"hard": {"pods": "2"}}}
    core.create_namespaced_resource_quota(namespace, quota)
    # the quota admits nothing until the controller manager has counted what it covers
    wait_for(lambda: core.read_namespaced_resource_quota("pods", namespace).status.hard, message="quota counted")
    with run_operator(namespace):
        create(kube, namespace, TJ, training_job_body("quota", {"replicas": 4}))
        refused = wait_for(
            lambda: get(kube, namespace, TJ, "quota"),
            until=lambda j: (condition(j, "Scheduled") or {}).get("reason") == "CreationFailed",
            message="the refusal in status",
        )
        assert "exceeded quota" in condition(refused, "Scheduled")["message"]  # type: ignore[index]
        # two ranks exist, two do not: that is no gang yet, so nothing may count as lost
        assert "gangCreatedTime" not in refused["status"]
        assert len(pods(kube, namespace, "quota")) == 2
        core.patch_namespaced_resource_quota("pods", namespace, {"spec": {"hard": {"pods": "10"}}})
        running = wait_for(
            lambda: get(kube, namespace, TJ, "quota"),
            until=lambda j: condition_is(j, "Running"),
            timeout=60,
            message="the rest of the gang created and running",
        )
        assert running["status"]["restarts"] == 0 and running["status"]["gangAttempt"] == 0
        assert [p.metadata.name for p in pods(kube, namespace, "quota")] == [f"quota-{r}" for r in range(4)]


def test_operator_writes_status_only(
    kube: client.ApiClient, crds_applied: list[str], namespace: str, run_operator: Any, wait_for: Callable[..., Any]
) -> None:
    with run_operator(namespace):
        created = create(kube, namespace, TJ, training_job_body("gitops"))
        wait_for(lambda: get(kube, namespace, TJ, "gitops"), until=lambda j: condition_is(j, "Running"), timeout=60)
        now = get(kube, namespace, TJ, "gitops")
    assert now["spec"] == created["spec"] and now["metadata"]["generation"] == created["metadata"]["generation"]
    managers = {m["manager"] for m in now["metadata"]["managedFields"] if m.get("subresource") != "status"}
    assert len(managers) == 1, managers  # only the creator touched anything but status
    assert not now["metadata"].get("finalizers")
    assert not any(k.startswith("kopf.zalando.org") for k in now["metadata"].get("annotations", {}))


def test_gang_scheduler_objects_are_accepted(
    kube: client.ApiClient,
    crds_applied: list[str],
    namespace: str,
    run_operator: Any,
    wait_for: Callable[..., Any],
    podgroup_crds: None,
) -> None:
    with run_operator(namespace):
        create(
            kube,
            namespace,
            TJ,
            training_job_body(
                "vol", {"resources": {"gpus": 8}, "schedulingPolicy": {"gangScheduler": "Volcano", "queue": "q"}}
            ),
        )
        create(
            kube,
            namespace,
            TJ,
            training_job_body("kue", {"schedulingPolicy": {"gangScheduler": "Kueue", "queue": "lq"}}),
        )
        custom = client.CustomObjectsApi(kube)
        volcano = wait_for(
            lambda: custom.get_namespaced_custom_object(
                "scheduling.volcano.sh", "v1beta1", namespace, "podgroups", "vol"
            ),
            ignore=(client.ApiException,),
        )
        assert volcano["spec"]["minMember"] == 2 and volcano["spec"]["queue"] == "q"
        assert volcano["spec"]["minResources"] == {"nvidia.com/gpu": "16"}
        vol_pods = wait_for(lambda: pods(kube, namespace, "vol"), until=lambda p: len(p) == 2)
        assert vol_pods[0].spec.scheduler_name == "volcano"
        assert vol_pods[0].metadata.annotations["scheduling.k8s.io/group-name"] == "vol"
        kue_pods = wait_for(lambda: pods(kube, namespace, "kue"), until=lambda p: len(p) == 2)
        assert kue_pods[0].metadata.labels["kueue.x-k8s.io/queue-name"] == "lq"
        assert kue_pods[0].metadata.labels["kueue.x-k8s.io/pod-group-name"] == "kue"
        assert kue_pods[0].metadata.annotations["kueue.x-k8s.io/pod-group-total-count"] == "2"


def test_heartbeat_annotation_lands_in_status(
    kube: client.ApiClient, crds_applied: list[str], namespace: str, run_operator: Any, wait_for: Callable[..., Any]
) -> None:
    import json

    with run_operator(namespace):
        create(kube, namespace, TJ, training_job_body("beat", {"storage": {"checkpoints": {"size": "1Gi"}}}))
        wait_for(lambda: get(kube, namespace, TJ, "beat"), until=lambda j: condition_is(j, "Running"), timeout=60)
        beat = {
            "step": 30,
            "totalSteps": 120,
            "epoch": 1,
            "loss": 0.5,
            "metrics": {"accuracy": 0.8},
            "checkpoint": {"path": "ckpt-000000030.pt", "step": 30},
            "time": "2026-11-29T12:00:00Z",
        }
        annotate_pod(kube, namespace, "beat-0", {"aidc.io/progress": json.dumps(beat)})
        job = wait_for(
            lambda: get(kube, namespace, TJ, "beat"),
            until=lambda j: (j["status"].get("progress") or {}).get("step") == 30,
        )
        assert job["status"]["progress"]["percent"] == 25
        assert job["status"]["checkpoint"]["path"] == "beat/ckpt-000000030.pt"


def test_a_spec_the_api_server_admits_but_the_operator_cannot_use_becomes_a_condition(
    kube: client.ApiClient, crds_applied: list[str], namespace: str, run_operator: Any, wait_for: Callable[..., Any]
) -> None:
    bad = {"replicas": 1, "podTemplate": {"spec": {"restartPolicy": "Always"}}}
    with run_operator(namespace):
        create(kube, namespace, TJ, training_job_body("odd", bad))
        failed = wait_for(
            lambda: get(kube, namespace, TJ, "odd"),
            until=lambda j: condition_is(j, "Failed", "InvalidSpec"),
            timeout=30,
        )
        message = condition(failed, "Failed")["message"]  # type: ignore[index]
        assert message.startswith("invalid spec: spec.podTemplate.spec: restartPolicy cannot be overridden")
        assert pods(kube, namespace, "odd") == []
        # fixing the spec lets the job start, and the operator kept running all along
        client.CustomObjectsApi(kube).patch_namespaced_custom_object(
            "aidc.io",
            "v1alpha1",
            namespace,
            TJ,
            "odd",
            [{"op": "remove", "path": "/spec/podTemplate/spec/restartPolicy"}],
            _content_type="application/json-patch+json",
        )
        wait_for(lambda: get(kube, namespace, TJ, "odd"), until=lambda j: condition_is(j, "Running"), timeout=60)


def test_a_spec_whose_pods_the_api_server_refuses_fails_with_invalid_spec_not_pending_forever(
    kube: client.ApiClient, crds_applied: list[str], namespace: str, run_operator: Any, wait_for: Callable[..., Any]
) -> None:
    """A podTemplate override the schema cannot check (it is free-form) makes every rank pod a 422."""
    bad = {"replicas": 2, "podTemplate": {"spec": {"dnsPolicy": "Bogus"}}}
    with run_operator(namespace):
        create(kube, namespace, TJ, training_job_body("refused", bad))
        failed = wait_for(
            lambda: get(kube, namespace, TJ, "refused"),
            until=lambda j: condition_is(j, "Failed", "InvalidSpec"),
            timeout=30,
            message="Failed with InvalidSpec after the first refused pod",
        )
        message = condition(failed, "Failed")["message"]  # type: ignore[index]
        assert "was refused (422)" in message and "dnsPolicy" in message and "Bogus" in message, message
        assert (failed["status"]["phase"], failed["status"]["reason"]) == ("Failed", "InvalidSpec")
        assert pods(kube, namespace, "refused") == []
        # an edit that keeps the override is a new generation too: tried once more, and refused again
        generation = failed["metadata"]["generation"]
        patch_spec(kube, namespace, TJ, "refused", {"runPolicy": {"ttlSecondsAfterFinished": 3600}})
        edited = wait_for(
            lambda: get(kube, namespace, TJ, "refused"),
            until=lambda j: (condition(j, "Failed") or {}).get("observedGeneration", 0) > generation,
            timeout=30,
            message="the edited spec tried and refused again",
        )
        assert condition_is(edited, "Failed", "InvalidSpec") and pods(kube, namespace, "refused") == []
        # removing the override is a new generation: the job starts over and runs
        client.CustomObjectsApi(kube).patch_namespaced_custom_object(
            "aidc.io",
            "v1alpha1",
            namespace,
            TJ,
            "refused",
            [{"op": "remove", "path": "/spec/podTemplate/spec/dnsPolicy"}],
            _content_type="application/json-patch+json",
        )
        wait_for(lambda: get(kube, namespace, TJ, "refused"), until=lambda j: condition_is(j, "Running"), timeout=60)


def test_a_lost_node_restarts_the_gang_elsewhere(
    kube: client.ApiClient,
    crds_applied: list[str],
    namespace: str,
    run_operator: Any,
    wait_for: Callable[..., Any],
    testbed: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AIDC_STUCK_TERMINATING_SECONDS", "5")
    # whole-node ranks, so the lost node's GPUs cannot host the new gang
    spec = {"resources": {"gpus": 8}, "failurePolicy": {"backoffSeconds": 1}}
    with run_operator(namespace):
        create(kube, namespace, TJ, training_job_body("node", spec))
        wait_for(lambda: get(kube, namespace, TJ, "node"), until=lambda j: condition_is(j, "Running"), timeout=60)
        lost = next(p.spec.node_name for p in pods(kube, namespace, "node") if p.metadata.name == "node-1")
        testbed.fail_node(lost)
        try:
            job = wait_for(
                lambda: get(kube, namespace, TJ, "node"),
                until=lambda j: j["status"]["restarts"] == 1 and condition_is(j, "Running"),
                timeout=90,
                message="the gang restarted on the remaining nodes",
            )
            assert condition(job, "Restarting")["reason"] == "RankLost"  # type: ignore[index]
            placed = {p.spec.node_name for p in pods(kube, namespace, "node") if not p.metadata.deletion_timestamp}
            assert lost not in placed and len(placed) == 2
        finally:
            testbed.recover_node(lost)
