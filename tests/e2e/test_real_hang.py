"""A hung rank on a real node: a process stopped with SIGSTOP, not one that crashed.

A stopped rank keeps its pod Running and its sockets open: nothing exits, the kubelet reports nothing,
and its peer blocks in its next collective (gloo waits 30 minutes). Only the progress heartbeat can
tell, and only when the operator counts new steps: a trainer may beat from a thread of its own while
its loop is stuck (aidc's built-in one offers a heartbeat only after a step, which this test shows).

The rank that trains is the container's first process, ``python -m aidc_trainer`` (one process per
pod: no torchrun); its host pid comes from containerd. One job goes through both cases: in the first
gang rank 0 is stopped (the heartbeat's own source), in the second rank 1, so rank 0 lives on, blocked
in a collective, and must not pass for progress. Each time the job turns Stalled within
hangTimeoutSeconds, the gang is deleted (the stopped process ends by SIGKILL once the pods' grace period
is over), the next gang resumes from the checkpoint on the claim, and the job succeeds after two restarts.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import suppress
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from tests.cluster.resources import condition, condition_is, create, get
from tests.e2e.conftest import PodHistory, Release, container_pid
from tests.e2e.test_real_nodes import (
    TJ,
    claim_folder,
    finished,
    gang_attempt,
    progress_step,
    resumptions,
    training_job,
    unique,
)

pytestmark = pytest.mark.e2e
# from the gang's Running on: covers the trainer's start (torch's import, the rendezvous) on a busy 2-core machine
# (20 s was not enough once in a full e2e run with the load average at 7: a third restart, at a gang's start)
HANG_SECONDS = 30
GRACE_SECONDS = 5  # the pods' terminationGracePeriodSeconds: a stopped rank is SIGKILLed after it
# the timeout counts from the later of the gang's Running and rank 0's last new step (status.progress.lastStepTime,
# whole seconds): both before the stop, by seconds when a gang reaches its checkpoint before its second
# heartbeat (its first repeats the step the last gang reported, which is no progress). The operator's pass is due
# then, a late one comes by resync (5 s)
EARLIEST, LATEST = HANG_SECONDS - 1, HANG_SECONDS + 7
MAX_STEPS = 80  # the stops come at the first checkpoints of their gangs (steps 10 and 20)


@pytest.fixture
def stopped_pids() -> Iterator[list[int]]:
    """Pids this test stopped: continued afterwards, whatever happened, so nothing stays frozen."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)


def test_a_stopped_rank_stalls_the_job_and_the_gang_resumes_from_its_checkpoint(
    kube: client.ApiClient, testbed: Any, release: Release, wait_for: Callable[..., Any],
    pod_history: PodHistory, stopped_pids: list[int],
) -> None:  # fmt: skip
    namespace, job = release.watched, unique("hang")
    spec = training_job(job, max_steps=MAX_STEPS, every_steps=10,
                        failurePolicy={"backoffSeconds": 0, "hangTimeoutSeconds": HANG_SECONDS},
                        podTemplate={"spec": {"terminationGracePeriodSeconds": GRACE_SECONDS}})  # fmt: skip
    create(kube, namespace, TJ, spec)
    claim = wait_for(lambda: claim_folder(kube, namespace, f"{job}-checkpoints"), ignore=(Exception,), timeout=60)
    checkpoints = claim / job

    # gang 0: rank 0 stops once it trains and has checkpointed
    trained = _training(kube, namespace, job, checkpoints, wait_for, attempt=0, beyond=0)
    stopped_pids.append(_stop_rank(kube, testbed, namespace, job, 0, wait_for))
    stalled = [_stalled(kube, namespace, job, wait_for, restarts=1, stopped=(time.monotonic(), time.time()))]
    first_resume = _resumed_from_the_latest_checkpoint(kube, testbed, namespace, job, checkpoints, wait_for, 1)
    assert first_resume >= trained
    _ended_by_sigkill(pod_history, f"{job}-0", stopped_pids[-1], wait_for)

    # gang 1: rank 1 stops; rank 0 lives on, blocked in a collective
    _training(kube, namespace, job, checkpoints, wait_for, attempt=1, beyond=first_resume)
    stopped_pids.append(_stop_rank(kube, testbed, namespace, job, 1, wait_for))
    stopped_at, stopped_clock = time.monotonic(), time.time()
    rank0 = container_pid(testbed, client.CoreV1Api(kube).read_namespaced_pod(f"{job}-0", namespace), "trainer")
    stalled.append(_stalled(kube, namespace, job, wait_for, restarts=2, stopped=(stopped_at, stopped_clock)))
    assert _process_state(rank0) == "S", "rank 0 is alive, asleep in its collective, not stopped"
    # no heartbeat since the stop but one already on its way (they go every second): nothing passed for progress
    assert _last_beat(kube, namespace, f"{job}-0") <= stopped_clock + 2
    second_resume = _resumed_from_the_latest_checkpoint(kube, testbed, namespace, job, checkpoints, wait_for, 2)
    assert second_resume > first_resume
    _ended_by_sigkill(pod_history, f"{job}-1", stopped_pids[-1], wait_for)

    done = finished(kube, namespace, job, wait_for)
    for found in stalled:  # what the docs quote
        print("Stalled:", json.dumps({k: found["status"].get(k) for k in ("phase", "reason", "conditions")}))
    events = client.CoreV1Api(kube).list_namespaced_event(namespace, field_selector=f"involvedObject.name={job}")
    print("Events:", json.dumps([[e.type, e.reason, e.message] for e in events.items]))
    assert condition_is(done, "Succeeded"), done["status"]["conditions"]
    assert done["status"]["restarts"] == 2 and done["status"]["progress"]["step"] == MAX_STEPS
    assert len(pod_history.uids_of(f"{job}-")) == 6, "three gangs of two ranks, each created once"


def _training(
    kube: client.ApiClient, namespace: str, job: str, checkpoints: Path, wait_for: Callable[..., Any], *,
    attempt: int, beyond: int,
) -> int:  # fmt: skip
    """Waits until gang ``attempt`` reports a step past ``beyond`` and has checkpointed past it; that step."""
    wait_for(lambda: get(kube, namespace, TJ, job), timeout=180,
             until=lambda j: gang_attempt(j) == attempt and progress_step(j) > beyond)  # fmt: skip
    return int(wait_for(lambda: _latest_step(checkpoints), until=lambda s: s > beyond, timeout=120, interval=0.1))


def _latest_step(checkpoints: Path) -> int:
    steps = [int(p.stem.removeprefix("ckpt-")) for p in checkpoints.glob("ckpt-*.pt")]
    return max(steps, default=0)


def _stop_rank(
    kube: client.ApiClient, testbed: Any, namespace: str, job: str, rank: int, wait_for: Callable[..., Any]
) -> int:
    """SIGSTOP the process that trains as ``rank``; its host pid."""
    pid = container_pid(testbed, client.CoreV1Api(kube).read_namespaced_pod(f"{job}-{rank}", namespace), "trainer")
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
    assert argv[:3] == ["python", "-m", "aidc_trainer"], argv  # the rank itself, not a launcher
    children = [entry.name for entry in Path("/proc").iterdir() if entry.name.isdigit() and _parent(entry) == pid]
    assert not children, f"rank {rank} runs child processes {children}: stop the one that trains"
    os.kill(pid, signal.SIGSTOP)
    wait_for(lambda: _process_state(pid) == "T", timeout=5, interval=0.01, message=f"rank {rank} stopped")
    return pid


def _process_state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def _parent(proc: Path) -> int | None:
    try:
        return int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def _time(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _last_beat(kube: client.ApiClient, namespace: str, pod: str) -> float:
    """When the heartbeat a rank-0 pod carries now was sent (Unix time); -inf when it never sent one (a gang
    that reached its checkpoint within its first heartbeat interval)."""
    found = client.CoreV1Api(kube).read_namespaced_pod(pod, namespace)
    raw = (found.metadata.annotations or {}).get("aidc.io/progress")
    return _time(json.loads(raw)["time"]) if raw else float("-inf")


def _stalled(
    kube: client.ApiClient, namespace: str, job: str, wait_for: Callable[..., Any], *, restarts: int,
    stopped: tuple[float, float],
) -> dict[str, Any]:  # fmt: skip
    """Waits for restart number ``restarts`` by the hang check, and checks when it came: hangTimeoutSeconds
    after the later of the gang's Running and its last new step, both no later than the stop (``stopped``:
    monotonic and wall clock; a heartbeat already on its way may add up to 2 s)."""
    running = condition(get(kube, namespace, TJ, job), "Running")
    assert running is not None and running["status"] == "True", running
    running_since = _time(running["lastTransitionTime"])

    def stalled(j: dict[str, Any]) -> bool:
        restarting = condition(j, "Restarting")
        return bool(j["status"].get("restarts") == restarts and restarting and restarting["reason"] == "Stalled")

    found = wait_for(lambda: get(kube, namespace, TJ, job), until=stalled, timeout=LATEST + 30, interval=0.2)
    noticed, elapsed = time.time(), time.monotonic() - stopped[0]
    last_step = _time(found["status"]["progress"]["lastStepTime"])
    assert max(running_since, last_step) <= stopped[1] + 2, "no new step was heard after the stop"
    silent = noticed - max(running_since, last_step)
    assert EARLIEST <= silent <= LATEST, f"Stalled {silent:.1f}s after the last progress (hang {HANG_SECONDS}s)"
    assert elapsed <= LATEST + 2, f"Stalled {elapsed:.1f}s after the stop"
    message = condition(found, "Restarting")["message"]  # type: ignore[index]
    assert message.startswith("rank 0 reported no new step for ") and f"is {HANG_SECONDS}" in message, message
    return found  # type: ignore[no-any-return]


def _resumed_from_the_latest_checkpoint(
    kube: client.ApiClient, testbed: Any, namespace: str, job: str, checkpoints: Path, wait_for: Callable[..., Any],
    attempt: int,
) -> int:  # fmt: skip
    """The step gang ``attempt`` resumed at, which is the newest checkpoint the stalled gang left."""
    # nothing writes while the gang is stalled: the newest checkpoint now is what the next gang must load
    latest = _latest_step(checkpoints)
    wait_for(lambda: get(kube, namespace, TJ, job), timeout=120,
             until=lambda j: gang_attempt(j) == attempt and condition_is(j, "Running"))  # fmt: skip
    logs = wait_for(lambda: resumptions(testbed.kubeconfig, namespace, f"{job}-0"), ignore=(Exception,), timeout=90)
    assert logs[0]["step"] == latest > 0, (logs[0], latest)
    return latest


def _ended_by_sigkill(history: PodHistory, pod: str, pid: int, wait_for: Callable[..., Any]) -> None:
    """The stopped rank's pod ended when its grace period did: SIGKILL (137), and its process is gone."""
    wait_for(lambda: not Path(f"/proc/{pid}").exists() or _process_state(pid) in ("Z", "X"), timeout=30)
    old = history.of(pod)[-2]
    ended = [s["state"]["terminated"] for p in old for s in p.get("status", {}).get("containerStatuses") or []
             if s["state"].get("terminated")]  # fmt: skip
    assert ended and ended[-1]["exitCode"] == 137, ended
