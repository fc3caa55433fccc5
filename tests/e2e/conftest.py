"""Fixtures of the end-to-end tests: the loopback control plane plus a node agent that runs pods for real.

The agent (``hack/nodeagent``) registers the tainted node ``local-0``; the tests put their pods
there with :func:`aidc_nodeagent.placement`, so the cluster tests sharing the session's test bed
keep their kwok nodes to themselves. The agent needs root (namespaces for the pods): elsewhere
these tests are skipped with that reason.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml

_AGENT = str(Path(__file__).resolve().parents[2] / "hack" / "nodeagent")
if _AGENT not in sys.path:
    sys.path.insert(0, _AGENT)

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

    from aidc_nodeagent import LocalNode
    from aidc_testbed import Testbed

REPO_ROOT = Path(__file__).resolve().parents[2]
POLICY = REPO_ROOT / "charts" / "aidc-operator" / "templates" / "heartbeat-policy.yaml"


@pytest.fixture(scope="session")
def local_node(testbed: Testbed, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalNode]:
    """The node agent's node, for the whole session; stopped and cleaned up (processes, namespaces) after."""
    from aidc_nodeagent import LocalNode, unavailable

    reason = unavailable()
    if reason is not None:
        pytest.skip(reason)
    node = LocalNode(
        testbed.kubeconfig,
        tmp_path_factory.mktemp("nodeagent"),
        # restarts and heartbeats quicker than a kubelet's, so the tests wait seconds, not minutes
        extra_args=("--restart-backoff-seconds", "1", "--status-seconds", "5"),
        die_with_parent=True,
    )
    node.start()
    yield node
    node.stop()


@pytest.fixture(scope="session")
def heartbeat_policy(kube: ApiClient) -> None:
    """The admission policy that limits rank 0's token to its own progress annotation, as installed by the chart."""
    from kubernetes import client

    admission = client.AdmissionregistrationV1Api(kube)
    for doc in yaml.safe_load_all(POLICY.read_text()):
        patch = (
            admission.patch_validating_admission_policy
            if doc["kind"] == "ValidatingAdmissionPolicy"
            else admission.patch_validating_admission_policy_binding
        )
        patch(
            doc["metadata"]["name"],
            doc,
            field_manager="aidc-tests",
            force=True,
            _content_type="application/apply-patch+yaml",
        )


class PodHistory:
    """Every status a namespace's pods went through, by uid: a pod the agent finalises is gone in
    milliseconds, so its last state is only seen by a watch."""

    def __init__(self, kube: ApiClient, namespace: str) -> None:
        from kubernetes import client, watch

        self._watch = watch.Watch()
        self.seen: dict[str, list[dict[str, Any]]] = {}
        self._lock = threading.Lock()
        core = client.CoreV1Api(kube)

        def run() -> None:
            try:
                for event in self._watch.stream(core.list_namespaced_pod, namespace, deserialize=False):
                    pod = event["object"]
                    with self._lock:
                        self.seen.setdefault(pod["metadata"]["uid"], []).append(pod)
            except Exception:
                return

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()

    def of(self, name: str) -> list[list[dict[str, Any]]]:
        """The histories of every pod called ``name``, oldest pod first."""
        with self._lock:
            found = [h for h in self.seen.values() if h[0]["metadata"]["name"] == name]
        return sorted(found, key=lambda h: h[0]["metadata"]["creationTimestamp"])

    def stop(self) -> None:
        self._watch.stop()


@pytest.fixture
def pod_history(kube: ApiClient, namespace: str) -> Iterator[PodHistory]:
    """Starts recording the test namespace's pods at once."""
    history = PodHistory(kube, namespace)
    yield history
    history.stop()
