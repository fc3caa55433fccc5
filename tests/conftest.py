"""Fixtures shared by every test that needs a cluster.

The cluster is the loopback test bed of ``hack/testbed`` (real etcd, API server, controller
manager, scheduler; kwok for the fake GPU nodes; two real nodes with kubelet and containerd when
the session runs as root), started once per session. Set ``AIDC_KUBECONFIG`` to
the kubeconfig of a test bed already running (``python -m aidc_testbed up``) to skip the start
and keep the cluster afterwards.

Tests that use these fixtures carry ``@pytest.mark.cluster``; ``pytest -m "not cluster"`` runs
the others with nothing built. The test bed's package is imported only inside the fixtures, so
collecting unit tests never needs it.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import secrets
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml

if TYPE_CHECKING:
    from kopf.testing import KopfRunner
    from kubernetes.client import ApiClient

    from aidc_testbed import Testbed

REPO_ROOT = Path(__file__).resolve().parents[1]
OPERATOR_MODULE = "aidc.runtime.handlers"
TEST_NAMESPACE_LABEL = "aidc.io/test"


@pytest.fixture(scope="session")
def testbed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Testbed]:
    """The session's cluster: the one ``AIDC_KUBECONFIG`` names, else a fresh one in a temp dir."""
    from aidc_testbed import Testbed, TestbedConfig

    reused = os.environ.get("AIDC_KUBECONFIG")
    if reused:
        yield Testbed.attach(kubeconfig=Path(reused))
        return
    # A no-op when the binaries are built and their pinned modules unchanged.
    subprocess.run([str(REPO_ROOT / "hack" / "build-tools.sh")], check=True)
    # Two real nodes (kubelet, containerd) beside the kwok nodes, for the e2e tests (a lost node needs
    # a second one for its gang); they need root and the images of `make images` (also a no-op when
    # they are up to date). AIDC_REAL_NODES=0 leaves them out (the e2e tests then skip), 1 keeps one
    # (the lost-node test skips): one bed per machine runs real nodes.
    real_nodes = int(os.environ.get("AIDC_REAL_NODES", "2")) if os.geteuid() == 0 else 0
    if real_nodes:
        subprocess.run([str(REPO_ROOT / "hack" / "images" / "build-images.sh")], check=True)
    # With a real node the folder is fixed: a session killed before its teardown leaves host changes
    # (bridges, mounts, shims) recorded there, and the next session's start undoes them first.
    state_dir = REPO_ROOT / ".cache" / "testbed-tests" if real_nodes else tmp_path_factory.mktemp("testbed")
    config = TestbedConfig(state_dir=state_dir, real_nodes=real_nodes, die_with_parent=True)
    with Testbed(config) as bed:
        yield bed


@pytest.fixture(scope="session")
def kube(testbed: Testbed) -> ApiClient:
    """An ApiClient of the official ``kubernetes`` client, as the cluster's administrator."""
    return testbed.api_client()


def _namespace_name(test_name: str) -> str:
    slug = re.sub(r"[^a-z0-9-]+", "-", test_name.lower()).strip("-")[:40].strip("-")
    return f"t-{slug}-{secrets.token_hex(3)}"


@pytest.fixture
def namespace(kube: ApiClient, request: pytest.FixtureRequest) -> Iterator[str]:
    """A namespace of this test's own (named after it), deleted with all it holds afterwards."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    name = _namespace_name(request.node.name)
    core = client.CoreV1Api(kube)
    core.create_namespace(body={"metadata": {"name": name, "labels": {TEST_NAMESPACE_LABEL: "true"}}})
    yield name
    try:
        core.delete_namespace(name, propagation_policy="Background")
    except ApiException as error:
        if error.status != 404:
            raise


@pytest.fixture(scope="session")
def wait_for() -> Callable[..., Any]:
    """``wait_for(predicate, timeout=30, interval=0.25, message="", until=None, ignore=())``.

    Polls until ``predicate()`` is truthy (or ``until(predicate())`` holds) and returns its value;
    fails with the last observed value. See :func:`aidc_testbed.wait_for`.
    """
    from aidc_testbed import wait_for

    return wait_for


@pytest.fixture(scope="session")
def crds_applied(kube: ApiClient, wait_for: Callable[..., Any]) -> list[str]:
    """Every CRD of ``crds/`` applied (server-side) and Established; their names."""
    from kubernetes import client

    documents = [
        doc
        for path in sorted((REPO_ROOT / "crds").glob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text())
        if doc and doc.get("kind") == "CustomResourceDefinition"
    ]
    if not documents:
        pytest.skip("crds/ holds no CustomResourceDefinition yet")
    extensions = client.ApiextensionsV1Api(kube)
    for doc in documents:
        extensions.patch_custom_resource_definition(
            doc["metadata"]["name"],
            body=doc,
            field_manager="aidc-tests",
            force=True,
            _content_type="application/apply-patch+yaml",
        )

    def established(name: str) -> bool:
        crd = extensions.read_custom_resource_definition(name)
        conditions = (crd.status.conditions if crd.status else None) or []
        return any(c.type == "Established" and c.status == "True" for c in conditions)

    names = [doc["metadata"]["name"] for doc in documents]
    for name in names:
        wait_for(lambda name=name: established(name), timeout=30, message=f"CRD {name} Established")
    return names


def _operator_missing() -> str | None:
    """Why the operator's handlers cannot be imported, or None when they can."""
    try:
        found = importlib.util.find_spec(OPERATOR_MODULE) is not None
    except ModuleNotFoundError:
        found = False
    return None if found else f"{OPERATOR_MODULE} does not exist yet"


@pytest.fixture
def run_operator(
    testbed: Testbed, monkeypatch: pytest.MonkeyPatch
) -> Callable[..., contextlib.AbstractContextManager[KopfRunner]]:
    """Run the operator in-process, watching only the given namespaces, for a ``with`` block.

    ``with run_operator(namespace) as runner: ...``; extra kopf CLI arguments may follow as
    ``args=[...]``. The operator talks to the test bed through ``KUBECONFIG``. Tests that use
    this fixture are skipped while ``aidc.runtime.handlers`` does not exist.
    """
    reason = _operator_missing()
    if reason is not None:
        pytest.skip(reason)
    from kopf.testing import KopfRunner

    monkeypatch.setenv("KUBECONFIG", str(testbed.kubeconfig))

    @contextlib.contextmanager
    def run(*namespaces: str, args: tuple[str, ...] = ()) -> Iterator[KopfRunner]:
        if not namespaces:
            raise ValueError("run_operator needs at least one namespace to watch")
        scope = [arg for ns in namespaces for arg in ("--namespace", ns)]
        argv = ["run", "--standalone", *scope, "-m", OPERATOR_MODULE, *args]
        with KopfRunner(argv, timeout=60) as runner:
            yield runner

    return run
