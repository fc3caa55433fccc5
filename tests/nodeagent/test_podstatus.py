"""The pod phase and conditions the agent reports, by the kubelet's rules (no cluster, no process)."""

from __future__ import annotations

import pytest

from aidc_nodeagent.podstatus import ContainerView, Terminated, conditions, phase, pod_status

NOW = "2026-01-01T00:00:00Z"


def running(name: str = "c") -> ContainerView:
    return ContainerView(name, "img", running_since=NOW, ready=True, started=True)


def exited(code: int, name: str = "c") -> ContainerView:
    return ContainerView(name, "img", terminated=Terminated(code, "Error" if code else "Completed", NOW, NOW, "id"))


def waiting(name: str = "c") -> ContainerView:
    return ContainerView(name, "img")


def restarting(code: int, name: str = "c") -> ContainerView:
    return ContainerView(name, "img", waiting_reason="CrashLoopBackOff", last_terminated=exited(code).terminated)


@pytest.mark.parametrize(
    ("policy", "init", "containers", "expected"),
    [
        ("Never", [], [waiting()], "Pending"),
        ("Never", [], [running()], "Running"),
        ("Never", [], [exited(0)], "Succeeded"),
        ("Never", [], [exited(1)], "Failed"),
        ("Never", [], [exited(0, "a"), running("b")], "Running"),
        ("Never", [], [exited(0, "a"), exited(143, "b")], "Failed"),
        ("OnFailure", [], [exited(0)], "Succeeded"),
        ("OnFailure", [], [restarting(1)], "Running"),
        ("Always", [], [exited(0)], "Running"),
        ("Always", [], [restarting(0)], "Running"),
        ("Never", [running("init")], [waiting()], "Pending"),
        ("Never", [exited(1, "init")], [waiting()], "Failed"),
        ("OnFailure", [exited(1, "init")], [waiting()], "Pending"),
        ("Never", [exited(0, "init")], [running()], "Running"),
    ],
)
def test_phase(policy: str, init: list[ContainerView], containers: list[ContainerView], expected: str) -> None:
    assert phase(policy, init, containers) == expected


def test_ready_only_when_every_container_is_ready_and_reasons_clear_when_it_is() -> None:
    unready = [running("a"), ContainerView("b", "img", running_since=NOW, ready=False, started=True)]
    before = conditions("Running", True, [], unready, [], NOW)
    ready = {c["type"]: c for c in before}["Ready"]
    assert ready["status"] == "False" and ready["message"] == "containers with unready status: [b]"
    after = conditions("Running", True, [], [running("a"), running("b")], before, "2026-01-01T00:01:00Z")
    ready = {c["type"]: c for c in after}["Ready"]
    # True drops the old reason (null in the strategic merge patch) and starts a new transition
    assert ready["status"] == "True" and ready["reason"] is None and ready["message"] is None
    assert ready["lastTransitionTime"] == "2026-01-01T00:01:00Z"
    again = conditions("Running", True, [], [running("a"), running("b")], after, "2026-01-01T00:02:00Z")
    assert {c["type"]: c for c in again}["Ready"]["lastTransitionTime"] == "2026-01-01T00:01:00Z"


def test_a_finished_pod_is_not_ready_with_reason_pod_completed() -> None:
    found = {c["type"]: c for c in conditions("Succeeded", True, [], [exited(0)], [], NOW)}
    assert found["Ready"]["status"] == "False" and found["Ready"]["reason"] == "PodCompleted"
    assert found["PodReadyToStartContainers"]["status"] == "False"


def test_status_carries_addresses_and_container_states() -> None:
    status = pod_status({"restartPolicy": "Never"}, {}, True, "10.244.1.2", "127.0.0.1", NOW, [], [exited(143)], NOW)
    assert status["phase"] == "Failed" and status["podIP"] == "10.244.1.2"
    assert status["podIPs"] == [{"ip": "10.244.1.2"}] and status["hostIP"] == "127.0.0.1"
    terminated = status["containerStatuses"][0]["state"]["terminated"]
    assert terminated["exitCode"] == 143 and terminated["reason"] == "Error"
    assert status["containerStatuses"][0]["ready"] is False
