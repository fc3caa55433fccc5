"""The checkpoint snapshot of a succeeded job as tables: what was found -> what is created and reported."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from aidc.api import TrainingJob
from aidc.management.checkpoint_snapshot import SnapshotLookup, snapshot_refused, snapshot_to_look_up
from aidc.management.observe import RankPod
from aidc.management.plan import Plan
from aidc.management.training_decision import TrainingObservation, decide
from aidc.settings import OperatorSettings
from aidc.storage.snapshots import checkpoint_snapshot
from tests.factories import training_job

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
SETTINGS = OperatorSettings(network_policy=False)  # the gang's policy is tested in test_training_decision
UID = "0a1b2c3d-4e5f-6789-abcd-ef0123456789"
NAME = "mnist-checkpoints-0a1b2c3d"  # <job>-checkpoints-<first 8 characters of the uid>
SNAPSHOT_SPEC = {"storage": {"checkpoints": {"size": "1Gi", "snapshotOnSuccess": {"volumeSnapshotClassName": "fast"}}}}


def ago(seconds: float) -> str:
    return (NOW - timedelta(seconds=seconds)).isoformat()


def condition(type_: str, status: str, reason: str) -> dict[str, Any]:
    return {"type": type_, "status": status, "reason": reason, "message": "", "lastTransitionTime": ago(30)}


def succeeded(*conditions: dict[str, Any], **fields: Any) -> dict[str, Any]:
    """The status of a job that succeeded 20 s ago."""
    return {
        "phase": "Succeeded",
        "completionTime": ago(20),
        "conditions": [condition("Succeeded", "True", "Succeeded"), *conditions],
        **fields,
    }


def job(status: dict[str, Any] | None = None, spec: dict[str, Any] | None = None, **run_policy: Any) -> TrainingJob:
    spec = dict(spec if spec is not None else SNAPSHOT_SPEC)
    if run_policy:
        spec["runPolicy"] = run_policy
    return training_job(spec, status, uid=UID)


def found(status: dict[str, Any] | None = None, uid: str = UID, claim: str = "mnist-checkpoints") -> dict[str, Any]:
    """A VolumeSnapshot as the API server returns it, with what its controller reported."""
    return {
        "apiVersion": "snapshot.storage.k8s.io/v1",
        "kind": "VolumeSnapshot",
        "metadata": {"name": NAME, "namespace": "ml", "annotations": {"aidc.io/job-uid": uid}},
        "spec": {"source": {"persistentVolumeClaimName": claim}, "volumeSnapshotClassName": "fast"},
        **({"status": status} if status is not None else {}),
    }


def run(j: TrainingJob, lookup: SnapshotLookup | None, pods: list[RankPod] | None = None) -> Plan:
    return decide(TrainingObservation(job=j, pods=pods or [], now=NOW, settings=SETTINGS, snapshot=lookup))


def taken(plan: Plan) -> tuple[str, str] | None:
    assert plan.status is not None
    found = [(c["status"], c["reason"]) for c in plan.status["conditions"] if c["type"] == "SnapshotTaken"]
    return found[0] if found else None


RECORDED = {"name": NAME, "claimName": "mnist-checkpoints", "volumeSnapshotClassName": "fast"}


@pytest.mark.parametrize(
    ("status", "lookup", "creates", "expected", "snapshot", "requeue"),
    [
        # nothing there yet: created once, pending until its controller reports
        (succeeded(), SnapshotLookup(), True, ("False", "SnapshotPending"), RECORDED, 5),
        # created in a pass whose status write was lost (an operator killed between the two): adopted
        (succeeded(), SnapshotLookup(found=found()), False, ("False", "SnapshotPending"), RECORDED, 5),
        (
            succeeded(condition("SnapshotTaken", "False", "SnapshotPending"), snapshot=RECORDED),
            SnapshotLookup(found=found({"readyToUse": True, "restoreSize": "1Gi", "creationTime": ago(10)})),
            False,
            ("True", "SnapshotReady"),
            {**RECORDED, "readyToUse": True, "restoreSize": "1Gi", "creationTime": ago(10).replace("+00:00", "Z")},
            None,  # settled: nothing more to look at
        ),
        (
            succeeded(snapshot=RECORDED),
            SnapshotLookup(found=found({"readyToUse": False, "error": {"message": "driver says no", "time": ago(5)}})),
            False,
            ("False", "SnapshotFailed"),
            {**RECORDED, "readyToUse": False, "error": "driver says no"},
            5,  # the controller retries; the operator keeps looking
        ),
        # the CRDs are not installed: the job stays Succeeded, looked at again every resync
        (succeeded(), SnapshotLookup(api_available=False), False, ("False", "SnapshotAPIUnavailable"), None, 60),
        (succeeded(), SnapshotLookup(problem="refused (403)"), False, ("False", "SnapshotRefused"), None, 30),
        # a user's own snapshot under the name, or one of an earlier job of the same name
        (succeeded(), SnapshotLookup(found=found(uid="someone-else")), False, ("False", "SnapshotNameTaken"), None, 60),
        (succeeded(), SnapshotLookup(found=found(claim="other")), False, ("False", "SnapshotNameTaken"), None, 60),
        # taken, then deleted by someone: never taken a second time (the checkpoints may have changed)
        (succeeded(snapshot=RECORDED), SnapshotLookup(), False, ("False", "SnapshotDeleted"), RECORDED, None),
    ],
    ids=["create", "adopt", "ready", "error", "no-api", "read-refused", "other-uid", "other-claim", "deleted"],
)
def test_a_succeeded_job_takes_its_snapshot_once_and_reports_it(
    status: dict[str, Any],
    lookup: SnapshotLookup,
    creates: bool,
    expected: tuple[str, str],
    snapshot: dict[str, Any] | None,
    requeue: float | None,
) -> None:
    plan = run(job(status), lookup)
    assert [o["kind"] for o in plan.create] == (["VolumeSnapshot"] if creates else [])
    assert plan.status is not None and plan.status["phase"] == "Succeeded"
    assert taken(plan) == expected
    assert plan.status.get("snapshot") == snapshot
    assert plan.requeue_after == requeue
    assert not plan.delete_resource


def test_a_new_reason_is_an_event_and_the_same_reason_again_is_not() -> None:
    first = run(job(succeeded()), SnapshotLookup(api_available=False))
    assert [(e.type, e.reason) for e in first.events] == [("Warning", "SnapshotAPIUnavailable")]
    again = run(job(first.status), SnapshotLookup(api_available=False))
    assert again.events == [] and again.status is None  # nothing changed: nothing written


@pytest.mark.parametrize(
    ("spec", "status", "name"),
    [
        (SNAPSHOT_SPEC, succeeded(), NAME),
        (SNAPSHOT_SPEC, succeeded(condition("SnapshotTaken", "False", "SnapshotPending")), NAME),
        (SNAPSHOT_SPEC, succeeded(condition("SnapshotTaken", "False", "SnapshotAPIUnavailable")), NAME),
        (SNAPSHOT_SPEC, succeeded(condition("SnapshotTaken", "True", "SnapshotReady")), None),
        (SNAPSHOT_SPEC, succeeded(condition("SnapshotTaken", "False", "SnapshotDeleted")), None),
        (SNAPSHOT_SPEC, {"phase": "Running"}, None),
        (SNAPSHOT_SPEC, {"phase": "Failed"}, None),  # only success is backed up
        (SNAPSHOT_SPEC, None, None),
        ({"storage": {"checkpoints": {"size": "1Gi"}}}, succeeded(), None),
    ],
    ids=["new", "pending", "no-api-yet", "ready", "deleted", "running", "failed", "no-status", "not-asked"],
)
def test_a_pass_looks_the_snapshot_up_only_when_there_is_something_to_learn(
    spec: dict[str, Any], status: dict[str, Any] | None, name: str | None
) -> None:
    assert snapshot_to_look_up(job(status, spec)) == name


def test_the_pass_that_sees_the_gang_succeed_comes_back_at_once_for_the_snapshot() -> None:
    running = {"phase": "Running", "gangCreatedTime": ago(60), "gangRunningTime": ago(50), "startTime": ago(50)}
    done = [RankPod(name=f"mnist-{r}", rank=r, attempt=0, phase="Succeeded", scheduled=True) for r in (0, 1)]
    plan = run(job(running), None, done)
    assert plan.status is not None and plan.status["phase"] == "Succeeded"
    assert plan.create == [] and plan.requeue_after == 0.5  # the next pass starts from Succeeded
    without = run(job(running, {"storage": {"checkpoints": {"size": "1Gi"}}}), None, done)
    assert without.requeue_after is None


@pytest.mark.parametrize(
    ("completed_ago", "poll"), [(0, 5), (20, 5), (200, 50), (10_000, 60)], ids=["now", "20s", "200s", "hours"]
)
def test_a_pending_snapshot_is_looked_at_more_rarely_the_longer_it_waits(completed_ago: float, poll: float) -> None:
    status = {**succeeded(snapshot=RECORDED), "completionTime": ago(completed_ago)}
    assert run(job(status), SnapshotLookup(found=found())).requeue_after == poll


def test_ttl_waits_until_status_says_what_became_of_the_snapshot() -> None:
    first = run(job(succeeded(), ttlSecondsAfterFinished=0), SnapshotLookup())
    assert [o["kind"] for o in first.create] == ["VolumeSnapshot"] and not first.delete_resource
    second = run(job(first.status, ttlSecondsAfterFinished=0), SnapshotLookup(found=found()))
    assert second.delete_resource  # the snapshot exists (its controller guards the claim it reads)
    no_api = run(job(succeeded(), ttlSecondsAfterFinished=0), SnapshotLookup(api_available=False))
    assert run(job(no_api.status, ttlSecondsAfterFinished=0), SnapshotLookup(api_available=False)).delete_resource


@pytest.mark.parametrize(
    ("code", "reason"), [(403, "SnapshotRefused"), (422, "SnapshotRefused"), (404, "SnapshotAPIUnavailable")]
)
def test_a_refused_create_records_no_snapshot_and_says_why(code: int, reason: str) -> None:
    j = job(succeeded())
    plan = snapshot_refused(j, run(j, SnapshotLookup()), code, "nope", NOW)
    assert plan.status is not None and "snapshot" not in plan.status
    assert taken(plan) == ("False", reason)
    assert [(e.type, e.reason) for e in plan.events] == [("Warning", reason)]
    message = next(c["message"] for c in plan.status["conditions"] if c["type"] == "SnapshotTaken")
    assert message == f"creating VolumeSnapshot {NAME} was refused ({code}): nope"
    assert plan.requeue_after == 5  # the pending poll asked first; the retry comes no later than 30 s


@pytest.mark.parametrize(
    ("checkpoints", "source", "class_name"),
    [
        ({"size": "1Gi", "snapshotOnSuccess": {"volumeSnapshotClassName": "fast"}}, "mnist-checkpoints", "fast"),
        ({"claimName": "team-ckpt", "snapshotOnSuccess": {}}, "team-ckpt", None),
    ],
    ids=["owned-claim-with-class", "named-claim-default-class"],
)
def test_the_snapshot_is_of_the_checkpoint_claim_and_has_no_owner(
    checkpoints: dict[str, Any], source: str, class_name: str | None
) -> None:
    snapshot = checkpoint_snapshot(job(spec={"storage": {"checkpoints": checkpoints}}))
    assert snapshot is not None
    expected_spec: dict[str, Any] = {"source": {"persistentVolumeClaimName": source}}
    if class_name:
        expected_spec["volumeSnapshotClassName"] = class_name
    assert snapshot["apiVersion"] == "snapshot.storage.k8s.io/v1" and snapshot["kind"] == "VolumeSnapshot"
    assert snapshot["spec"] == expected_spec
    meta = snapshot["metadata"]
    assert meta["name"] == NAME and meta["namespace"] == "ml"
    assert "ownerReferences" not in meta  # a backup outlives its job
    assert meta["annotations"] == {"aidc.io/job-uid": UID}
    assert meta["labels"]["aidc.io/job-name"] == "mnist"
    assert meta["labels"]["app.kubernetes.io/component"] == "checkpoint-snapshot"
    assert checkpoint_snapshot(job(spec={"storage": {"checkpoints": {"size": "1Gi"}}})) is None
