"""The chart on the real API server of the test bed: every rendered object admitted (server-side dry
run), a real `helm install`/`test`/`upgrade`/`uninstall`, and the operator run with a token of the
chart's own ServiceAccount, so a TrainingJob reaching Succeeded proves its RBAC is enough, and a
refused call proves the namespaced mode is confined to its namespaces."""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import secrets
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.chart.identity import client_for_token, request_token, service_account_may, write_token_kubeconfig
from tests.chart.rendering import (
    CHART,
    REPO_ROOT,
    environment,
    helm,
    of_kind,
    operator_container,
    render,
    render_text,
    require_helm,
    values_file,
)
from tests.cluster.resources import condition_is, create, exit_pod, get, patch_spec, pods
from tests.factories import inference_service_body, training_job_body

pytestmark = pytest.mark.cluster
OPERATOR_MODULE = "aidc.runtime.handlers"
SERVING_RECONCILER = "aidc.management.serving_reconciler"
HEARTBEAT_POLICY = "aidc-trainer-heartbeat"
RBAC_GROUP = "rbac.authorization.k8s.io"
# kwok ends the helm test pod with exit code 0 (it runs no container: the wget is not executed here)
KWOK_SUCCEEDS = {"aidc.io/kwok-exit-code": "0", "aidc.io/kwok-exit-after": "1s"}


@pytest.fixture(autouse=True)
def _helm_is_built() -> None:
    require_helm()


@pytest.fixture
def extra_namespace(kube: client.ApiClient) -> Iterator[Callable[[str], str]]:
    """``extra_namespace("watched")``: another namespace of this test, deleted afterwards."""
    core = client.CoreV1Api(kube)
    made: list[str] = []

    def make(prefix: str) -> str:
        name = f"t-{prefix}-{secrets.token_hex(3)}"
        core.create_namespace({"metadata": {"name": name, "labels": {"aidc.io/test": "true"}}})
        made.append(name)
        return name

    yield make
    for name in made:
        with contextlib.suppress(ApiException):
            core.delete_namespace(name, propagation_policy="Background")


def _release_name() -> str:
    return f"aidc-{secrets.token_hex(3)}"


def _heartbeat_policy_is_free(kube: client.ApiClient) -> bool:
    """Whether a release may own the cluster's one heartbeat policy (nobody else applied it)."""
    try:
        client.AdmissionregistrationV1Api(kube).read_validating_admission_policy(HEARTBEAT_POLICY)
    except ApiException as error:
        if error.status == 404:
            return True
        raise
    return False


@contextlib.contextmanager
def installed(testbed: Any, namespace: str, values: dict[str, Any], *, wait: bool = False) -> Iterator[str]:
    """The chart installed as a new release in ``namespace`` for a ``with`` block; its name."""
    release = _release_name()
    path = values_file(values)
    try:
        helm(
            "install", release, str(CHART), "--namespace", namespace, "-f", str(path),
            *(["--wait", "--timeout", "120s"] if wait else []),
            kubeconfig=testbed.kubeconfig,
        )  # fmt: skip
        yield release
    finally:
        path.unlink()
        helm("uninstall", release, "--namespace", namespace, "--wait", kubeconfig=testbed.kubeconfig, check=False)


def _server_side_dry_run(testbed: Any, text: str, folder: Path) -> subprocess.CompletedProcess[str]:
    """Admission only: --force-conflicts, so fields another test applied (the heartbeat policy, on a
    reused bed) are not an ownership conflict."""
    manifest = folder / "rendered.yaml"
    manifest.write_text(text)
    return subprocess.run(
        ["kubectl", "--kubeconfig", str(testbed.kubeconfig), "apply", "--server-side", "--dry-run=server",
         "--field-manager=aidc-chart-tests", "--force-conflicts", "-f", str(manifest)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


@pytest.mark.parametrize("mode", ["cluster-wide", "namespaced"])
def test_every_rendered_object_is_admitted_by_the_api_server(
    testbed: Any, crds_applied: list[str], namespace: str, extra_namespace: Callable[[str], str], mode: str,
    tmp_path: Path,
) -> None:  # fmt: skip
    values: dict[str, Any] = {}
    if mode == "namespaced":
        values["watchNamespaces"] = [namespace, extra_namespace("watched")]
    text = render_text(values, release=_release_name(), namespace=namespace)
    objects = [doc for doc in yaml.safe_load_all(text) if doc]
    result = _server_side_dry_run(testbed, text, tmp_path)
    assert result.returncode == 0, result.stderr
    applied = [line for line in result.stdout.splitlines() if "serverside-applied" in line]
    assert len(applied) == len(objects), result.stdout


def test_helm_install_test_upgrade_and_uninstall(
    kube: client.ApiClient, testbed: Any, crds_applied: list[str], namespace: str, wait_for: Callable[..., Any]
) -> None:
    own_policy = _heartbeat_policy_is_free(kube)
    values = {"test": {"podAnnotations": KWOK_SUCCEEDS}, "heartbeatPolicy": {"enabled": own_policy}}
    apps, rbac = client.AppsV1Api(kube), client.RbacAuthorizationV1Api(kube)
    with installed(testbed, namespace, values, wait=True) as release:
        name = f"{release}-aidc-operator"
        deployment = apps.read_namespaced_deployment(name, namespace)
        assert deployment.status.ready_replicas == 2  # --wait saw them ready (the pods are played by kwok)
        assert rbac.read_cluster_role(name).rules
        if own_policy:
            policy = client.AdmissionregistrationV1Api(kube).read_validating_admission_policy(HEARTBEAT_POLICY)
            assert policy.metadata.annotations["meta.helm.sh/release-name"] == release
        tested = helm("test", release, "--namespace", namespace, "--timeout", "60s", kubeconfig=testbed.kubeconfig)
        assert "Phase:          Succeeded" in tested.stdout or "Phase: Succeeded" in tested.stdout, tested.stdout
        helm(
            "upgrade", release, str(CHART), "--namespace", namespace, "--reuse-values",
            "--set", "operator.resyncSeconds=30", "--wait", "--timeout", "120s", kubeconfig=testbed.kubeconfig,
        )  # fmt: skip
        upgraded = apps.read_namespaced_deployment(name, namespace)
        env = {e.name: e.value for e in upgraded.spec.template.spec.containers[0].env}
        assert env["AIDC_RESYNC_SECONDS"] == "30" and upgraded.spec.strategy.type == "RollingUpdate"
        budget = client.PolicyV1Api(kube).read_namespaced_pod_disruption_budget(name, namespace)
        assert budget.spec.max_unavailable == 1
    with pytest.raises(ApiException) as gone:
        rbac.read_cluster_role(name)
    assert gone.value.status == 404
    # Helm never deletes what crds/ installed: the custom resources outlive the release
    extensions = client.ApiextensionsV1Api(kube)
    for crd in crds_applied:
        assert extensions.read_custom_resource_definition(crd).metadata.deletion_timestamp is None


@contextlib.contextmanager
def operator_as_chart(
    testbed: Any,
    kube: client.ApiClient,
    namespace: str,
    release: str,
    values: dict[str, Any],
    folder: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> Iterator[Any]:
    """The operator in-process as the chart runs it: the Deployment's args and env, the chart's
    ServiceAccount's token (TokenRequest) and nothing else, against the test bed's API server.
    Afterwards, no log line of the operator or kopf may tell of a refused request: kopf falls
    back quietly (a warning) when it may not observe namespaces or CRDs."""
    from kopf.testing import KopfRunner

    from aidc_testbed import wait_for

    name = f"{release}-aidc-operator"
    # the API server's RBAC cache learns of a new binding a moment after it is created
    for where in values.get("watchNamespaces") or [None]:
        wait_for(
            lambda where=where: all(
                service_account_may(kube, namespace, name, verb, resource, group, where)
                for verb, resource, group in (("watch", "trainingjobs", "aidc.io"), ("create", "roles", RBAC_GROUP))
            ),
            timeout=30,
            message="the chart's RBAC in force",
        )
    token = request_token(kube, namespace, name)
    kubeconfig = write_token_kubeconfig(testbed.kubeconfig, token, folder / "operator.kubeconfig")
    container = operator_container(render(values, release=release, namespace=namespace))
    for key, value in environment(container).items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("AIDC_METRICS_PORT", "0")  # several operators run in one test process
    monkeypatch.setenv("AIDC_RESYNC_SECONDS", "5")
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    args = list(container["args"])
    if not any(arg.startswith("--namespace") for arg in args):
        args.append("--all-namespaces")  # what `aidc run` does without namespaces
    with caplog.at_level(logging.INFO), KopfRunner(["run", *args, "-m", OPERATOR_MODULE], timeout=60) as runner:
        yield runner
    # (a namespace of an earlier test being deleted refuses new objects too: not an RBAC matter)
    refused = [
        r.getMessage() for r in caplog.records
        if any(word in r.getMessage() for word in ("Not enough permissions", "Forbidden", "forbidden"))
        and "being terminated" not in r.getMessage()
    ]  # fmt: skip
    assert not refused, refused[:5]
    assert any(r.name.startswith("kopf") for r in caplog.records)  # the check above saw the operator's logs


def _skip_without_operator() -> None:
    if importlib.util.find_spec(OPERATOR_MODULE) is None:
        pytest.skip(f"{OPERATOR_MODULE} does not exist yet")


@pytest.mark.parametrize("mode", ["cluster-wide", "namespaced"])
def test_the_chart_service_account_runs_a_training_job_to_succeeded(
    kube: client.ApiClient,
    testbed: Any,
    crds_applied: list[str],
    namespace: str,
    extra_namespace: Callable[[str], str],
    wait_for: Callable[..., Any],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
    mode: str,
) -> None:
    _skip_without_operator()
    operator_namespace = extra_namespace("operator")
    values: dict[str, Any] = {"heartbeatPolicy": {"enabled": False}}
    if mode == "namespaced":
        values["watchNamespaces"] = [namespace]
    spec = {"storage": {"checkpoints": {"size": "1Gi"}}}
    tj = "trainingjobs"
    with (
        installed(testbed, operator_namespace, values) as release,
        operator_as_chart(testbed, kube, operator_namespace, release, values, tmp_path, monkeypatch, caplog),
    ):
        create(kube, namespace, tj, training_job_body("rbac", spec))
        wait_for(lambda: get(kube, namespace, tj, "rbac"), until=lambda j: condition_is(j, "Running"), timeout=60)
        core = client.CoreV1Api(kube)
        assert core.read_namespaced_persistent_volume_claim("rbac-checkpoints", namespace)
        assert core.read_namespaced_service("rbac-gang", namespace)
        assert client.NetworkingV1Api(kube).read_namespaced_network_policy("rbac-gang", namespace)
        # the trainer's Role grants pods patch: applied only because the operator holds it
        assert client.RbacAuthorizationV1Api(kube).read_namespaced_role("aidc-trainer", namespace)
        for pod in pods(kube, namespace, "rbac"):
            exit_pod(kube, namespace, pod.metadata.name, 0)
        wait_for(lambda: get(kube, namespace, tj, "rbac"), until=lambda j: condition_is(j, "Succeeded"), timeout=60)
        wait_for(
            lambda: {
                e.reason for e in core.list_namespaced_event(namespace, field_selector="involvedObject.name=rbac").items
            },
            until=lambda reasons: {"Running", "Succeeded"} <= reasons,
            message="events posted on the job",
        )  # the event follows the status patch
        # ttlSecondsAfterFinished: the operator deletes the job
        patch_spec(kube, namespace, tj, "rbac", {"runPolicy": {"ttlSecondsAfterFinished": 0}})
        custom = client.CustomObjectsApi(kube)
        wait_for(
            lambda: [j["metadata"]["name"] for j in custom.list_namespaced_custom_object(
                "aidc.io", "v1alpha1", namespace, tj)["items"]],
            until=lambda names: names == [],
            timeout=30,
            message="the finished job deleted by its TTL",
        )  # fmt: skip


@pytest.mark.parametrize("network_policy", [True, False], ids=["network-policy", "no-network-policy"])
def test_the_chart_service_account_serves_an_inference_service(
    kube: client.ApiClient,
    testbed: Any,
    crds_applied: list[str],
    namespace: str,
    extra_namespace: Callable[[str], str],
    wait_for: Callable[..., Any],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
    network_policy: bool,
) -> None:
    """The serving half of the RBAC: Deployment, Service, autoscaler and NetworkPolicy of an
    InferenceService; with networkPolicy.enabled false the narrower RBAC (no create) is enough."""
    if importlib.util.find_spec(SERVING_RECONCILER) is None:
        pytest.skip(f"{SERVING_RECONCILER} does not exist yet: the InferenceService controller has not landed")
    operator_namespace = extra_namespace("operator")
    values: dict[str, Any] = {
        "heartbeatPolicy": {"enabled": False},
        "watchNamespaces": [namespace],
        "networkPolicy": {"enabled": network_policy},
    }
    core = client.CoreV1Api(kube)
    core.create_namespaced_persistent_volume_claim(
        namespace,
        {
            "metadata": {"name": "models"},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
        },
    )
    # spec.auth.kubernetes: the operator binds aidc-inference to the chart's reviewer role, which
    # its namespaced-mode RBAC allows cluster-wide for that one role
    spec = {
        "model": {"storageUri": "pvc://models/digits"},
        "autoscaling": {"minReplicas": 1, "maxReplicas": 2},
        "auth": {"kubernetes": {}},
    }
    rbac = client.RbacAuthorizationV1Api(kube)
    with (
        installed(testbed, operator_namespace, values) as release,
        operator_as_chart(testbed, kube, operator_namespace, release, values, tmp_path, monkeypatch, caplog),
    ):
        reviewer = f"{release}-aidc-operator-inference-reviewer"
        try:
            create(kube, namespace, "inferenceservices", inference_service_body("digits", spec))
            wait_for(
                lambda: get(kube, namespace, "inferenceservices", "digits"),
                until=lambda s: condition_is(s, "Ready"),
                timeout=90,
                message="InferenceService Ready",
            )
            assert client.AppsV1Api(kube).list_namespaced_deployment(namespace).items
            assert client.AutoscalingV2Api(kube).list_namespaced_horizontal_pod_autoscaler(namespace).items
            policies = client.NetworkingV1Api(kube).list_namespaced_network_policy(namespace).items
            assert [p.metadata.name for p in policies] == (["digits-serving"] if network_policy else [])
            binding = rbac.read_cluster_role_binding(f"{reviewer}-{namespace}")
            assert binding.role_ref.name == reviewer
            assert [(s.name, s.namespace) for s in binding.subjects] == [("aidc-inference", namespace)]
        finally:
            with contextlib.suppress(ApiException):
                rbac.delete_cluster_role_binding(f"{reviewer}-{namespace}")


@pytest.mark.parametrize("mode", ["cluster-wide", "namespaced"])
def test_what_the_chart_service_account_may_not_do(
    kube: client.ApiClient,
    testbed: Any,
    namespace: str,
    extra_namespace: Callable[[str], str],
    mode: str,
) -> None:
    operator_namespace, elsewhere = extra_namespace("operator"), extra_namespace("elsewhere")
    values: dict[str, Any] = {"heartbeatPolicy": {"enabled": False}}
    if mode == "namespaced":
        values["watchNamespaces"] = [namespace]
    with installed(testbed, operator_namespace, values) as release:
        account = f"{release}-aidc-operator"

        def may(verb: str, resource: str, group: str = "", where: str | None = namespace) -> bool:
            return service_account_may(kube, operator_namespace, account, verb, resource, group, where)

        # what it needs, where it works
        assert may("create", "pods") and may("patch", "pods") and may("create", "podgroups", "scheduling.volcano.sh")
        assert may("patch", "trainingjobs", "aidc.io") and may("create", "horizontalpodautoscalers", "autoscaling")
        assert may("watch", "customresourcedefinitions", "apiextensions.k8s.io", None)
        assert may("create", "volumesnapshots", "snapshot.storage.k8s.io")  # the checkpoint backup
        assert not may("delete", "volumesnapshots", "snapshot.storage.k8s.io")  # which outlives its job
        # never: secrets, configmaps, nodes, CRD changes, impersonation, pod exec
        for verb, resource, group, where in [
            ("get", "secrets", "", namespace),
            ("list", "secrets", "", None),
            ("get", "configmaps", "", namespace),
            ("list", "nodes", "", None),
            ("create", "customresourcedefinitions", "apiextensions.k8s.io", None),
            ("update", "trainingjobs", "aidc.io", namespace),
            ("impersonate", "serviceaccounts", "", namespace),
            ("create", "pods/exec", "", namespace),
            ("create", "clusterroles", "rbac.authorization.k8s.io", None),
            ("bind", "clusterroles", "rbac.authorization.k8s.io", None),  # only the reviewer role, by name
            ("delete", "clusterrolebindings", "rbac.authorization.k8s.io", None),
        ]:
            assert not may(verb, resource, group, where), (verb, resource, where)
        if mode == "namespaced":
            assert not may("list", "pods", "", elsewhere) and not may("create", "pods", "", elsewhere)
            assert not may("list", "pods", "", None)  # nor across all namespaces
            # and for real, with the token: the API server refuses to list another namespace's pods
            token = request_token(kube, operator_namespace, account)
            as_operator = client.CoreV1Api(client_for_token(kube, token))
            assert as_operator.list_namespaced_pod(namespace).items == []
            with pytest.raises(ApiException) as refused:
                as_operator.list_namespaced_pod(elsewhere)
            assert refused.value.status == 403
            with pytest.raises(ApiException) as refused_everywhere:
                as_operator.list_pod_for_all_namespaces()
            assert refused_everywhere.value.status == 403
        else:
            assert may("list", "pods", "", None) and may("create", "pods", "", elsewhere)
        _the_lease_and_no_other(kube, operator_namespace, account, namespace)


def _the_lease_and_no_other(kube: client.ApiClient, operator_namespace: str, account: str, watched: str) -> None:
    """Leader election may create, read and renew its own Lease in the release's namespace, and nothing more."""
    lease = account  # the chart names the Lease after the release, as it names the account
    coordination = client.CoordinationV1Api(client_for_token(kube, request_token(kube, operator_namespace, account)))
    body = {"metadata": {"name": lease}, "spec": {"holderIdentity": "test", "leaseDurationSeconds": 15}}
    with pytest.raises(ApiException) as absent:  # the first read of a candidate: allowed, and not there yet
        coordination.read_namespaced_lease(lease, operator_namespace)
    assert absent.value.status == 404
    created = coordination.create_namespaced_lease(operator_namespace, body)
    assert coordination.read_namespaced_lease(lease, operator_namespace).spec.holder_identity == "test"
    created.spec.holder_identity = "renewed"
    assert coordination.replace_namespaced_lease(lease, operator_namespace, created).spec.holder_identity == "renewed"
    refused = [
        lambda: coordination.delete_namespaced_lease(lease, operator_namespace),
        lambda: coordination.list_namespaced_lease(operator_namespace),
        lambda: coordination.read_namespaced_lease("kube-scheduler", operator_namespace),
        lambda: coordination.create_namespaced_lease(watched, body),
        coordination.list_lease_for_all_namespaces,
    ]
    for call in refused:
        with pytest.raises(ApiException) as error:
            call()
        assert error.value.status == 403


def test_rendered_release_objects_are_what_is_installed(testbed: Any, kube: client.ApiClient, namespace: str) -> None:
    """`helm template` (what the unit tests read) and `helm install` make the same RBAC."""
    values: dict[str, Any] = {"heartbeatPolicy": {"enabled": False}, "watchNamespaces": [namespace]}
    with installed(testbed, namespace, values) as release:
        rendered = render(values, release=release, namespace=namespace)
        roles = [o for o in of_kind(rendered, "Role") if o["metadata"]["namespace"] == namespace]
        # the watched namespace is the release's here: its Role and the Lease's
        names = sorted(r["metadata"]["name"] for r in roles)
        assert names == [f"{release}-aidc-operator", f"{release}-aidc-operator-leader-election"]
        for role in roles:
            live = client.RbacAuthorizationV1Api(kube).read_namespaced_role(role["metadata"]["name"], namespace)
            assert [(r.api_groups, r.resources, r.resource_names, r.verbs) for r in live.rules] == [
                (r["apiGroups"], r["resources"], r.get("resourceNames"), r["verbs"]) for r in role["rules"]
            ]


def test_the_documented_crd_upgrade_replaces_a_crd_helm_created(
    kube: client.ApiClient, testbed: Any, tmp_path: Path
) -> None:
    """docs/install.md's upgrade command, on a renamed copy of the TrainingJob CRD (the real one is shared)."""
    docs = (REPO_ROOT / "docs" / "install.md").read_text()
    command = next(line for line in docs.splitlines() if line.startswith("kubectl apply --server-side"))
    assert command == "kubectl apply --server-side --force-conflicts -f charts/aidc-operator/crds/"
    crd = yaml.safe_load((CHART / "crds" / "aidc.io_trainingjobs.yaml").read_text())
    group = f"t{secrets.token_hex(3)}.aidc-tests.io"
    crd["spec"]["group"] = group
    crd["metadata"] = {"name": f"{crd['spec']['names']['plural']}.{group}"}
    old, new = tmp_path / "old.yaml", tmp_path / "new.yaml"
    old.write_text(yaml.safe_dump(crd))
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["description"] = "a later version of the CRD"
    new.write_text(yaml.safe_dump(crd))
    kubectl = ["kubectl", "--kubeconfig", str(testbed.kubeconfig)]

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*kubectl, *args], capture_output=True, text=True, timeout=60, check=False)

    created = run("create", "--field-manager=helm", "-f", str(old))  # what `helm install` does with crds/
    assert created.returncode == 0, created.stderr
    try:
        without_force = run("apply", "--server-side", "-f", str(new))
        assert without_force.returncode != 0 and 'conflict with "helm"' in without_force.stderr
        upgraded = run(*command.split()[1:-1], str(new))
        assert upgraded.returncode == 0, upgraded.stderr
        live = client.ApiextensionsV1Api(kube).read_custom_resource_definition(crd["metadata"]["name"])
        assert live.spec.versions[0].schema.open_apiv3_schema.description == "a later version of the CRD"
    finally:
        run("delete", "customresourcedefinition", crd["metadata"]["name"], "--wait=false")


def test_the_chart_service_account_elects_a_leader_as_the_deployment_runs_it(
    kube: client.ApiClient,
    testbed: Any,
    crds_applied: list[str],
    namespace: str,
    extra_namespace: Callable[[str], str],
    wait_for: Callable[..., Any],
    tmp_path: Path,
) -> None:
    """`aidc run` with the Deployment's args and env (leader election on), the chart's token and the
    pod's downward-API variables: the Role is enough to take the Lease, lead, and free it on SIGTERM."""
    import functools
    import os
    import sys

    from aidc_testbed.ports import free_ports

    operator_namespace = extra_namespace("operator")
    values: dict[str, Any] = {"heartbeatPolicy": {"enabled": False}, "watchNamespaces": [namespace]}
    with installed(testbed, operator_namespace, values) as release:
        account = f"{release}-aidc-operator"
        wait_for(lambda: service_account_may(kube, operator_namespace, account, "create", "leases",
                                             "coordination.k8s.io", operator_namespace), timeout=30)  # fmt: skip
        token = request_token(kube, operator_namespace, account)
        kubeconfig = write_token_kubeconfig(testbed.kubeconfig, token, tmp_path / "operator.kubeconfig")
        container = operator_container(render(values, release=release, namespace=operator_namespace))
        metrics, health = free_ports(2)
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("AIDC_")}, **environment(container),
               "KUBECONFIG": str(kubeconfig), "POD_NAME": f"{account}-0", "POD_NAMESPACE": operator_namespace,
               "AIDC_METRICS_PORT": str(metrics), "AIDC_HEALTH_PORT": str(health)}  # fmt: skip
        log = tmp_path / "operator.log"
        with log.open("wb") as out:
            aidc = Path(sys.executable).with_name("aidc")
            process = subprocess.Popen([str(aidc), "run", *container["args"]], env=env, stdout=out, stderr=out)
        leases = client.CoordinationV1Api(kube)
        try:
            wait_for(
                lambda: leases.read_namespaced_lease(account, operator_namespace).spec.holder_identity,
                until=lambda holder: holder == f"{account}-0",
                ignore=(ApiException,),
                timeout=30,
                message="the chart's operator holds its Lease",
            )
            create(kube, namespace, "trainingjobs", training_job_body("elected"))
            job = functools.partial(get, kube, namespace, "trainingjobs", "elected")
            wait_for(job, until=lambda j: condition_is(j, "Running"), message="the job Running under the leader")
        finally:
            process.terminate()
            assert process.wait(timeout=30) == 0, log.read_text()[-3000:]
        assert not leases.read_namespaced_lease(account, operator_namespace).spec.holder_identity  # released
        assert "Forbidden" not in log.read_text() and "forbidden" not in log.read_text(), log.read_text()[-3000:]
