"""The TrainingJob decision as tables: observed state -> planned actions and status."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from aidc.api import TrainingJob
from aidc.contract import ANNOTATION_SPEC_HASH
from aidc.management.observe import RankPod
from aidc.management.plan import Plan, Refusal
from aidc.management.training_decision import TrainingObservation, backoff_seconds, decide, invalid, refused
from aidc.network.policies import gang_policy
from aidc.settings import OperatorSettings
from tests.factories import training_job as job

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
SETTINGS = OperatorSettings()


def pod(rank: int, phase: str = "Running", attempt: int = 0, **fields: Any) -> RankPod:
    fields.setdefault("scheduled", True)
    return RankPod(name=f"mnist-{rank}", rank=rank, attempt=attempt, phase=phase, **fields)


def ago(seconds: float) -> str:
    return (NOW - timedelta(seconds=seconds)).isoformat()


def run(j: TrainingJob, pods: list[RankPod], **obs: Any) -> Plan:
    """One decision; the gang's NetworkPolicy is observed as it should be unless told."""
    obs.setdefault("settings", SETTINGS)
    current = gang_policy(j, obs["settings"].metrics_from)
    obs.setdefault("network_policy_hash", current["metadata"]["annotations"][ANNOTATION_SPEC_HASH])
    return decide(TrainingObservation(job=j, pods=pods, now=NOW, **obs))


def status_of(plan: Plan) -> dict[str, Any]:
    assert plan.status is not None
    return plan.status


def reasons(plan: Plan) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in status_of(plan)["conditions"]}


def condition_message(plan: Plan, kind: str) -> str:
    return str(next(c["message"] for c in status_of(plan)["conditions"] if c["type"] == kind))


RUNNING = {"phase": "Running", "gangCreatedTime": ago(60), "gangRunningTime": ago(50), "startTime": ago(50)}


def test_new_job_creates_service_and_every_rank() -> None:
    plan = run(job(), [], service_exists=False)
    kinds = [(o["kind"], o["metadata"]["name"]) for o in plan.create]
    assert kinds == [("Service", "mnist-gang"), ("Pod", "mnist-0"), ("Pod", "mnist-1")]
    assert status_of(plan)["phase"] == "Pending"
    assert reasons(plan)["Scheduled"] == ("False", "Creating")
    assert plan.routine_progress
    # the gang is recorded in the pass that creates it: one status write, not two
    assert status_of(plan)["gangCreatedTime"] == NOW.isoformat().replace("+00:00", "Z")


def test_created_but_unseen_pods_are_not_created_twice() -> None:
    plan = run(job(), [], expected=frozenset({"mnist-0", "mnist-1"}))
    assert plan.create == []
    assert status_of(plan)["gangCreatedTime"]


def test_a_recorded_gang_waits_for_ranks_still_expected_and_comes_back_to_ask() -> None:
    recorded = {"phase": "Pending", "gangCreatedTime": ago(40)}
    plan = run(job(status=recorded), [pod(0)], expected=frozenset({"mnist-1"}))
    assert plan.create == [] and plan.delete == []
    assert status_of(plan)["restarts"] == 0 and status_of(plan)["phase"] == "Pending"
    assert reasons(plan)["Scheduled"] == ("False", "WaitingForGang")
    assert next(c for c in status_of(plan)["conditions"] if c["type"] == "Scheduled")["message"] == (
        "1/2 ranks scheduled"
    )
    # within expectationSeconds the reconciler asks the API server whether mnist-1 exists
    assert plan.requeue_after == 30


def test_a_recorded_gang_whose_rank_is_neither_seen_nor_expected_restarts() -> None:
    recorded = {"phase": "Pending", "gangCreatedTime": ago(40)}
    plan = run(job(status=recorded), [pod(0)])
    assert status_of(plan)["phase"] == "Restarting" and status_of(plan)["restarts"] == 1
    assert reasons(plan)["Restarting"] == ("True", "RankLost")


def test_sized_checkpoint_claim_is_created_without_owner_by_default() -> None:
    plan = run(job({"storage": {"checkpoints": {"size": "5Gi"}}}), [], claim_exists=False)
    (claim,) = [o for o in plan.create if o["kind"] == "PersistentVolumeClaim"]
    assert claim["metadata"]["name"] == "mnist-checkpoints"
    assert "ownerReferences" not in claim["metadata"]  # Retain: checkpoints outlive the job


def test_missing_named_claim_waits_with_a_reason() -> None:
    plan = run(job({"storage": {"checkpoints": {"claimName": "gone"}}}), [], claim_exists=False)
    assert plan.create == []
    assert reasons(plan)["Scheduled"] == ("False", "ClaimNotFound")


@pytest.mark.parametrize(
    ("pods", "phase", "condition", "expected", "routine"),
    [
        (
            [pod(0, scheduled=True), pod(1, "Pending", scheduled=False)],
            "Pending",
            "Scheduled",
            ("False", "WaitingForGang"),
            True,
        ),
        (
            [pod(0, scheduled=True), pod(1, "Pending", scheduled=False, unschedulable="0/4 nodes: Insufficient gpu")],
            "Pending",
            "Scheduled",
            ("False", "WaitingForGang"),
            False,  # the scheduler's refusal is news
        ),
        (
            [pod(0, "Pending", gated=True), pod(1, "Pending", gated=True)],
            "Queued",
            "Scheduled",
            ("False", "Queued"),
            False,
        ),
        (
            [pod(0, "Pending", image_pull_error="ErrImagePull: not found"), pod(1)],
            "Pending",
            "Running",
            ("False", "ImagePullFailed"),
            False,
        ),
        ([pod(0), pod(1, "Pending")], "Pending", "Running", ("False", "ContainersStarting"), True),
        ([pod(0), pod(1)], "Running", "Running", ("True", "Running"), False),
        ([pod(0, "Succeeded"), pod(1)], "Running", "Running", ("True", "Running"), False),
    ],
    ids=[
        "waiting-for-gang",
        "refused-by-the-scheduler",
        "queued-by-kueue",
        "image-pull",
        "starting",
        "running",
        "rank0-done-rank1-running",
    ],
)
def test_gang_states(pods: list[RankPod], phase: str, condition: str, expected: tuple[str, str], routine: bool) -> None:
    plan = run(job(status={"phase": "Pending", "gangCreatedTime": ago(10)}), pods)
    assert status_of(plan)["phase"] == phase
    assert reasons(plan)[condition] == expected
    assert plan.routine_progress is routine


def test_unschedulable_after_the_timeout_keeps_waiting_or_fails_by_policy() -> None:
    pods = [pod(0), pod(1, "Pending", scheduled=False, unschedulable="0/4 nodes are available: Insufficient gpu")]
    waiting = run(job({"schedulingPolicy": {"scheduleTimeoutSeconds": 30}}, {"gangCreatedTime": ago(31)}), pods)
    assert reasons(waiting)["Scheduled"] == ("False", "Unschedulable")
    assert "Insufficient gpu" in status_of(waiting)["conditions"][0]["message"]
    failing = run(
        job(
            {"schedulingPolicy": {"scheduleTimeoutSeconds": 30, "onScheduleTimeout": "Fail"}},
            {"gangCreatedTime": ago(31)},
        ),
        pods,
    )
    assert status_of(failing)["phase"] == "Failed"
    assert reasons(failing)["Failed"] == ("True", "Unschedulable")


def test_a_gang_held_by_coscheduling_reports_the_rank_no_node_fits_not_the_ranks_turned_back() -> None:
    """Coscheduling binds no rank until all fit, and the job says so: the ranks it held at Permit and
    turned back say only that; the rank no node fits says why, and that is quoted, whichever rank it is."""
    turned_back = "0/1 nodes are available: 1 optimistic rejection in PostFilter."
    no_node = "0/6 nodes are available: 2 Insufficient nvidia.com/gpu, 4 node(s) didn't match Pod's node selector."
    pods = [
        pod(0, "Pending", scheduled=False, unschedulable=turned_back),
        pod(2, "Pending", scheduled=False, unschedulable=no_node),
        pod(1, "Pending", scheduled=False),
    ]
    spec = {"replicas": 3, "schedulingPolicy": {"gangScheduler": "Coscheduling", "scheduleTimeoutSeconds": 5}}
    waiting = run(job(spec, {"phase": "Pending", "gangCreatedTime": ago(2)}), pods)
    assert reasons(waiting)["Scheduled"] == ("False", "WaitingForGang")
    held_back = "0/3 ranks scheduled; Coscheduling binds none until all 3 fit at once"
    assert status_of(waiting)["conditions"][0]["message"] == f"{held_back}; the scheduler says: {no_node}"
    timeout = "0/1 nodes are available: 1 rejected due to timeout after waiting 5s at plugin Coscheduling."
    held = [pod(0, "Pending", scheduled=False), pod(1, "Pending", scheduled=False, unschedulable=timeout),
            pod(2, "Pending", scheduled=False, unschedulable=turned_back)]  # fmt: skip
    timed_out = run(job(spec, {"phase": "Pending", "gangCreatedTime": ago(6)}), held)
    assert reasons(timed_out)["Scheduled"] == ("False", "Unschedulable")
    assert status_of(timed_out)["reason"] == "Unschedulable"
    message = status_of(timed_out)["conditions"][0]["message"]
    assert message == f"{held_back}; the scheduler says: {timeout} (waited over 5s)"


def test_all_ranks_exit_zero_succeeds_and_cleans_running_pods_only() -> None:
    plan = run(job(status=RUNNING), [pod(0, "Succeeded", exit_code=0), pod(1, "Succeeded", exit_code=0)])
    assert status_of(plan)["phase"] == "Succeeded"
    assert reasons(plan)["Succeeded"] == ("True", "Succeeded")
    assert status_of(plan)["completionTime"]
    assert plan.delete == []  # cleanPodPolicy Running keeps finished pods for their logs


COMPLETED = json.dumps({"exitCode": 0, "reason": "Completed", "message": "training completed", "step": 150})


def test_a_rank_that_crashed_after_writing_its_completed_summary_counts_as_done() -> None:
    """gloo aborts a rank whose peer closed a connection on the way out (134): the run was complete."""
    pods = [pod(0, "Succeeded", exit_code=0, message=COMPLETED), pod(1, "Failed", exit_code=134, message=COMPLETED)]
    plan = run(job(status=RUNNING), pods)
    assert status_of(plan)["phase"] == "Succeeded"
    message = next(c["message"] for c in status_of(plan)["conditions"] if c["type"] == "Succeeded")
    assert message == "all 2 ranks completed the run (rank 1 exited with code 134 after writing its summary)"


@pytest.mark.parametrize(
    "message",
    [
        json.dumps({"exitCode": 1, "reason": "Crashed", "message": "RuntimeError: boom"}),
        json.dumps({"exitCode": 143, "reason": "Preempted", "message": "stopped on SIGTERM after a checkpoint"}),
        '{"exitCode": 0, "reason": "Completed"',  # cut off: not a summary
        "Completed",
        None,
    ],
)
def test_a_failed_rank_without_a_completed_summary_is_a_failure(message: str | None) -> None:
    pods = [pod(0, "Succeeded", exit_code=0, message=COMPLETED), pod(1, "Failed", exit_code=134, message=message)]
    plan = run(job({"failurePolicy": {"restartPolicy": "Never"}}, RUNNING), pods)
    assert status_of(plan)["phase"] == "Failed"


@pytest.mark.parametrize(
    ("reason", "said"),
    [
        ("OOMKilled", "exited with code 137 (OOMKilled)"),
        ("Error", "exited with code 137: "),
        (None, "exited with code 137: "),
    ],
)
def test_a_failed_rank_s_message_carries_the_kubelet_s_reason(reason: str | None, said: str) -> None:
    """A rank over its memory limit: the status says OOMKilled beside the exit code, so a user knows why."""
    failed = pod(1, "Failed", exit_code=137, message="killed", reason=reason)
    plan = run(job({"failurePolicy": {"restartPolicy": "Never"}}, RUNNING), [pod(0), failed])
    message = next(c["message"] for c in status_of(plan)["conditions"] if c["type"] == "Failed")
    assert f"rank 1 (pod mnist-1) {said}" in message


def _failed(rank: int, code: int, seconds_ago: float) -> RankPod:
    return pod(rank, "Failed", exit_code=code, finished_at=NOW - timedelta(seconds=seconds_ago))


@pytest.mark.parametrize(
    ("pods", "outcome"),
    [
        # rank 1 was killed first (137); rank 0's collective failed after it (exit 1): a restart
        ([_failed(0, 1, 1), _failed(1, 137, 2)], "Restarting"),
        # in the same second the retryable failure is taken as the cause
        ([_failed(0, 1, 1), _failed(1, 137, 1)], "Restarting"),
        # a permanent failure while a peer still runs waits for the peer to report ...
        ([_failed(0, 1, 1), pod(1)], None),
        # ... but not for ever
        ([_failed(0, 1, 11), pod(1)], "Failed"),
        ([_failed(0, 1, 1), _failed(1, 1, 1)], "Failed"),
    ],
)
def test_the_gang_fails_for_the_rank_that_failed_first(pods: list[RankPod], outcome: str | None) -> None:
    plan = run(job(status=RUNNING), pods)
    if outcome is None:
        assert plan.status is None or plan.status.get("phase", "Running") == "Running"
        assert not plan.delete and plan.requeue_after is not None and plan.requeue_after <= 10
        return
    assert status_of(plan)["phase"] == outcome
    if outcome == "Restarting":
        assert any("rank 1 (pod mnist-1) exited with code 137" in c["message"] for c in status_of(plan)["conditions"])


@pytest.mark.parametrize(
    ("policy", "code", "outcome"),
    [
        ({}, 143, "Restarting"),
        ({}, 137, "Restarting"),
        ({}, 1, "Failed"),
        ({"restartPolicy": "OnFailure"}, 1, "Restarting"),
        ({"restartPolicy": "OnFailure"}, 65, "Failed"),
        ({"restartPolicy": "OnFailure"}, 78, "Failed"),
        ({"restartPolicy": "Never"}, 143, "Failed"),
        ({"retryableExitCodes": [42]}, 42, "Restarting"),
    ],
)
def test_failed_rank_restarts_or_fails_by_policy(policy: dict[str, Any], code: int, outcome: str) -> None:
    plan = run(job({"failurePolicy": policy}, RUNNING), [pod(0), pod(1, "Failed", exit_code=code, message="boom")])
    status = status_of(plan)
    assert status["phase"] == outcome
    if outcome == "Failed":
        assert reasons(plan)["Failed"] == ("True", "Failed")
        message = next(c["message"] for c in status["conditions"] if c["type"] == "Failed")
        assert f"rank 1 (pod mnist-1) exited with code {code}: boom" in message
    else:
        assert status["restarts"] == 1 and status["gangAttempt"] == 1
        assert sorted(d.name for d in plan.delete) == ["mnist-0", "mnist-1"]  # the whole gang goes
        assert plan.requeue_after == backoff_seconds(10, 1)


def test_backoff_limit_ends_the_job() -> None:
    status = {**RUNNING, "restarts": 3, "gangAttempt": 3}
    plan = run(job(status=status), [pod(0, attempt=3), pod(1, "Failed", attempt=3, exit_code=143)])
    assert status_of(plan)["phase"] == "Failed"
    assert reasons(plan)["Failed"] == ("True", "BackoffLimitExceeded")


def test_vanished_rank_after_the_gang_was_complete_restarts_it() -> None:
    plan = run(job(status=RUNNING), [pod(0)])
    assert status_of(plan)["phase"] == "Restarting"
    assert reasons(plan)["Restarting"] == ("True", "RankLost")


def test_evicted_rank_is_a_retryable_loss() -> None:
    plan = run(job(status=RUNNING), [pod(0), pod(1, "Failed", reason="Evicted", message="node low on memory")])
    assert reasons(plan)["Restarting"] == ("True", "RankLost")


def test_restarting_waits_for_backoff_then_for_old_pods_then_recreates_the_same_names() -> None:
    restarting = {"phase": "Restarting", "restarts": 1, "gangAttempt": 1, "lastRestartTime": ago(5)}
    waiting = run(job(status=restarting), [pod(0, attempt=0, deletion=NOW)])
    assert waiting.create == [] and waiting.requeue_after is not None and waiting.requeue_after <= 5
    after_backoff = {**restarting, "lastRestartTime": ago(11)}
    old_pod_left = run(job(status=after_backoff), [pod(0, attempt=0, deletion=NOW)])
    assert [o["metadata"]["name"] for o in old_pod_left.create] == ["mnist-1"]
    assert "gangCreatedTime" not in status_of(old_pod_left)  # rank 0 is still to come
    assert status_of(old_pod_left)["reason"] == "OldRanksTerminating"
    recreated = run(job(status=after_backoff), [])
    pods = [o for o in recreated.create if o["kind"] == "Pod"]
    assert [p["metadata"]["name"] for p in pods] == ["mnist-0", "mnist-1"]
    assert {p["metadata"]["labels"]["aidc.io/gang-attempt"] for p in pods} == {"1"}
    assert status_of(recreated)["gangCreatedTime"]
    assert pods[1]["spec"]["hostname"] == "mnist-1" and pods[1]["spec"]["subdomain"] == "mnist-gang"


def test_pod_stuck_terminating_on_a_lost_node_is_force_deleted() -> None:
    lingering = pod(1, deletion=NOW - timedelta(seconds=61))
    plan = run(job(status=RUNNING), [pod(0), lingering])
    assert any(d.name == "mnist-1" and d.force for d in plan.delete)
    forced = [e for e in plan.events if e.reason == "ForceDeleted"]
    assert len(forced) == 1 and forced[0].type == "Warning"
    assert forced[0].message.startswith("pod mnist-1 still terminating 61s after its grace period ended")


RESTARTED = {**RUNNING, "phase": "Restarting", "restarts": 1, "gangAttempt": 1, "lastRestartTime": ago(20),
             "gangCreatedTime": None, "gangRunningTime": None}  # fmt: skip


def test_a_stuck_pod_is_not_force_deleted_before_its_time_and_the_pass_comes_back_then() -> None:
    plan = run(job(status=RESTARTED), [pod(0, attempt=0, deletion=NOW - timedelta(seconds=50))])
    assert not any(d.force for d in plan.delete) and not any(e.reason == "ForceDeleted" for e in plan.events)
    assert plan.requeue_after == 11  # 60 s after the grace period, and a second


def test_a_rank_whose_old_pod_is_stuck_waits_and_the_status_says_until_when() -> None:
    """A lost node's pod keeps its name: the new rank under that name waits, and the job says why."""
    plan = run(job(status=RESTARTED), [pod(0, attempt=0, deletion=NOW - timedelta(seconds=10))])
    assert [o["metadata"]["name"] for o in plan.create if o["kind"] == "Pod"] == ["mnist-1"]
    assert status_of(plan)["phase"] == "Pending" and status_of(plan)["reason"] == "OldRanksTerminating"
    assert reasons(plan)["Scheduled"] == ("False", "OldRanksTerminating")
    assert condition_message(plan, "Scheduled") == (
        "1/2 ranks of attempt 1 created; waiting for the old pod(s) mnist-0 to end before their rank(s) are created "
        "again; mnist-0 outlived its grace period: its node does not confirm (lost or unreachable); force-deleted "
        "at 2026-11-29T12:00:50Z (stuckTerminatingSeconds 60)"
    )
    within_grace = run(job(status=RESTARTED), [pod(0, attempt=0, deletion=NOW + timedelta(seconds=20))])
    assert condition_message(within_grace, "Scheduled") == (
        "1/2 ranks of attempt 1 created; waiting for the old pod(s) mnist-0 to end before their rank(s) are created "
        "again"
    )
    assert not plan.routine_progress  # news for whoever waits: written at once


HANG = {"failurePolicy": {"hangTimeoutSeconds": 120}}


@pytest.mark.parametrize(
    ("recorded", "beat", "phase"),
    [
        pytest.param({"step": 5, "lastHeartbeatTime": ago(200), "lastStepTime": ago(200)}, None, "Restarting",
                     id="silent-for-longer-than-the-timeout"),
        pytest.param({"step": 5, "lastHeartbeatTime": ago(10), "lastStepTime": ago(10)}, None, "Running",
                     id="a-new-step-lately"),
        # rank 0 blocked in a collective whose peer is stopped, its heartbeat thread still beating
        pytest.param({"step": 5, "lastHeartbeatTime": ago(10), "lastStepTime": ago(200)},
                     {"step": 5, "time": ago(1)}, "Restarting", id="a-fresh-heartbeat-of-the-same-step-is-no-progress"),
        pytest.param({"step": 5, "lastHeartbeatTime": ago(10), "lastStepTime": ago(200)},
                     {"step": 6, "time": ago(1)}, "Running", id="a-new-step-is-progress"),
        # a status written before lastStepTime existed: the heartbeat's own time, no false alarm
        pytest.param({"step": 5, "lastHeartbeatTime": ago(200)}, {"step": 5, "time": ago(1)}, "Running",
                     id="no-step-time-recorded-yet"),
        # a trainer of the user's own that reports no step: its heartbeat's time is all it offers
        pytest.param({"lastHeartbeatTime": ago(200), "lastStepTime": ago(200)}, {"time": ago(1)}, "Running",
                     id="no-step-a-new-time"),
        pytest.param({"lastHeartbeatTime": ago(200), "lastStepTime": ago(200)}, {"time": ago(200)}, "Restarting",
                     id="no-step-the-same-time"),
    ],
)  # fmt: skip
def test_the_hang_check_counts_new_steps_not_fresh_heartbeats(
    recorded: dict[str, Any], beat: dict[str, Any] | None, phase: str
) -> None:
    status = {**RUNNING, "gangRunningTime": ago(300), "progress": recorded}
    plan = run(job(HANG, status), [pod(0, progress=beat), pod(1)])
    assert status_of(plan)["phase"] == phase
    if phase == "Restarting":
        assert reasons(plan)["Restarting"] == ("True", "Stalled")
        assert "rank 0 reported no new step for 200s" in condition_message(plan, "Restarting")


def test_a_heartbeat_that_repeats_its_step_keeps_the_time_of_the_step() -> None:
    status = {**RUNNING, "progress": {"step": 5, "lastHeartbeatTime": ago(30), "lastStepTime": ago(40)}}
    same = status_of(run(job(HANG, status), [pod(0, progress={"step": 5, "time": ago(1)}), pod(1)]))
    assert same["progress"]["lastHeartbeatTime"] == ago(1).replace("+00:00", "Z")
    assert same["progress"]["lastStepTime"] == ago(40).replace("+00:00", "Z")
    moved = status_of(run(job(HANG, status), [pod(0, progress={"step": 6, "time": ago(1)}), pod(1)]))
    assert moved["progress"]["lastStepTime"] == ago(1).replace("+00:00", "Z")


def test_a_new_gang_that_resumes_at_the_recorded_step_gets_a_whole_hang_timeout() -> None:
    """The step recorded by the old gang is where the new one resumes: its clock starts when it runs."""
    restarted = {**RUNNING, "gangAttempt": 1, "gangRunningTime": ago(30),
                 "progress": {"step": 50, "lastHeartbeatTime": ago(200), "lastStepTime": ago(200)}}  # fmt: skip
    beat = {"step": 50, "time": ago(1)}
    plan = run(job(HANG, restarted), [pod(0, attempt=1, progress=beat), pod(1, attempt=1)])
    assert status_of(plan)["phase"] == "Running"
    assert plan.requeue_after is not None and 89 <= plan.requeue_after <= 90


def test_heartbeat_lands_in_progress_checkpoint_and_model() -> None:
    beat = {
        "step": 50,
        "totalSteps": 200,
        "epoch": 1,
        "loss": 0.25,
        "metrics": {"accuracy": 0.9},
        "checkpoint": {"path": "ckpt-000000050.pt", "step": 50},
        "model": {"path": "export/final"},
        "time": ago(1),
    }
    plan = run(job({"storage": {"checkpoints": {"size": "1Gi"}}}, RUNNING), [pod(0, progress=beat), pod(1)])
    status = status_of(plan)
    assert status["progress"]["percent"] == 25 and status["progress"]["metrics"] == {"accuracy": 0.9}
    assert status["checkpoint"]["path"] == "mnist/ckpt-000000050.pt"
    assert status["model"] == {
        "claimName": "mnist-checkpoints",
        "path": "mnist/export/final",
        "step": 50,
        "task": "classifier",
    }


RL_SPEC: dict[str, Any] = {
    "trainer": {
        "task": "reinforcement-learning",
        "reinforcementLearning": {"environment": {"gymnasiumId": "CartPole-v1"}},
    }
}
NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize(
    ("beat", "progress"),
    [
        pytest.param(
            {
                "step": 25600,
                "totalSteps": 100000,
                "loss": 0.12,
                "metrics": {"episodicReturn": 88.5, "policyLoss": -0.01, "valueLoss": 0.3, "entropy": 0.6},
            },
            {"step": 25600, "totalSteps": 100000, "percent": 25, "loss": 0.12,
             "metrics": {"episodicReturn": 88.5, "policyLoss": -0.01, "valueLoss": 0.3, "entropy": 0.6}},
            id="rl-env-steps-ppo-loss-and-return",
        ),
        pytest.param(
            {"step": 100352, "totalSteps": 100000, "loss": 0.01,
             "metrics": {"episodicReturn": 490, "evaluationReturn": 500}},
            {"step": 100352, "totalSteps": 100000, "percent": 100, "loss": 0.01,
             "metrics": {"episodicReturn": 490.0, "evaluationReturn": 500.0}},
            id="rl-final-evaluation-return-like-validation-accuracy",
        ),
        pytest.param(
            {"step": 512, "totalSteps": 100000, "loss": 0.5, "metrics": {"episodicReturn": NAN, "entropy": 0.69}},
            {"step": 512, "totalSteps": 100000, "percent": 0, "loss": 0.5, "metrics": {"entropy": 0.69}},
            id="rl-no-episode-ended-yet-nan-left-out",
        ),
        pytest.param(
            {"step": 9, "loss": NAN, "samplesPerSecond": INF, "etaSeconds": NAN,
             "metrics": {"a": -INF, "b": True, "c": "x", "d": -250}},
            {"step": 9, "metrics": {"d": -250.0}},
            id="non-finite-and-non-numbers-left-out",
        ),
        pytest.param({"step": 3, "metrics": [1, 2]}, {"step": 3, "metrics": {}}, id="metrics-not-an-object"),
    ],
)  # fmt: skip
def test_heartbeat_numbers_reach_status_only_when_json_can_hold_them(
    beat: dict[str, Any], progress: dict[str, Any]
) -> None:
    """NaN or infinity in the status patch would make the API server refuse the whole write."""
    plan = run(job(RL_SPEC, RUNNING), [pod(0, progress={**beat, "time": ago(1)}), pod(1)])
    written = status_of(plan)["progress"]
    assert {k: v for k, v in written.items() if k not in ("lastHeartbeatTime", "lastStepTime")} == progress
    json.dumps(written, allow_nan=False)  # what the client sends must be strict JSON


def test_suspend_deletes_the_gang_and_resume_starts_a_new_attempt() -> None:
    plan = run(job({"runPolicy": {"suspend": True}}, RUNNING), [pod(0), pod(1)])
    assert status_of(plan)["phase"] == "Suspended" and status_of(plan)["gangAttempt"] == 1
    assert len(plan.delete) == 2
    resumed = run(job(status={**status_of(plan)}), [])
    assert status_of(resumed)["phase"] == "Pending"
    assert reasons(resumed)["Suspended"] == ("False", "Resumed")
    assert len([o for o in resumed.create if o["kind"] == "Pod"]) == 2


def test_deadline_fails_the_job_and_stops_running_ranks() -> None:
    plan = run(job({"runPolicy": {"activeDeadlineSeconds": 30}}, RUNNING), [pod(0), pod(1)])
    assert reasons(plan)["Failed"] == ("True", "DeadlineExceeded")
    assert sorted(d.name for d in plan.delete) == ["mnist-0", "mnist-1"]


@pytest.mark.parametrize(("policy", "deleted"), [("All", 2), ("Running", 1), ("None", 0)])
def test_clean_pod_policy_on_a_finished_job(policy: str, deleted: int) -> None:
    finished = {"phase": "Failed", "completionTime": ago(1)}
    plan = run(job({"runPolicy": {"cleanPodPolicy": policy}}, finished), [pod(0), pod(1, "Failed", exit_code=1)])
    assert len(plan.delete) == deleted


def test_ttl_deletes_the_finished_job() -> None:
    done = {"phase": "Succeeded", "completionTime": ago(100)}
    assert run(job({"runPolicy": {"ttlSecondsAfterFinished": 60}}, done), []).delete_resource
    later = run(job({"runPolicy": {"ttlSecondsAfterFinished": 600}}, done), [])
    assert not later.delete_resource and later.requeue_after == pytest.approx(500, abs=1)


def test_nothing_changes_nothing_is_written() -> None:
    first = run(job(status=RUNNING), [pod(0), pod(1)])
    settled = job(status=status_of(first))
    again = run(settled, [pod(0), pod(1)])
    assert again.status is None and again.create == [] and again.delete == [] and again.events == []


def test_stale_pods_of_an_old_attempt_are_deleted() -> None:
    plan = run(job(status={**RUNNING, "gangAttempt": 2}), [pod(0, attempt=2), pod(1, attempt=2), pod(1, attempt=1)])
    assert [d.name for d in plan.delete] == ["mnist-1"]


def test_backoff_doubles_and_is_capped() -> None:
    assert [backoff_seconds(10, n) for n in (1, 2, 3)] == [10, 20, 40]
    assert backoff_seconds(10, 20) == 600


def refuse(plan: Plan, kind: str, status: int, message: str, j: TrainingJob | None = None, **obs: Any) -> Plan:
    """``refused`` of ``plan`` for one object of ``kind`` the API server answered ``status``."""
    obs.setdefault("settings", SETTINGS)
    observation = TrainingObservation(job=j or job(), pods=obs.pop("pods", []), now=NOW, **obs)
    return refused(observation, plan, Refusal(kind, f"mnist-{kind.lower()}", status, message))


def test_a_refused_create_is_the_reason_and_takes_back_the_gang_recorded_in_the_same_pass() -> None:
    """The failure to apply is decided on like any observation: the next pass creates what is missing."""
    new = job()
    plan = run(new, [], service_exists=False)
    assert status_of(plan)["gangCreatedTime"]
    answer = refuse(plan, "Pod", 403, "exceeded quota", new)
    status = status_of(answer)
    assert "gangCreatedTime" not in status and status["phase"] == "Pending"
    assert reasons(answer)["Scheduled"] == ("False", "CreationFailed")
    assert "creating Pod mnist-pod was refused (403): exceeded quota" in next(
        c["message"] for c in status["conditions"] if c["type"] == "Scheduled"
    )
    assert [(e.type, e.reason) for e in answer.events][-1] == ("Warning", "CreationFailed")
    assert not answer.routine_progress and answer.requeue_after == 30
    assert answer.create == plan.create  # what was planned stays planned: the next pass tries again


@pytest.mark.parametrize(
    ("kind", "code", "phase", "reason"),
    [
        # the object rendered from the spec is wrong: no retry can create it
        ("Pod", 422, "Failed", "InvalidSpec"),
        ("Pod", 400, "Failed", "InvalidSpec"),
        ("PersistentVolumeClaim", 422, "Failed", "InvalidSpec"),
        # a quota, a policy or the server's trouble may pass: tried again
        ("Pod", 403, "Pending", "CreationFailed"),
        ("Pod", 500, "Pending", "CreationFailed"),
        ("Pod", 404, "Pending", "CreationFailed"),  # the namespace is being deleted
        ("Service", 422, "Pending", "CreationFailed"),  # rendered from the name alone: not the spec's fault
        ("PodGroup", 400, "Pending", "CreationFailed"),
    ],
)
def test_a_refusal_that_blames_the_spec_fails_the_job_at_once(kind: str, code: int, phase: str, reason: str) -> None:
    plan = run(job(), [], service_exists=False)
    answer = refuse(plan, kind, code, 'spec.dnsPolicy: Unsupported value: "Bogus"')
    status = status_of(answer)
    assert (status["phase"], status["reason"]) == (phase, reason)
    if phase == "Failed":
        assert reasons(answer)["Failed"] == ("True", "InvalidSpec")
        failed = next(c for c in status["conditions"] if c["type"] == "Failed")
        assert 'spec.dnsPolicy: Unsupported value: "Bogus"' in failed["message"]
        assert failed["observedGeneration"] == 1
        assert status["completionTime"] and answer.requeue_after is None
        assert [(e.type, e.reason) for e in answer.events] == [("Warning", "InvalidSpec")]
    else:
        assert reasons(answer)["Scheduled"] == ("False", "CreationFailed") and answer.requeue_after == 30


def test_a_spec_refused_job_deletes_the_ranks_that_were_created() -> None:
    answer = refuse(run(job(), []), "Pod", 422, "bad", pods=[pod(0, "Pending", scheduled=False)])
    assert [d.name for d in answer.delete] == ["mnist-0"]


def _failed_for(generation: int) -> dict[str, Any]:
    condition = {
        "type": "Failed", "status": "True", "reason": "InvalidSpec", "message": "invalid spec: refused",
        "observedGeneration": generation, "lastTransitionTime": ago(60),
    }  # fmt: skip
    return {
        "phase": "Failed", "reason": "InvalidSpec", "conditions": [condition], "completionTime": ago(60),
        "observedGeneration": generation, "ready": "0/2", "selector": "aidc.io/job-name=mnist",
        "replicaCounts": {"desired": 2},
    }  # fmt: skip


def test_a_job_failed_for_its_spec_stays_failed_until_the_spec_changes() -> None:
    same = run(job(status=_failed_for(1), generation=1), [])
    assert same.create == [] and same.status is None
    edited = run(job(status=_failed_for(1), generation=2), [], service_exists=False)
    assert [o["kind"] for o in edited.create] == ["Service", "Pod", "Pod"]
    assert status_of(edited)["phase"] == "Pending" and "Failed" not in reasons(edited)


def test_an_unusable_spec_fails_the_job_once() -> None:
    plan = invalid({}, {"generation": 3}, "spec.replicas: must be >= 1", NOW)
    status = status_of(plan)
    assert (status["phase"], status["observedGeneration"]) == ("Failed", 3)
    assert reasons(plan)["Failed"] == ("True", "InvalidSpec")
    assert [(e.type, e.reason) for e in plan.events] == [("Warning", "InvalidSpec")]
    again = invalid(status, {"generation": 3}, "spec.replicas: must be >= 1", NOW)
    assert again.status is None and again.events == []


NO_POLICIES = OperatorSettings(network_policy=False)


@pytest.mark.parametrize(
    ("observed_hash", "settings", "status", "created", "updated"),
    [
        (None, SETTINGS, None, ["mnist-gang"], []),  # missing: made (again) in this pass
        ("0123456789abcdef", SETTINGS, None, [], ["mnist-gang"]),  # rendered otherwise: replaced
        ("current", SETTINGS, None, [], []),
        (None, SETTINGS, RUNNING, ["mnist-gang"], []),  # deleted under a running gang
        (None, NO_POLICIES, None, [], []),  # networkPolicy.enabled=false
        (None, SETTINGS, {"phase": "Succeeded", "completionTime": ago(10)}, [], []),  # nothing left to fence
    ],
)
def test_the_gangs_network_policy_is_kept(
    observed_hash: str | None,
    settings: OperatorSettings,
    status: dict[str, Any] | None,
    created: list[str],
    updated: list[str],
) -> None:
    obs: dict[str, Any] = {"settings": settings}
    if observed_hash != "current":
        obs["network_policy_hash"] = observed_hash
    pods = [pod(0), pod(1)] if status else []
    plan = run(job(status=status), pods, **obs)
    assert [o["metadata"]["name"] for o in plan.create if o["kind"] == "NetworkPolicy"] == created
    assert [o["metadata"]["name"] for o in plan.update if o["kind"] == "NetworkPolicy"] == updated


def test_a_new_gang_is_created_with_its_policy() -> None:
    plan = run(job(), [], service_exists=False, network_policy_hash=None)
    kinds = [(o["kind"], o["metadata"]["name"]) for o in plan.create]
    assert kinds == [("Service", "mnist-gang"), ("NetworkPolicy", "mnist-gang"), ("Pod", "mnist-0"), ("Pod", "mnist-1")]
    policy = plan.create[1]
    assert policy["metadata"]["ownerReferences"][0]["uid"] == "u-1"


# -- Kueue: a gated gang, a preempted gang, the finalizer it holds pods with ---------------------

KUEUE = {"schedulingPolicy": {"gangScheduler": "Kueue", "queue": "team-a"}}
PREEMPTED = "WorkloadEvictedDueToPreempted"
KUEUE_SAYS = "Preempted to accommodate a workload (UID: w-1, JobUID: j-1) due to prioritization in the ClusterQueue"


def test_a_gated_gang_is_queued_with_kueue_s_reason() -> None:
    wait = "couldn't assign flavors to pod set 1d0c3a5e: insufficient unused quota for nvidia.com/gpu in flavor gpu"
    pods = [pod(0, "Pending", gated=True, scheduled=False), pod(1, "Pending", gated=True, scheduled=False)]
    plan = run(job(KUEUE, {"phase": "Pending", "gangCreatedTime": ago(10)}), pods, queue_wait=wait)
    assert status_of(plan)["phase"] == "Queued" and status_of(plan)["reason"] == "Queued"
    message = next(c["message"] for c in status_of(plan)["conditions"] if c["type"] == "Scheduled")
    assert message == f"2/2 ranks wait for admission by the gang scheduler; Kueue says: {wait}"
    assert [(e.reason, e.message) for e in plan.events] == [("Queued", message)]


@pytest.mark.parametrize("deleting", [True, False], ids=["deleted", "marked-not-yet-deleted"])
def test_a_gang_kueue_preempted_is_recreated_whole_without_counting_against_backoff(deleting: bool) -> None:
    """Kueue marks every pod (TerminationTarget) and deletes it; at backoffLimit already, the job still goes on."""
    status = {**RUNNING, "restarts": 3, "gangAttempt": 3}
    stopped = {"stopped_by_queue": PREEMPTED, "stop_message": KUEUE_SAYS, "held_by_queue": True}
    pods = [pod(r, attempt=3, deletion=NOW if deleting else None, **stopped) for r in (0, 1)]
    plan = run(job(KUEUE, status), pods)
    status = status_of(plan)
    assert status["phase"] == "Restarting" and status["reason"] == "Preempted"
    assert status["restarts"] == 3 and status["preemptions"] == 1 and status["gangAttempt"] == 4
    said = f"Kueue stopped the gang ({PREEMPTED}) at rank 0 (pod mnist-0): {KUEUE_SAYS}"
    assert reasons(plan)["Restarting"] == ("True", "Preempted") and reasons(plan)["Running"] == ("False", "Preempted")
    assert next(c["message"] for c in status["conditions"] if c["type"] == "Restarting") == said
    assert [(e.type, e.reason) for e in plan.events] == [("Warning", "Preempted")] and said in plan.events[0].message
    assert sorted(d.name for d in plan.delete) == ([] if deleting else ["mnist-0", "mnist-1"])
    assert plan.requeue_after is not None and plan.requeue_after <= 1


def test_another_kueue_eviction_is_evicted_not_preempted() -> None:
    pods = [pod(0, stopped_by_queue="WorkloadEvictedDueToClusterQueueStopped", deletion=NOW), pod(1)]
    plan = run(job(KUEUE, RUNNING), pods)
    assert status_of(plan)["reason"] == "Evicted" and status_of(plan)["preemptions"] == 1


def test_a_preempted_gang_releases_its_held_pods_and_returns_at_once_without_backoff() -> None:
    preempted = {"phase": "Restarting", "reason": "Preempted", "preemptions": 1, "gangAttempt": 1,
                 "lastRestartTime": ago(1)}  # fmt: skip
    held = [pod(r, attempt=0, deletion=NOW, held_by_queue=True, stopped_by_queue=PREEMPTED) for r in (0, 1)]
    waiting = run(job(KUEUE, preempted), held)
    assert sorted(waiting.release) == ["mnist-0", "mnist-1"] and waiting.create == []
    recreated = run(job(KUEUE, preempted), [])
    assert [o["metadata"]["name"] for o in recreated.create if o["kind"] == "Pod"] == ["mnist-0", "mnist-1"]


def test_a_failed_rank_s_gang_restarts_by_policy_and_its_held_pods_are_released_once_deleting() -> None:
    plan = run(job(KUEUE, RUNNING), [pod(0, held_by_queue=True), pod(1, "Failed", exit_code=137, held_by_queue=True)])
    assert status_of(plan)["restarts"] == 1 and status_of(plan)["preemptions"] == 0
    assert plan.release == []  # not deleting yet: Kueue may still count how they ended
    restarting = {"phase": "Restarting", "restarts": 1, "gangAttempt": 1, "lastRestartTime": ago(1)}
    later = run(job(KUEUE, restarting), [pod(0, deletion=NOW, held_by_queue=True), pod(1, "Failed", deletion=NOW)])
    assert later.release == ["mnist-0"]


def test_a_finished_job_s_held_pods_are_released_once_deleting() -> None:
    failed = {"phase": "Failed", "reason": "Failed", "completionTime": ago(5)}
    plan = run(job(KUEUE, failed), [pod(0, deletion=NOW, held_by_queue=True), pod(1, "Failed", held_by_queue=True)])
    assert plan.release == ["mnist-0"]


def test_a_gang_kueue_admitted_whole_is_ungated_at_once_and_not_before() -> None:
    """Kueue lifts its gate rank by rank; the operator's own gate holds every rank until none carries Kueue's."""
    created = {"phase": "Queued", "gangCreatedTime": ago(5)}
    partly = [pod(0, "Pending", scheduled=False, gang_gated=True),
              pod(1, "Pending", scheduled=False, gated=True, gang_gated=True)]  # fmt: skip
    waiting = run(job(KUEUE, created), partly)
    assert waiting.ungate == [] and status_of(waiting)["phase"] == "Queued"
    admitted = [pod(r, "Pending", scheduled=False, gang_gated=True) for r in (0, 1)]
    plan = run(job(KUEUE, created), admitted)
    assert plan.ungate == ["mnist-0", "mnist-1"]
    assert reasons(plan)["Scheduled"] == ("False", "WaitingForGang")  # admitted: being scheduled now
    unseen = run(job(KUEUE, created), admitted[:1], expected=frozenset({"mnist-1"}))
    assert unseen.ungate == []  # a rank not yet seen may still be gated


def test_kueue_ranks_are_created_behind_the_operator_s_gang_gate() -> None:
    from aidc.compute.gang import rank_pod

    assert rank_pod(job(KUEUE), 0, 0, SETTINGS)["spec"]["schedulingGates"] == [{"name": "aidc.io/gang"}]
    assert "schedulingGates" not in rank_pod(job(), 0, 0, SETTINGS)["spec"]
