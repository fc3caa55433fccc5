"""The pure half of leader election: one round's step, what it writes, which timings are safe, the settings."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta, timezone

import pytest

from aidc.management.leader_election import (
    LeaseRecord,
    LeaseTimings,
    Step,
    lease_spec,
    micro_time,
    next_step,
    released_spec,
)
from aidc.settings import OperatorSettings

ME, OTHER = "replica-a", "replica-b"
NOW = datetime(2026, 12, 2, 20, 0, 0, 123456, tzinfo=UTC)


def record(holder: str, duration: int = 15, transitions: int = 2) -> LeaseRecord:
    return LeaseRecord(holder, duration, "2026-12-02T19:00:00.000000Z", "2026-12-02T19:59:58.000000Z", transitions, "7")


@pytest.mark.parametrize(
    ("observed", "unchanged_for", "step"),
    [
        (None, 0.0, Step.CREATE),
        (record(ME), 0.0, Step.RENEW),
        (record(ME), 100.0, Step.RENEW),  # still ours, even late: nobody took it
        (record(OTHER), 0.0, Step.WAIT),
        (record(OTHER), 14.9, Step.WAIT),  # renewed by its holder within the duration
        (record(OTHER), 15.0, Step.TAKE_OVER),  # not renewed for the whole duration, by our clock
        (record(OTHER, duration=30), 20.0, Step.WAIT),  # the record's duration counts, not ours
        (record(""), 0.0, Step.TAKE_OVER),  # released on a graceful stop
    ],
    ids=["absent", "mine", "mine-late", "other-fresh", "other-renewing", "other-expired", "record-duration", "free"],
)
def test_next_step(observed: LeaseRecord | None, unchanged_for: float, step: Step) -> None:
    assert next_step(observed, ME, unchanged_for) is step


@pytest.mark.parametrize(
    ("step", "observed", "acquired", "transitions"),
    [
        (Step.CREATE, None, "2026-12-02T20:00:00.123456Z", 0),
        (Step.RENEW, record(ME), "2026-12-02T19:00:00.000000Z", 2),  # a renewal keeps the acquire time
        (Step.TAKE_OVER, record(OTHER), "2026-12-02T20:00:00.123456Z", 3),
        (Step.TAKE_OVER, record(""), "2026-12-02T20:00:00.123456Z", 3),
    ],
    ids=["create", "renew", "take-over", "take-free"],
)
def test_lease_spec(step: Step, observed: LeaseRecord | None, acquired: str, transitions: int) -> None:
    assert lease_spec(step, observed, ME, NOW, 15) == {
        "holderIdentity": ME,
        "leaseDurationSeconds": 15,
        "acquireTime": acquired,
        "renewTime": "2026-12-02T20:00:00.123456Z",
        "leaseTransitions": transitions,
    }


def test_a_released_lease_has_no_holder_and_keeps_its_count() -> None:
    spec = released_spec(record(ME), NOW)
    assert "holderIdentity" not in spec and spec["leaseTransitions"] == 2 and spec["leaseDurationSeconds"] == 1
    assert next_step(LeaseRecord.of({"spec": spec}), OTHER, 0.0) is Step.TAKE_OVER


def test_a_record_is_read_from_a_lease_and_changes_with_any_write() -> None:
    lease = {"metadata": {"resourceVersion": "9"}, "spec": lease_spec(Step.CREATE, None, ME, NOW, 15)}
    read = LeaseRecord.of(lease)
    assert (read.holder, read.duration_seconds, read.transitions, read.resource_version) == (ME, 15, 0, "9")
    renewed = LeaseRecord.of({"spec": lease_spec(Step.RENEW, read, ME, NOW + timedelta(seconds=2), 15)})
    assert renewed.content() != read.content()
    assert LeaseRecord.of({}) == LeaseRecord("", 0, None, None, 0, None)


def test_micro_time_is_utc_with_microseconds() -> None:
    assert micro_time(datetime(2026, 1, 2, 5, 4, 5, 6, tzinfo=timezone(timedelta(hours=2)))) == (
        "2026-01-02T03:04:05.000006Z"
    )


@pytest.mark.parametrize(
    ("timings", "safe"),
    [
        (LeaseTimings(15, 10, 2), True),  # the chart's defaults
        (LeaseTimings(4, 3, 0.5), True),
        (LeaseTimings(10, 10, 2), False),  # the leader could still be renewing when the lease expires
        (LeaseTimings(15, 2, 2), False),  # one try per deadline: one slow request and the leader quits
        (LeaseTimings(15, 10, 0), False),
    ],
)
def test_unsafe_timings_are_refused(timings: LeaseTimings, safe: bool) -> None:
    if safe:
        timings.check()
    else:
        with pytest.raises(ValueError, match="lease duration > renew deadline"):
            timings.check()


def test_settings_of_leader_election(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AIDC_LEADER_ELECTION", "AIDC_LEASE_NAMESPACE", "POD_NAME", "POD_NAMESPACE"):
        monkeypatch.delenv(name, raising=False)
    plain = OperatorSettings.from_env()
    assert not plain.leader_election and plain.lease_namespace == ""
    assert plain.leader_identity.endswith(f"-{os.getpid()}")  # host and process outside a pod
    monkeypatch.setenv("AIDC_LEADER_ELECTION", "true")
    monkeypatch.setenv("POD_NAME", "aidc-operator-6f7d-x2x")
    monkeypatch.setenv("POD_NAMESPACE", "aidc-system")
    in_pod = OperatorSettings.from_env()
    assert (in_pod.leader_election, in_pod.leader_identity, in_pod.lease_namespace) == (
        True,
        "aidc-operator-6f7d-x2x",
        "aidc-system",
    )
    monkeypatch.setenv("AIDC_LEASE_NAMESPACE", "ops")
    assert OperatorSettings.from_env().lease_namespace == "ops"
    monkeypatch.setenv("AIDC_LEADER_ELECTION", "maybe")
    with pytest.raises(ValueError, match="AIDC_LEADER_ELECTION"):
        OperatorSettings.from_env()
