"""Fixtures of the end-to-end tests: the project's own images on the bed's real nodes, the operator
installed by its own Helm chart.

The session's test bed has two real nodes (kubelet, containerd, runc, the CNI bridge; one kube-proxy
and CoreDNS) when the session runs as root; they are tainted while kwok nodes share the bed, and the
tests put their pods there with :func:`aidc_testbed.realnodes.placement`. The chart is installed once per
session, watching one namespace of its own (restricted Pod Security), so the in-process operators of
the cluster tests never see these jobs and this operator never sees theirs.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

    from aidc_testbed import Testbed

REPO_ROOT = Path(__file__).resolve().parents[2]
POLICY = REPO_ROOT / "charts" / "aidc-operator" / "templates" / "heartbeat-policy.yaml"
HEARTBEAT_POLICY = "aidc-trainer-heartbeat"
OPERATOR_NAMESPACE = "aidc-system"
# the operator's stuckTerminatingSeconds in these tests (60 by default): a pod on a lost node is
# force-deleted this long after its grace period ended
STUCK_TERMINATING_SECONDS = 15


@dataclass(frozen=True)
class Release:
    """The chart's release the e2e tests run against."""

    name: str
    namespace: str  # where the operator runs
    watched: str  # the one namespace it watches: where the tests create their jobs

    @property
    def deployment(self) -> str:
        return f"{self.name}-aidc-operator"


@pytest.fixture(scope="session")
def real_node(testbed: Testbed) -> str:
    """The bed's real node, by name (skips where the session could not start one: not root)."""
    names = testbed.real_node_names() if testbed.config.real_nodes else []
    if not names:
        pytest.skip("no real node in this test bed (real nodes need root)")
    return names[0]


@pytest.fixture(scope="session")
def real_nodes(testbed: Testbed, real_node: str) -> list[str]:
    """Every real node of the bed, by name."""
    return testbed.real_node_names()


def _policy_is_free(kube: ApiClient) -> bool:
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    try:
        client.AdmissionregistrationV1Api(kube).read_validating_admission_policy(HEARTBEAT_POLICY)
    except ApiException as error:
        if error.status == 404:
            return True
        raise
    return False


def _namespace(kube: ApiClient, name: str) -> None:
    from kubernetes import client

    from aidc_testbed.release import RESTRICTED

    labels = {**RESTRICTED, "aidc.io/test": "true"}
    with contextlib.suppress(client.ApiException):
        client.CoreV1Api(kube).create_namespace({"metadata": {"name": name, "labels": labels}})


@pytest.fixture(scope="session")
def release(testbed: Testbed, kube: ApiClient, real_node: str, crds_applied: list[str]) -> Iterator[Release]:
    """``helm install`` of charts/aidc-operator with the local images; uninstalled after the session."""
    from kubernetes import client

    from aidc_testbed import release as chart

    installed = Release(f"e2e-{secrets.token_hex(2)}", OPERATOR_NAMESPACE, f"aidc-e2e-{secrets.token_hex(2)}")
    _namespace(kube, installed.namespace)
    _namespace(kube, installed.watched)
    own_policy = _policy_is_free(kube)
    if not own_policy:
        _apply_heartbeat_policy(kube)
    values = chart.chart_values(
        testbed.config,
        tainted=True,
        watchNamespaces=[installed.watched],
        heartbeatPolicy={"enabled": own_policy},
        # restarts and heartbeats quicker than the defaults, so the tests wait seconds, not minutes
        operator={"resyncSeconds": 5, "expectationSeconds": 10, "stuckTerminatingSeconds": STUCK_TERMINATING_SECONDS},
    )
    chart.install(testbed.config, testbed.kubeconfig, installed.name, installed.namespace, values)
    yield installed
    chart.helm(testbed.config, testbed.kubeconfig, "uninstall", installed.name, "--namespace", installed.namespace,
               "--wait", check=False)  # fmt: skip
    with contextlib.suppress(client.ApiException):
        client.CoreV1Api(kube).delete_namespace(installed.watched, propagation_policy="Background")


def _apply_heartbeat_policy(kube: ApiClient) -> None:
    """The admission policy that limits rank 0's token to its own progress annotation, as the chart has it."""
    from kubernetes import client

    admission = client.AdmissionregistrationV1Api(kube)
    for doc in yaml.safe_load_all(POLICY.read_text()):
        patch = (
            admission.patch_validating_admission_policy
            if doc["kind"] == "ValidatingAdmissionPolicy"
            else admission.patch_validating_admission_policy_binding
        )
        patch(doc["metadata"]["name"], doc, field_manager="aidc-tests", force=True,
              _content_type="application/apply-patch+yaml")  # fmt: skip


class PodHistory:
    """Every status a namespace's pods went through, by uid: a pod that ends and is replaced is gone in
    moments, so its last state is only seen by a watch."""

    def __init__(self, kube: ApiClient, namespace: str) -> None:
        from kubernetes import client, watch

        self._watch = watch.Watch()
        self.seen: dict[str, list[dict[str, Any]]] = {}
        self._gone: dict[str, float] = {}  # uid: when the watch said the pod was deleted (Unix time)
        self._lock = threading.Lock()
        core = client.CoreV1Api(kube)

        def run() -> None:
            try:
                for event in self._watch.stream(core.list_namespaced_pod, namespace, deserialize=False):
                    pod = event["object"]
                    with self._lock:
                        self.seen.setdefault(pod["metadata"]["uid"], []).append(pod)
                        if event["type"] == "DELETED":
                            self._gone[pod["metadata"]["uid"]] = time.time()
            except Exception:
                return

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()

    def of(self, name: str) -> list[list[dict[str, Any]]]:
        """The histories of every pod called ``name``, oldest pod first."""
        with self._lock:
            found = [h for h in self.seen.values() if h[0]["metadata"]["name"] == name]
        return sorted(found, key=lambda h: h[0]["metadata"]["creationTimestamp"])

    def names(self) -> set[str]:
        with self._lock:
            return {h[0]["metadata"]["name"] for h in self.seen.values()}

    def uids_of(self, prefix: str) -> set[str]:
        with self._lock:
            return {uid for uid, h in self.seen.items() if h[0]["metadata"]["name"].startswith(prefix)}

    def gone_at(self, uid: str) -> float | None:
        """When the pod ``uid`` left the API server (Unix time), if it has."""
        with self._lock:
            return self._gone.get(uid)

    def stop(self) -> None:
        self._watch.stop()


@pytest.fixture
def pod_history(kube: ApiClient, release: Release) -> Iterator[PodHistory]:
    """Starts recording the watched namespace's pods at once."""
    history = PodHistory(kube, release.watched)
    yield history
    history.stop()


def crictl(testbed: Testbed, node: str, command: str, *args: str) -> Any:
    """``crictl COMMAND -o json ARGS`` against the containerd of real node ``node``: what the runtime itself says."""
    from aidc_testbed.realnodes import containerd_socket

    socket = containerd_socket(testbed.layout.real_nodes / node)
    endpoint = f"unix://{socket}"
    argv = [str(testbed.config.tools_dir / "crictl"), "--runtime-endpoint", endpoint, command, "-o", "json", *args]
    return json.loads(subprocess.run(argv, capture_output=True, text=True, check=True, timeout=30).stdout)


def container_pid(testbed: Testbed, pod: Any, container: str) -> int:
    """The host pid of ``container`` of ``pod`` (a V1Pod) on its real node, asked of containerd by crictl."""
    status = next(s for s in pod.status.container_statuses if s.name == container)
    container_id = status.container_id.split("://", 1)[1]
    return int(crictl(testbed, pod.spec.node_name, "inspect", container_id)["info"]["pid"])


def runtime_states(testbed: Testbed, node: str, pod_uid: str) -> dict[str, list[str]]:
    """The states containerd on ``node`` holds for a pod: its sandboxes and its containers."""
    label = f"io.kubernetes.pod.uid={pod_uid}"
    sandboxes = crictl(testbed, node, "pods", "--label", label).get("items") or []
    containers = crictl(testbed, node, "ps", "-a", "--label", label).get("containers") or []
    return {"sandboxes": [s["state"] for s in sandboxes], "containers": [c["state"] for c in containers]}
