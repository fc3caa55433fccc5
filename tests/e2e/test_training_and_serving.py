"""The whole path for real: TrainingJob -> DDP gang of two processes -> checkpoints on a claim ->
exported model -> InferenceService -> an inference request, on the node agent's node.

Nothing here is played: the operator (in-process) creates the pods, the scheduler binds them to
the agent's node, the agent runs ``python -m aidc_trainer`` twice with torch.distributed (gloo)
finding rank 0 by its headless-Service name, rank 0 writes checkpoints to the claim's volume and
reports progress with its pod-bound token, and the model server answers over HTTP. Small runs
(tens of steps) keep the module within a few minutes on two cores.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import secrets
import signal
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from aidc_nodeagent import LocalNode, placement
from tests.cluster.resources import condition_is, create, get
from tests.e2e.conftest import PodHistory

pytestmark = pytest.mark.e2e
TJ, ISVC = "trainingjobs", "inferenceservices"


@pytest.fixture(autouse=True)
def _operator_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIDC_METRICS_PORT", "0")
    monkeypatch.setenv("AIDC_RESYNC_SECONDS", "5")


def unique(name: str) -> str:
    """A job name of this run only: the test bed's volumes are recycled without being scrubbed (kwok
    plays the recycler), so a claim may come back holding an earlier job's checkpoints, and a job
    of the same name would resume from them."""
    return f"{name}-{secrets.token_hex(2)}"


def training_job(name: str, max_steps: int, every_steps: int, **spec: Any) -> dict[str, Any]:
    """The digits classifier on two CPU ranks of the agent's node, for ``max_steps`` steps."""
    body = {
        "replicas": 2,
        "trainer": {
            "task": "classifier",
            "dataset": {"source": "digits"},
            "maxSteps": max_steps,
            "batchSize": 32,
            "learningRate": 0.003,
            "seed": 0,
        },
        "resources": {"cpu": "1", "memory": "1Gi"},
        "storage": {"checkpoints": {"size": "1Gi"}},
        "checkpointPolicy": {"everySteps": every_steps, "everySeconds": 0, "keep": 2},
        "failurePolicy": {"backoffSeconds": 0},
        "schedulingPolicy": {"placement": placement()},
        **spec,
    }
    return {"apiVersion": "aidc.io/v1alpha1", "kind": "TrainingJob", "metadata": {"name": name}, "spec": body}


def job_pod(kube: client.ApiClient, namespace: str, name: str) -> client.V1Pod | None:
    try:
        return client.CoreV1Api(kube).read_namespaced_pod(name, namespace)
    except client.ApiException:
        return None


def claim_folder(kube: client.ApiClient, namespace: str, claim: str) -> Path:
    """The host folder behind a claim (the test bed's pool volumes are hostPath)."""
    core = client.CoreV1Api(kube)
    volume = core.read_namespaced_persistent_volume_claim(claim, namespace).spec.volume_name
    return Path(core.read_persistent_volume(volume).spec.host_path.path)


def log_records(kube: client.ApiClient, namespace: str, pod: str) -> list[dict[str, Any]]:
    """The trainer's JSON log lines, read through the API server (the agent's kubelet endpoint)."""
    text = client.CoreV1Api(kube).read_namespaced_pod_log(pod, namespace)
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def progress_step(job: dict[str, Any]) -> int:
    return int(((job.get("status") or {}).get("progress") or {}).get("step") or 0)


def test_trains_with_real_ddp_checkpoints_exports_and_serves(
    kube: client.ApiClient,
    crds_applied: list[str],
    heartbeat_policy: None,
    local_node: LocalNode,
    namespace: str,
    run_operator: Any,
    wait_for: Callable[..., Any],
) -> None:
    job = unique("digits")
    isvc = {
        "apiVersion": "aidc.io/v1alpha1",
        "kind": "InferenceService",
        "metadata": {"name": "digits"},
        "spec": {
            "model": {"fromTrainingJob": {"name": job}},
            "placement": placement(),
            "resources": {"cpu": "500m"},
        },
    }
    with run_operator(namespace):
        create(kube, namespace, TJ, training_job(job, max_steps=30, every_steps=10))
        create(kube, namespace, ISVC, isvc)
        wait_for(lambda: get(kube, namespace, TJ, job), until=lambda j: condition_is(j, "Running"), timeout=120)
        assert not condition_is(get(kube, namespace, ISVC, "digits"), "Ready")  # nothing exported yet
        done = wait_for(
            lambda: get(kube, namespace, TJ, job),
            until=lambda j: condition_is(j, "Succeeded") or condition_is(j, "Failed"),
            timeout=180,
        )
        assert condition_is(done, "Succeeded"), done["status"]["conditions"]["conditions"]
        progress = done["status"]["progress"]
        assert progress["step"] == progress["totalSteps"] == 30 and progress["percent"] == 100
        assert 0 <= progress["metrics"]["validationAccuracy"] <= 1
        assert done["status"]["checkpoint"]["step"] == 30
        folder = claim_folder(kube, namespace, f"{job}-checkpoints") / job
        assert sorted(p.name for p in folder.glob("ckpt-*.pt")) == ["ckpt-000000020.pt", "ckpt-000000030.pt"]
        assert (folder / "export" / "final" / "model.pt").is_file()

        ready = wait_for(
            lambda: get(kube, namespace, ISVC, "digits"), until=lambda s: condition_is(s, "Ready"), timeout=120
        )
        assert ready["status"]["model"]["uri"] == f"pvc://{job}-checkpoints/{job}/export/final"
    core = client.CoreV1Api(kube)
    server = core.list_namespaced_pod(namespace, label_selector="aidc.io/inference-service=digits").items[0]
    # Ready only after the model loaded: the pod's Ready turned True no earlier than the server said "ready"
    loaded = next(r for r in log_records(kube, namespace, server.metadata.name) if r.get("msg") == "ready")
    loaded_at = datetime.datetime.fromisoformat(loaded["time"].replace("Z", "+00:00")).replace(microsecond=0)
    ready_since = next(c.last_transition_time for c in server.status.conditions if c.type == "Ready")
    assert ready_since >= loaded_at

    from aidc_trainer.config import parse_config
    from aidc_trainer.datasets import load_images

    config = parse_config(json.dumps({"task": "classifier", "dataset": {"source": "digits"}, "seed": 0}))
    images, labels = load_images(config, None).validation.tensors  # held out: the model never saw them
    images, labels = images[:32], labels[:32].tolist()  # the server takes up to maxBatchSize (32) rows
    body = {
        "inputs": [
            {"name": "input", "shape": list(images.shape), "datatype": "FP32", "data": images.flatten().tolist()}
        ]
    }
    request = urllib.request.Request(
        f"http://{server.status.pod_ip}:8080/v2/models/digits/infer",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        outputs = {o["name"]: o for o in json.load(response)["outputs"]}
    predicted = outputs["predicted_class"]["data"]
    accuracy = sum(p == t for p, t in zip(predicted, labels, strict=True)) / len(labels)
    assert accuracy >= 0.6, f"{accuracy:.2f} of held-out digits after 30 steps"


def test_a_killed_rank_restarts_the_gang_which_resumes_from_its_checkpoint(
    kube: client.ApiClient,
    crds_applied: list[str],
    heartbeat_policy: None,
    local_node: LocalNode,
    namespace: str,
    run_operator: Any,
    wait_for: Callable[..., Any],
) -> None:
    job = unique("crash")
    with run_operator(namespace):
        create(kube, namespace, TJ, training_job(job, max_steps=100, every_steps=10))
        claim = wait_for(lambda: claim_folder(kube, namespace, f"{job}-checkpoints"), ignore=(Exception,), timeout=60)
        # the files themselves, not the heartbeat (every 5 s): kill soon after the first checkpoint
        wait_for(lambda: list((claim / job).glob("ckpt-*.pt")), timeout=120, interval=0.1, message="a checkpoint")
        victim = job_pod(kube, namespace, f"{job}-1")
        assert victim is not None
        pid = local_node.container_pid(namespace, f"{job}-1", victim.metadata.uid, "trainer")
        assert pid is not None
        os.kill(pid, signal.SIGKILL)  # the process dies under the pod, as on an OOM kill
        done = wait_for(
            lambda: get(kube, namespace, TJ, job),
            until=lambda j: condition_is(j, "Succeeded") or condition_is(j, "Failed"),
            timeout=240,
        )
    assert condition_is(done, "Succeeded"), done["status"]["conditions"]
    assert done["status"]["restarts"] == 1 and done["status"]["progress"]["step"] == 100
    events = client.CoreV1Api(kube).list_namespaced_event(namespace, field_selector=f"involvedObject.name={job}").items
    assert any(f"rank 1 (pod {job}-1) exited with code 137" in (e.message or "") for e in events)
    resumed = [r for r in log_records(kube, namespace, f"{job}-0") if r.get("msg") == "resumed from checkpoint"]
    assert resumed and resumed[0]["step"] >= 10 and resumed[0]["step"] % 10 == 0


def test_deleting_a_rank_checkpoints_on_sigterm_and_the_gang_resumes_there(
    kube: client.ApiClient,
    crds_applied: list[str],
    heartbeat_policy: None,
    local_node: LocalNode,
    namespace: str,
    run_operator: Any,
    wait_for: Callable[..., Any],
    pod_history: PodHistory,
    tmp_path: Path,
) -> None:
    # the trainer's test hook has rank 0 log every step's loss; pods share the host's file system, so
    # the test sees the steps as they happen (the heartbeat comes every 5 s, too late for a short run)
    losses = {"name": "AIDC_LOSS_LOG", "value": f"{tmp_path}/$(AIDC_POD_NAME).jsonl"}
    job = unique("evict")
    with run_operator(namespace):
        # no periodic checkpoint: the only one is what SIGTERM makes the gang write
        create(kube, namespace, TJ, training_job(job, max_steps=150, every_steps=0, env=[losses]))
        steps = tmp_path / f"{job}-0.jsonl"
        wait_for(lambda: steps.exists() and len(steps.read_text().splitlines()) >= 10, timeout=120, interval=0.1)
        client.CoreV1Api(kube).delete_namespaced_pod(f"{job}-1", namespace)  # graceful: SIGTERM, 30 s grace
        done = wait_for(
            lambda: get(kube, namespace, TJ, job),
            until=lambda j: condition_is(j, "Succeeded") or condition_is(j, "Failed"),
            timeout=240,
        )
    assert condition_is(done, "Succeeded"), done["status"]["conditions"]
    assert done["status"]["restarts"] == 1
    first = pod_history.of(f"{job}-1")[0]
    ended = [
        s["state"]["terminated"]
        for p in first
        for s in p.get("status", {}).get("containerStatuses") or []
        if s["state"].get("terminated")
    ]
    summary = [
        (
            h[0]["metadata"]["uid"][:8],
            h[0]["metadata"]["creationTimestamp"],
            [
                (s["state"].get("terminated") or {}).get("exitCode")
                for p in h
                for s in p.get("status", {}).get("containerStatuses") or []
            ],
        )
        for h in pod_history.of(f"{job}-1")
    ]
    assert ended and ended[-1]["exitCode"] == 143 and "Preempted" in ended[-1].get("message", ""), summary
    resumed = [r for r in log_records(kube, namespace, f"{job}-0") if r.get("msg") == "resumed from checkpoint"]
    assert resumed, "the new gang did not resume"
    step = resumed[0]["step"]
    assert 10 <= step < 150
    assert re.search(rf"ckpt-0*{step}\.pt$", resumed[0]["path"])
