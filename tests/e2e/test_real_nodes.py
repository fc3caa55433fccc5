"""The whole path on a real node, as a user's cluster runs it.

The operator runs as a pod of its own image, installed by its own Helm chart; it creates the gang's
pods, the scheduler binds them to the real node, and containerd runs the trainer image as uid 1000:
torch.distributed (gloo) finds rank 0 through the headless Service's DNS name (CoreDNS), rank 0
writes checkpoints to the claim and reports progress with its own pod-bound token under the
admission policy, and the model server answers a client pod that calls the InferenceService's
Service by name. Small runs (tens of steps) keep each test within a minute or two on two cores.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from aidc_testbed.realnodes import placement
from tests.cluster.resources import condition, condition_is, create, get
from tests.e2e.conftest import PodHistory, Release, container_pid

pytestmark = pytest.mark.e2e
TJ, ISVC = "trainingjobs", "inferenceservices"
RESTRICTED_CONTAINER = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "runAsNonRoot": True,
    "seccompProfile": {"type": "RuntimeDefault"},
}


def unique(name: str) -> str:
    """A job name of this run only: what an earlier run left being deleted never meets this run's."""
    return f"{name}-{secrets.token_hex(2)}"


def training_job(name: str, max_steps: int, every_steps: int, **spec: Any) -> dict[str, Any]:
    """The digits classifier on two ranks of the real node, for ``max_steps`` steps."""
    env = [{"name": "AIDC_HEARTBEAT_SECONDS", "value": "1"}, *spec.pop("env", [])]
    body = {
        "replicas": 2,
        "trainer": {"task": "classifier", "dataset": {"source": "digits"}, "maxSteps": max_steps, "epochs": 1000,
                    "batchSize": 32, "learningRate": 0.003, "seed": 0},
        "resources": {"cpu": "500m", "memory": "1Gi"},
        "storage": {"checkpoints": {"size": "1Gi"}},
        "checkpointPolicy": {"everySteps": every_steps, "everySeconds": 0, "keep": 2},
        "failurePolicy": {"backoffSeconds": 0},
        "schedulingPolicy": {"placement": placement()},
        "env": env,
        **spec,
    }  # fmt: skip
    return {"apiVersion": "aidc.io/v1alpha1", "kind": "TrainingJob", "metadata": {"name": name}, "spec": body}


def finished(kube: client.ApiClient, namespace: str, job: str, wait_for: Callable[..., Any]) -> dict[str, Any]:
    return wait_for(  # type: ignore[no-any-return]
        lambda: get(kube, namespace, TJ, job),
        until=lambda j: condition_is(j, "Succeeded") or condition_is(j, "Failed"),
        timeout=300,
    )


def claim_folder(kube: client.ApiClient, namespace: str, claim: str) -> Path:
    """The host folder behind a claim (the bed's pool volumes are hostPath)."""
    core = client.CoreV1Api(kube)
    volume = core.read_namespaced_persistent_volume_claim(claim, namespace).spec.volume_name
    return Path(core.read_persistent_volume(volume).spec.host_path.path)


def kubectl(kubeconfig: Path, *args: str) -> str:
    done = subprocess.run(["kubectl", "--kubeconfig", str(kubeconfig), *args], capture_output=True, text=True,
                          timeout=120, check=True)  # fmt: skip
    return done.stdout


def log_records(kubeconfig: Path, namespace: str, pod: str) -> list[dict[str, Any]]:
    """The trainer's JSON log lines, as `kubectl logs` shows them (the kubelet, through the API server)."""
    text = kubectl(kubeconfig, "-n", namespace, "logs", pod)
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def resumptions(kubeconfig: Path, namespace: str, pod: str) -> list[dict[str, Any]]:
    return [r for r in log_records(kubeconfig, namespace, pod) if r.get("message") == "resumed from checkpoint"]


def progress_step(job: dict[str, Any]) -> int:
    return int(((job.get("status") or {}).get("progress") or {}).get("step") or 0)


def gang_attempt(job: dict[str, Any]) -> int:
    return int((job.get("status") or {}).get("gangAttempt") or 0)


def run_client_pod(
    kube: client.ApiClient, namespace: str, image: str, script: str, wait_for: Callable[..., Any]
) -> str:
    """Run ``python -c script`` in a pod of the trainer image on the real node; what it printed."""
    name = f"client-{secrets.token_hex(2)}"
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,
            **placement(),
            "securityContext": {"runAsNonRoot": True, "runAsUser": 1000, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{"name": "client", "image": image, "imagePullPolicy": "Never",
                            "command": ["python", "-c", script], "securityContext": RESTRICTED_CONTAINER}],
        },
    }  # fmt: skip
    core = client.CoreV1Api(kube)
    core.create_namespaced_pod(namespace, pod)
    done = wait_for(lambda: core.read_namespaced_pod(name, namespace), timeout=120,
                    until=lambda p: p.status.phase in ("Succeeded", "Failed"))  # fmt: skip
    output: str = core.read_namespaced_pod_log(name, namespace)
    assert done.status.phase == "Succeeded", output
    return output


ASK_THE_SERVICE = """
import json, urllib.request
from aidc_trainer.config import parse_config
from aidc_trainer.datasets import load_images
config = parse_config(json.dumps({"task": "classifier", "dataset": {"source": "digits"}, "seed": 0}))
images, labels = load_images(config, None).validation.tensors  # held out: the model never saw them
images, labels = images[:32], labels[:32].tolist()
body = {"inputs": [{"name": "input", "shape": list(images.shape), "datatype": "FP32",
                    "data": images.flatten().tolist()}]}
request = urllib.request.Request("URL/v2/models/digits/infer", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
with urllib.request.urlopen(request, timeout=30) as response:
    outputs = {o["name"]: o for o in json.load(response)["outputs"]}
print(json.dumps({"predicted": outputs["predicted_class"]["data"], "labels": labels}))
"""


def test_trains_on_real_pods_exports_and_serves_through_the_service(
    kube: client.ApiClient, testbed: Any, release: Release, wait_for: Callable[..., Any]
) -> None:
    namespace, job = release.watched, unique("digits")
    isvc = {
        "apiVersion": "aidc.io/v1alpha1",
        "kind": "InferenceService",
        "metadata": {"name": "digits"},
        "spec": {"model": {"fromTrainingJob": {"name": job}}, "placement": placement(),
                 "resources": {"cpu": "250m", "memory": "1Gi"}},
    }  # fmt: skip
    create(kube, namespace, TJ, training_job(job, max_steps=30, every_steps=10))
    create(kube, namespace, ISVC, isvc)
    wait_for(lambda: get(kube, namespace, TJ, job), until=lambda j: condition_is(j, "Running"), timeout=180)
    done = finished(kube, namespace, job, wait_for)
    assert condition_is(done, "Succeeded"), done["status"]["conditions"]
    progress = done["status"]["progress"]
    assert progress["step"] == progress["totalSteps"] == 30 and progress["percent"] == 100
    assert done["status"]["checkpoint"]["step"] == 30
    folder = claim_folder(kube, namespace, f"{job}-checkpoints") / job
    assert sorted(p.name for p in folder.glob("ckpt-*.pt")) == ["ckpt-000000020.pt", "ckpt-000000030.pt"]
    model = folder / "export" / "final" / "model.pt"
    assert model.is_file() and model.stat().st_uid == 1000  # written by the non-root trainer itself
    exported = done["status"]["model"]  # both exports, and the final one's size for the start-up probe
    assert exported["bestPath"] == f"{job}/export/best" and exported["sizeBytes"] >= model.stat().st_size

    records = log_records(testbed.kubeconfig, namespace, f"{job}-0")  # `kubectl logs` of a rank
    assert any(r.get("message") == "resumed from checkpoint" or "step" in r for r in records), records[-5:]
    ready = wait_for(lambda: get(kube, namespace, ISVC, "digits"), until=lambda s: condition_is(s, "Ready"),
                     timeout=180)  # fmt: skip
    url = ready["status"]["url"]
    assert ".svc" in url, url  # the Service's DNS name, not a pod address
    from aidc_testbed.release import image_refs

    image = image_refs(testbed.config)["aidc-trainer"]
    printed = run_client_pod(kube, namespace, image, ASK_THE_SERVICE.replace("URL", url), wait_for)
    answer = json.loads(printed.strip().splitlines()[-1])
    right = sum(p == t for p, t in zip(answer["predicted"], answer["labels"], strict=True))
    assert right / len(answer["labels"]) >= 0.6, f"{right} of 32 held-out digits after 30 steps"


def test_a_killed_rank_restarts_the_gang_which_resumes_from_its_checkpoint(
    kube: client.ApiClient, testbed: Any, release: Release, wait_for: Callable[..., Any]
) -> None:
    namespace, job = release.watched, unique("crash")
    create(kube, namespace, TJ, training_job(job, max_steps=150, every_steps=10))
    claim = wait_for(lambda: claim_folder(kube, namespace, f"{job}-checkpoints"), ignore=(Exception,), timeout=60)
    wait_for(lambda: list((claim / job).glob("ckpt-*.pt")), timeout=180, interval=0.1, message="a checkpoint")
    victim = client.CoreV1Api(kube).read_namespaced_pod(f"{job}-1", namespace)
    os.kill(container_pid(testbed, victim, "trainer"), signal.SIGKILL)  # the process dies under its pod
    done = finished(kube, namespace, job, wait_for)
    assert condition_is(done, "Succeeded"), json.dumps(done["status"]["conditions"])  # whole: it names the exit code
    assert done["status"]["restarts"] == 1 and done["status"]["progress"]["step"] == 150
    events = client.CoreV1Api(kube).list_namespaced_event(namespace, field_selector=f"involvedObject.name={job}").items
    assert any(f"rank 1 (pod {job}-1) exited with code 137" in (e.message or "") for e in events)
    resumed = [
        r
        for r in log_records(testbed.kubeconfig, namespace, f"{job}-0")
        if r.get("message") == "resumed from checkpoint"
    ]
    assert resumed and resumed[0]["step"] >= 10 and resumed[0]["step"] % 10 == 0


def test_deleting_a_rank_checkpoints_on_sigterm_and_the_gang_resumes_there(
    kube: client.ApiClient, testbed: Any, release: Release, wait_for: Callable[..., Any], pod_history: PodHistory
) -> None:
    namespace, job = release.watched, unique("evict")
    # no periodic checkpoint: the only one is what SIGTERM makes the gang write
    create(kube, namespace, TJ, training_job(job, max_steps=300, every_steps=0))
    wait_for(lambda: get(kube, namespace, TJ, job), until=lambda j: progress_step(j) >= 5, timeout=180)
    client.CoreV1Api(kube).delete_namespaced_pod(f"{job}-1", namespace)  # graceful: SIGTERM, then the grace period
    done = finished(kube, namespace, job, wait_for)
    assert condition_is(done, "Succeeded"), done["status"]["conditions"]
    assert done["status"]["restarts"] == 1
    first = pod_history.of(f"{job}-1")[0]
    ended = [s["state"]["terminated"] for p in first for s in p.get("status", {}).get("containerStatuses") or []
             if s["state"].get("terminated")]  # fmt: skip
    assert ended and ended[-1]["exitCode"] == 143, ended
    resumed = [
        r
        for r in log_records(testbed.kubeconfig, namespace, f"{job}-0")
        if r.get("message") == "resumed from checkpoint"
    ]
    assert resumed, "the new gang did not resume"
    assert 5 <= resumed[0]["step"] < 300


def test_a_rank_over_its_memory_limit_is_oom_killed_and_the_status_says_so(
    kube: client.ApiClient, release: Release, wait_for: Callable[..., Any]
) -> None:
    namespace, job = release.watched, unique("oom")
    # torch alone takes more than 96 MiB: the kernel's OOM killer ends the container, not the trainer
    spec = training_job(job, max_steps=30, every_steps=10, failurePolicy={"restartPolicy": "Never"})
    spec["spec"]["resources"] = {"cpu": "250m", "memory": "96Mi"}
    create(kube, namespace, TJ, spec)
    done = finished(kube, namespace, job, wait_for)
    failed = condition(done, "Failed")
    assert failed is not None and failed["status"] == "True", done["status"]
    assert "exited with code 137 (OOMKilled)" in failed["message"], failed


def test_the_heartbeat_goes_through_the_pods_own_token_and_no_further(
    kube: client.ApiClient, testbed: Any, release: Release, wait_for: Callable[..., Any]
) -> None:
    namespace, job = release.watched, unique("beat")
    create(kube, namespace, TJ, training_job(job, max_steps=1500, every_steps=0))
    # progress in status comes only from rank 0's heartbeat: its own token wrote its own annotation
    wait_for(lambda: get(kube, namespace, TJ, job), until=lambda j: progress_step(j) > 0, timeout=180)
    # the same token may not write another pod's annotation: the admission policy refuses it
    attempt = kubectl(
        testbed.kubeconfig, "-n", namespace, "exec", f"{job}-0", "--", "python", "-c", FORGE_A_HEARTBEAT % f"{job}-1"
    )
    assert attempt.strip().splitlines()[-1] in ("403", "422"), attempt
    client.CustomObjectsApi(kube).delete_namespaced_custom_object("aidc.io", "v1alpha1", namespace, TJ, job)


FORGE_A_HEARTBEAT = """
import json, ssl, urllib.error, urllib.request
base = "/var/run/secrets/kubernetes.io/serviceaccount"
token = open(base + "/token").read()
namespace = open(base + "/namespace").read()
context = ssl.create_default_context(cafile=base + "/ca.crt")
body = json.dumps({"metadata": {"annotations": {"aidc.io/progress": "{}"}}}).encode()
request = urllib.request.Request(
    "https://kubernetes.default.svc/api/v1/namespaces/%%s/pods/%s" %% namespace, data=body, method="PATCH",
    headers={"Authorization": "Bearer " + token, "Content-Type": "application/merge-patch+json"})
try:
    urllib.request.urlopen(request, context=context, timeout=10)
    print(200)
except urllib.error.HTTPError as error:
    print(error.code)
"""


def test_the_leading_operator_pod_deleted_mid_training_loses_and_duplicates_nothing(
    kube: client.ApiClient, release: Release, wait_for: Callable[..., Any], pod_history: PodHistory
) -> None:
    """The chart runs two operator pods; deleting the one that holds the Lease hands the job to the other
    (the deleted one frees the lease on SIGTERM), and the job finishes with every rank created once."""
    namespace, job = release.watched, unique("failover")
    create(kube, namespace, TJ, training_job(job, max_steps=200, every_steps=50))
    wait_for(lambda: get(kube, namespace, TJ, job), until=lambda j: progress_step(j) > 0, timeout=180)
    core, leases = client.CoreV1Api(kube), client.CoordinationV1Api(kube)
    leader = leases.read_namespaced_lease(release.deployment, release.namespace).spec.holder_identity
    core.delete_namespaced_pod(leader, release.namespace)
    wait_for(
        lambda: leases.read_namespaced_lease(release.deployment, release.namespace).spec.holder_identity,
        until=lambda holder: holder not in (None, "", leader),
        timeout=60,
        message="another operator pod leads",
    )
    done = finished(kube, namespace, job, wait_for)
    assert condition_is(done, "Succeeded"), done["status"]["conditions"]
    assert done["status"]["restarts"] == 0 and done["status"]["progress"]["step"] == 200
    assert len(pod_history.uids_of(f"{job}-")) == 2, "a rank was created twice"


def test_helm_test_passes(testbed: Any, release: Release) -> None:
    from aidc_testbed.release import helm

    tested = helm(testbed.config, testbed.kubeconfig, "test", release.name, "--namespace", release.namespace,
                  "--timeout", "120s")  # fmt: skip
    assert "Succeeded" in tested.stdout, tested.stdout


ASK_WITH_TOKENS = """
import json, ssl, urllib.error, urllib.request
from aidc_trainer.config import parse_config
from aidc_trainer.datasets import load_images
config = parse_config(json.dumps({"task": "classifier", "dataset": {"source": "digits"}, "seed": 0}))
images = load_images(config, None).validation.tensors[0][:4]
body = json.dumps({"inputs": [{"name": "input", "shape": list(images.shape), "datatype": "FP32",
                               "data": images.flatten().tolist()}]}).encode()
context = ssl.create_default_context(cadata=CA)  # the server's own certificate, nothing else trusted
def ask(token):
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = "Bearer " + token
    request = urllib.request.Request(URL + "/v2/models/digits/infer", data=body, headers=headers)
    try:
        with urllib.request.urlopen(request, context=context, timeout=30) as response:
            return [response.status, json.load(response)]
    except urllib.error.HTTPError as error:
        return [error.code, error.read().decode()]
print(json.dumps({"allowed": ask(ALLOWED), "denied": ask(DENIED), "none": ask(None)}))
"""


def _serving_certificate(folder: Path, host: str) -> tuple[str, str]:
    """A self-signed certificate for the Service's DNS names, as cert-manager would issue one."""
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", f"/CN={host}",
         "-addext", f"subjectAltName=DNS:{host},DNS:{host}.cluster.local",
         "-keyout", str(folder / "tls.key"), "-out", str(folder / "tls.crt")],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return (folder / "tls.crt").read_text(), (folder / "tls.key").read_text()


def _token(kube: client.ApiClient, namespace: str, account: str, audience: str) -> str:
    core = client.CoreV1Api(kube)
    core.create_namespaced_service_account(namespace, {"metadata": {"name": account}})
    request = {"spec": {"audiences": [audience], "expirationSeconds": 600}}
    return str(core.create_namespaced_service_account_token(account, namespace, request).status.token)


def test_an_authenticated_https_server_answers_only_whom_rbac_allows(
    kube: client.ApiClient, testbed: Any, release: Release, wait_for: Callable[..., Any], tmp_path: Path
) -> None:
    """spec.auth.kubernetes and spec.tls on the real node: the kubelet probes HTTPS, the server reviews
    callers' tokens with its own (aidc-inference, through the kubernetes Service), and a client pod
    with the inference-client role gets answers while a stranger gets 403 and no token 401."""
    namespace, job = release.watched, unique("authed")
    create(kube, namespace, TJ, training_job(job, max_steps=10, every_steps=10))
    certificate, key = _serving_certificate(tmp_path, f"digits-tls.{namespace}.svc")
    core = client.CoreV1Api(kube)
    core.create_namespaced_secret(namespace, {"metadata": {"name": "digits-tls"}, "type": "kubernetes.io/tls",
                                              "stringData": {"tls.crt": certificate, "tls.key": key}})  # fmt: skip
    isvc = {
        "apiVersion": "aidc.io/v1alpha1",
        "kind": "InferenceService",
        "metadata": {"name": "digits-tls"},
        "spec": {"model": {"fromTrainingJob": {"name": job}, "name": "digits"}, "placement": placement(),
                 "resources": {"cpu": "250m", "memory": "1Gi"}, "tls": {"secretName": "digits-tls"},
                 "auth": {"kubernetes": {"audiences": ["digits"]}}},
    }  # fmt: skip
    create(kube, namespace, ISVC, isvc)
    allowed, denied = _token(kube, namespace, "caller", "digits"), _token(kube, namespace, "stranger", "digits")
    client.RbacAuthorizationV1Api(kube).create_namespaced_role_binding(namespace, {
        "metadata": {"name": "caller-infers"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                    "name": f"{release.deployment}-inference-client"},
        "subjects": [{"kind": "ServiceAccount", "name": "caller", "namespace": namespace}],
    })  # fmt: skip
    assert condition_is(finished(kube, namespace, job, wait_for), "Succeeded")
    ready = wait_for(lambda: get(kube, namespace, ISVC, "digits-tls"), until=lambda s: condition_is(s, "Ready"),
                     timeout=180)  # fmt: skip
    url = ready["status"]["url"]
    assert url.startswith("https://digits-tls."), url
    from aidc_testbed.release import image_refs

    script = (ASK_WITH_TOKENS.replace("URL", repr(url)).replace("CA", repr(certificate))
              .replace("ALLOWED", repr(allowed)).replace("DENIED", repr(denied)))  # fmt: skip
    printed = run_client_pod(kube, namespace, image_refs(testbed.config)["aidc-trainer"], script, wait_for)
    answers = json.loads(printed.strip().splitlines()[-1])
    status, body = answers["allowed"]
    assert status == 200 and len(body["outputs"][0]["data"]) > 0, answers["allowed"]
    assert answers["denied"][0] == 403 and "outputs" not in answers["denied"][1], answers["denied"]
    assert answers["none"][0] == 401 and "outputs" not in answers["none"][1], answers["none"]


def test_the_nodes_images_are_pinned_so_the_kubelet_never_collects_them(testbed: Any, real_nodes: list[str]) -> None:
    """Nothing can pull the project's images again (there is no registry), so a kubelet under disk
    pressure must not remove them: each one the bed imported, on every real node, carries containerd's
    pinned label."""
    from aidc_testbed import realnode_lifecycle, release

    config = testbed.config
    wanted = {ref for ref in release.image_refs(config).values() if realnode_lifecycle.BUILD_ONLY not in ref}
    for name in real_nodes:
        node = realnode_lifecycle.node_named(config, testbed.layout, name)
        assert wanted and wanted <= set(realnode_lifecycle.pinned_images(node, config)), name


def test_each_node_holds_the_trainer_image_once_unpacked_not_also_as_layer_blobs(
    testbed: Any, real_nodes: list[str]
) -> None:
    """The trainer image is ~3.8 GB: imported with its layers' blobs kept, every node would hold it twice
    (blobs and snapshots). The import lets the blobs go once they are unpacked; the pods still run from
    the snapshots (every e2e test here)."""
    from aidc_testbed import realnode_lifecycle, release

    config = testbed.config
    archive = next(Path(i["archive"]) for i in release.image_archives(config) if "aidc-trainer" in i["ref"])
    layers = set(realnode_lifecycle.archive_layers(archive))
    assert layers, archive
    for name in real_nodes:
        node = realnode_lifecycle.node_named(config, testbed.layout, name)
        assert not layers & realnode_lifecycle.held_blobs(node, config), name
