"""The heartbeat's least privilege, on the real API server, with a real token bound to a pod:
a rank-0 token may patch only the ``aidc.io/progress`` annotation of its own pod and read no pod
(operator/aidc/compute/trainer_account.py, charts/.../heartbeat-policy.yaml).

Each write the policy must refuse is also sent by the admin as a server-side dry run, which
must pass: so the refusal is the policy's (its message is checked too), not the API server
refusing a write no one may make.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from aidc.compute.trainer_account import TRAINER_SERVICE_ACCOUNT, trainer_identity
from aidc_trainer.heartbeat import HeartbeatSender, build_heartbeat
from tests.chart.identity import client_for_token

pytestmark = pytest.mark.cluster
POLICY = Path(__file__).resolve().parents[2] / "charts" / "aidc-operator" / "templates" / "heartbeat-policy.yaml"
OWN, OTHER = "job-0", "job-1"
BEAT = json.dumps({"step": 1})


@pytest.fixture(scope="module")
def heartbeat_policy(kube: client.ApiClient) -> None:
    admission = client.AdmissionregistrationV1Api(kube)
    for doc in yaml.safe_load_all(POLICY.read_text()):
        apply = (
            admission.patch_validating_admission_policy
            if doc["kind"] == "ValidatingAdmissionPolicy"
            else admission.patch_validating_admission_policy_binding
        )
        apply(
            doc["metadata"]["name"],
            doc,
            field_manager="aidc-tests",
            force=True,
            _content_type="application/apply-patch+yaml",
        )


def test_the_policy_type_checks_against_the_pod_schema(
    kube: client.ApiClient, heartbeat_policy: None, wait_for: Callable[..., Any]
) -> None:
    """An expression that does not type-check is only a warning in status, and may misjudge."""
    admission = client.AdmissionregistrationV1Api(kube)
    policy = wait_for(
        lambda: admission.read_validating_admission_policy("aidc-trainer-heartbeat"),
        until=lambda p: p.status and p.status.observed_generation == p.metadata.generation,
        message="the policy type-checked",
    )
    assert policy.status.type_checking is None or not policy.status.type_checking.expression_warnings


def _pod(name: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "annotations": {"keep": "me"}, "labels": {"aidc.io/job-name": "job"}},
        "spec": {
            "serviceAccountName": TRAINER_SERVICE_ACCOUNT,
            "containers": [{"name": "trainer", "image": "trainer"}],
        },
    }


@dataclass
class Rank0:
    """A namespace with the trainer's identity, two pods, and a token bound to the first."""

    namespace: str
    token: str
    admin: client.CoreV1Api
    api: client.CoreV1Api

    def patch(self, name: str, body: Any) -> tuple[int, str]:
        """The rank's patch of pod ``name``: the status code and the answer's message."""
        try:
            self.api.patch_namespaced_pod(name, self.namespace, body)
        except ApiException as error:
            return int(error.status), str(json.loads(error.body or "{}").get("message", error.body))
        return 200, ""


@pytest.fixture
def rank0(kube: client.ApiClient, namespace: str, heartbeat_policy: None, wait_for: Callable[..., Any]) -> Rank0:
    core = client.CoreV1Api(kube)
    rbac = client.RbacAuthorizationV1Api(kube)
    for obj in trainer_identity(namespace):
        {
            "ServiceAccount": lambda o: core.create_namespaced_service_account(namespace, o),
            "Role": lambda o: rbac.create_namespaced_role(namespace, o),
            "RoleBinding": lambda o: rbac.create_namespaced_role_binding(namespace, o),
        }[obj["kind"]](obj)
    own = core.create_namespaced_pod(namespace, _pod(OWN))
    core.create_namespaced_pod(namespace, _pod(OTHER))
    request = {
        "spec": {
            "audiences": [],
            "expirationSeconds": 600,
            "boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": OWN, "uid": own.metadata.uid},
        }
    }
    token = core.create_namespaced_service_account_token(TRAINER_SERVICE_ACCOUNT, namespace, request).status.token
    rank = Rank0(namespace, token, core, client.CoreV1Api(client_for_token(kube, token)))
    # the policy may take a moment to reach the API server's admission
    wait_for(
        lambda: rank.patch(OTHER, {"metadata": {"annotations": {"aidc.io/progress": BEAT}}}),
        until=lambda answer: answer[0] == 403 and "aidc-trainer-heartbeat" in answer[1],
        message="another pod's heartbeat is refused by the policy",
    )
    return rank


def _progress(**metadata: Any) -> dict[str, Any]:
    """A heartbeat patch with ``metadata`` besides it (annotations merged with the progress one)."""
    annotations = {"aidc.io/progress": BEAT, **metadata.pop("annotations", {})}
    return {"metadata": {"annotations": annotations, **metadata}}


REFUSED = {
    "another pod's heartbeat": (OTHER, _progress(), "only update the pod its token is bound to"),
    "an empty patch of another pod": (OTHER, {}, "only update the pod its token is bound to"),
    "another annotation changed": (OWN, _progress(annotations={"keep": "changed"}), "aidc.io/progress annotation"),
    "an annotation added": (OWN, _progress(annotations={"extra": "1"}), "aidc.io/progress annotation"),
    "an annotation removed": (OWN, _progress(annotations={"keep": None}), "aidc.io/progress annotation"),
    "a label added": (OWN, _progress(labels={"sneaky": "yes"}), "labels"),
    "a label changed": (OWN, _progress(labels={"aidc.io/job-name": "other"}), "labels"),
    "a finalizer added": (OWN, _progress(finalizers=["example.com/hold"]), "finalizers"),
    "an owner added": (
        OWN,
        _progress(ownerReferences=[{"apiVersion": "v1", "kind": "ConfigMap", "name": "c", "uid": "6d3a8b9e-1"}]),
        "ownerReferences",
    ),
    "generateName set": (OWN, _progress(generateName="job-"), "generateName"),
    "managedFields wiped": (OWN, _progress(managedFields=[{}]), "managedFields"),
    "the image changed": (OWN, {"spec": {"containers": [{"name": "trainer", "image": "evil"}]}}, "spec"),
    "a deadline set": (OWN, {"spec": {"activeDeadlineSeconds": 60}}, "spec"),
    "a toleration added": (OWN, {"spec": {"tolerations": [{"key": "k", "operator": "Exists"}]}}, "spec"),
}


@pytest.mark.parametrize(("pod", "body", "message"), list(REFUSED.values()), ids=list(REFUSED))
def test_the_policy_refuses_every_write_but_the_own_heartbeat(rank0: Rank0, pod: str, body: Any, message: str) -> None:
    # the same write is one the API server accepts (dry run, as the admin): only the policy refuses it
    rank0.admin.patch_namespaced_pod(pod, rank0.namespace, body, dry_run="All")
    status, answer = rank0.patch(pod, body)
    assert status == 403, answer
    assert "aidc-trainer-heartbeat" in answer and message in answer, answer
    assert '"spec"' not in answer  # the refusal shows nothing of the pod


def test_the_token_reads_no_pod_and_does_nothing_else(rank0: Rank0) -> None:
    """No verb but patch: not even its own pod can be read, deleted or have its status written."""
    api, namespace = rank0.api, rank0.namespace
    attempts: dict[str, Callable[[], Any]] = {
        "get own pod": lambda: api.read_namespaced_pod(OWN, namespace),
        "list pods": lambda: api.list_namespaced_pod(namespace),
        "watch pods": lambda: api.list_namespaced_pod(namespace, watch=True, timeout_seconds=1),
        "delete own pod": lambda: api.delete_namespaced_pod(OWN, namespace),
        "patch own status": lambda: api.patch_namespaced_pod_status(OWN, namespace, {"status": {"phase": "Failed"}}),
        "evict another pod": lambda: api.create_namespaced_pod_eviction(
            OTHER, namespace, {"metadata": {"name": OTHER, "namespace": namespace}}
        ),
        "create a pod": lambda: api.create_namespaced_pod(namespace, _pod("job-2")),
        "list secrets": lambda: api.list_namespaced_secret(namespace),
    }
    refused = {}
    for name, attempt in attempts.items():
        with pytest.raises(ApiException) as denied:
            attempt()
        refused[name] = denied.value.status
    assert refused == dict.fromkeys(attempts, 403)


def test_the_trainers_own_heartbeat_lands_again_and_again(rank0: Rank0, testbed: Any, tmp_path: Path) -> None:
    """The trainer image's real sender, with the pod's token and the cluster's CA as mounted."""
    (tmp_path / "token").write_text(rank0.token)
    (tmp_path / "ca.crt").write_text(Path(testbed.api_client().configuration.ssl_ca_cert).read_text())
    sender = HeartbeatSender(testbed.api_client().configuration.host, rank0.namespace, OWN, tmp_path)
    for step in (1, 2):
        beat = build_heartbeat(
            step=step, total_steps=10, epoch=0, loss=0.5, metrics={}, samples_per_second=None, eta_seconds=None,
            checkpoint_path=None, checkpoint_step=None, model_path=None, now=datetime.datetime.now(datetime.UTC),
        )  # fmt: skip
        assert sender.send(beat)
        pod = rank0.admin.read_namespaced_pod(OWN, rank0.namespace)
        assert json.loads(pod.metadata.annotations["aidc.io/progress"])["step"] == step
        assert pod.metadata.annotations["keep"] == "me"
    # the kubernetes client's strategic-merge patch of the annotation alone is a heartbeat too
    assert rank0.patch(OWN, _progress()) == (200, "")
