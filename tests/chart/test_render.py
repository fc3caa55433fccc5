"""The chart as Helm renders it: lint, least-privilege RBAC in both scopes, a hardened Deployment
that sets exactly the settings the operator reads, the CRDs, the toggles and the strict schema."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from aidc.settings import OperatorSettings
from tests.chart.rendering import (
    CHART,
    REPO_ROOT,
    downward_api,
    environment,
    grants,
    helm,
    named,
    of_kind,
    one,
    operator_container,
    operator_role,
    render,
    render_text,
    rules,
    values_file,
)

COMPONENT = "app.kubernetes.io/component"
NAMESPACED = {"watchNamespaces": ["team-a", "team-b"]}
MODES = pytest.mark.parametrize("values", [{}, NAMESPACED], ids=["cluster-wide", "namespaced"])


def test_lint_is_clean_in_strict_mode() -> None:
    for values in (
        {},
        NAMESPACED,
        {"metrics": {"serviceMonitor": {"enabled": True}, "podMonitors": {"enabled": True}}},
    ):
        path = values_file(values)
        try:
            result = helm("lint", "--strict", str(CHART), "-f", str(path))
        finally:
            path.unlink()
        assert "0 chart(s) failed" in result.stdout


@MODES
def test_rbac_has_no_wildcards_and_no_secrets(values: dict[str, Any]) -> None:
    text = render_text(values)
    found = list(rules(render(values)))
    assert found
    for kind, namespace, rule in found:
        for key in ("apiGroups", "resources", "verbs"):
            assert "*" not in rule.get(key, []), (kind, namespace, rule)
        assert not any("*" in resource for resource in rule["resources"]), rule
        assert "nonResourceURLs" not in rule
        assert not {"escalate", "impersonate"} & set(rule["verbs"]), rule
        if rule["resources"] == ["leases"]:
            continue  # the Lease, get/update by its name (test_leader_election_role_...)
        if "bind" in rule["verbs"] or "resourceNames" in rule:  # bind the reviewer role, nothing else
            assert rule == {
                "apiGroups": ["rbac.authorization.k8s.io"], "resources": ["clusterroles"], "verbs": ["bind"],
                "resourceNames": ["aidc-operator-inference-reviewer"],
            }, rule  # fmt: skip
    assert "secrets" not in text  # not in a rule, not in an env var, not in a volume


def _watch_roles(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    """The Roles or RoleBindings of watched namespaces (the Lease's Role aside)."""
    return [o for o in of_kind(objects, kind) if not o["metadata"]["name"].endswith("-leader-election")]


def test_cluster_wide_mode_binds_one_cluster_role_with_everything() -> None:
    objects = render({})
    assert not _watch_roles(objects, "Role") and not _watch_roles(objects, "RoleBinding")
    role, binding = operator_role(objects), one(objects, "ClusterRoleBinding")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": "aidc-operator",
    }
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "aidc-operator", "namespace": "aidc-system"}]
    granted = grants(role["rules"])
    assert ("", "pods", "create") in granted and ("", "pods", "patch") in granted
    assert ("apiextensions.k8s.io", "customresourcedefinitions", "watch") in granted
    assert not any(resource == "namespaces" for _, resource, _ in granted)  # kopf lists them only per namespace
    assert operator_container(objects)["args"] == ["--standalone"]
    assert environment(operator_container(objects))["AIDC_NAMESPACES"] == ""


def test_namespaced_mode_grants_per_namespace_and_little_cluster_wide() -> None:
    objects = render(NAMESPACED)
    roles, bindings = _watch_roles(objects, "Role"), _watch_roles(objects, "RoleBinding")
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["team-a", "team-b"]
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["team-a", "team-b"]
    for binding in bindings:
        assert binding["roleRef"]["kind"] == "Role"
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "aidc-operator", "namespace": "aidc-system"}]
    # what kopf observes at cluster scope, read-only, and nothing else
    cluster_wide = grants(operator_role(objects)["rules"])
    assert cluster_wide == {
        ("apiextensions.k8s.io", "customresourcedefinitions", "list"),
        ("apiextensions.k8s.io", "customresourcedefinitions", "watch"),
        ("", "namespaces", "list"),
        ("", "namespaces", "watch"),
        ("rbac.authorization.k8s.io", "clusterrolebindings", "create"),
        ("rbac.authorization.k8s.io", "clusterroles", "bind"),
    }
    # the same namespaced grants as the cluster-wide mode, less the cluster-scoped ones
    everything = grants(operator_role(render({}))["rules"])
    cluster_scoped = ("customresourcedefinitions", "clusterrolebindings", "clusterroles")
    assert grants(roles[0]["rules"]) == {g for g in everything if g[1] not in cluster_scoped}
    container = operator_container(objects)
    assert container["args"] == ["--standalone", "--namespace=team-a", "--namespace=team-b"]
    assert environment(container)["AIDC_NAMESPACES"] == "team-a,team-b"


@MODES
def test_the_reviewer_role_allows_token_and_access_reviews_only(values: dict[str, Any]) -> None:
    """What spec.auth.kubernetes servers are bound to, in each namespace, by the operator."""
    objects = render(values)
    reviewer = named(objects, "ClusterRole", "aidc-operator-inference-reviewer")
    assert grants(reviewer["rules"]) == {
        ("authentication.k8s.io", "tokenreviews", "create"),
        ("authorization.k8s.io", "subjectaccessreviews", "create"),
    }
    env = environment(operator_container(objects))
    assert env["AIDC_INFERENCE_REVIEWER_ROLE"] == "aidc-operator-inference-reviewer"


def test_the_operator_may_grant_what_it_gives_the_trainer() -> None:
    """RBAC forbids granting what one does not hold: the trainer's Role needs patch on pods."""
    from aidc.compute.trainer_account import trainer_identity

    trainer_role = next(o for o in trainer_identity("ns") if o["kind"] == "Role")
    for values in ({}, NAMESPACED):
        operator = [o for o in render(values) if o["metadata"].get("labels", {}).get(COMPONENT) == "operator"]
        held = {g for _, _, rule in rules(operator) for g in grants([rule])}
        assert grants(trainer_role["rules"]) <= held
        # the Role is applied, so that an upgrade narrows an older one
        assert ("rbac.authorization.k8s.io", "roles", "patch") in held


@MODES
def test_checkpoint_snapshots_may_only_be_read_and_created(values: dict[str, Any]) -> None:
    """A snapshot is a backup that outlives its job: the operator never lists, changes or deletes one."""
    held = {g for _, _, rule in rules(render(values)) for g in grants([rule])}
    snapshots = {g for g in held if "snapshot" in g[1] or "snapshot" in g[0]}
    assert snapshots == {
        ("snapshot.storage.k8s.io", "volumesnapshots", "get"),
        ("snapshot.storage.k8s.io", "volumesnapshots", "create"),
    }


@MODES
def test_deployment_is_two_hardened_replicas_replaced_one_at_a_time(values: dict[str, Any]) -> None:
    objects = render(values)
    deployment = one(objects, "Deployment")
    assert deployment["spec"]["replicas"] == 2
    # never a third candidate, and never both gone: one old pod goes, then its successor comes
    one_at_a_time = {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}}
    assert deployment["spec"]["strategy"] == one_at_a_time
    pod = deployment["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == one(objects, "ServiceAccount")["metadata"]["name"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    container = pod["containers"][0]
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["runAsNonRoot"] is True
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    assert {m["mountPath"] for m in container["volumeMounts"]} == {"/tmp"}  # the only writable place
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"metrics": 8000, "health": 8080}
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert container["image"] == "ghcr.io/aidc/operator:0.1.0"  # the tag defaults to appVersion


def test_values_reach_the_operator_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """The chart sets every AIDC_* variable OperatorSettings.from_env reads, and only those, and
    each value arrives in the setting it is meant for."""
    values = {
        "trainerImage": "registry.example/trainer:7-cpu",
        "watchNamespaces": ["ml"],
        "metrics": {"port": 9100},
        "health": {"port": 9101},
        "operator": {
            "podImagePullPolicy": "Always",
            "resyncSeconds": 17,
            "stuckTerminatingSeconds": 19,
            "expectationSeconds": 23,
            "maxConcurrentApiCalls": 29,
            "statusBatchSeconds": 1.5,
            "gangProgressSeconds": 12.5,
            "settleSeconds": 0.5,
            "clusterDomain": "corp.internal",
        },
        "networkPolicy": {"enabled": False, "metricsFrom": [{"ipBlock": {"cidr": "10.9.0.0/16"}}]},
        "leaderElection": {"leaseDurationSeconds": 31, "renewDeadlineSeconds": 21.5, "retryPeriodSeconds": 3.5},
    }
    container = operator_container(render(values, release="ops"))
    env = environment(container)
    source = (REPO_ROOT / "operator" / "aidc" / "settings.py").read_text()
    # the Lease's namespace is the pod's own, from POD_NAMESPACE; AIDC_LEASE_NAMESPACE is for a process outside a pod
    assert set(env) | {"AIDC_LEASE_NAMESPACE"} == set(re.findall(r'"(AIDC_[A-Z_]+)"', source))
    assert downward_api(container) == {"POD_NAME": "metadata.name", "POD_NAMESPACE": "metadata.namespace"}
    for name in [n for n in os.environ if n.startswith("AIDC_")]:
        monkeypatch.delenv(name)
    for name, value in {**env, "POD_NAME": "ops-aidc-operator-7c9-x", "POD_NAMESPACE": "aidc-system"}.items():
        monkeypatch.setenv(name, value)
    settings = OperatorSettings.from_env()
    expected = {
        "trainer_image": "registry.example/trainer:7-cpu",
        "image_pull_policy": "Always",
        "namespaces": ("ml",),
        "metrics_port": 9100,
        "health_port": 9101,
        "resync_seconds": 17,
        "stuck_terminating_seconds": 19,
        "expectation_seconds": 23,
        "max_concurrent_api_calls": 29,
        "status_batch_seconds": 1.5,
        "gang_progress_seconds": 12.5,
        "settle_seconds": 0.5,
        "cluster_domain": "corp.internal",
        "network_policy": False,
        "metrics_from": ({"ipBlock": {"cidr": "10.9.0.0/16"}},),
        "leader_election": True,
        "lease_name": "ops-aidc-operator",
        "lease_namespace": "aidc-system",
        "lease_duration_seconds": 31,
        "lease_renew_deadline_seconds": 21.5,
        "lease_retry_period_seconds": 3.5,
        "leader_identity": "ops-aidc-operator-7c9-x",
    }
    assert {field: getattr(settings, field) for field in expected} == expected
    # the operator's Service follows the ports
    service_ports = {
        p["name"]: (p["port"], p["targetPort"]) for p in one(render(values, release="ops"), "Service")["spec"]["ports"]
    }
    assert service_ports == {"metrics": (9100, "metrics"), "health": (9101, "health")}


def test_default_values_give_the_operator_its_own_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    """Helm and kustomize installs behave like `aidc run` without settings (the tuning knobs once disagreed)."""

    def settings_from(env: dict[str, str]) -> OperatorSettings:
        for name in [n for n in os.environ if n.startswith("AIDC_")]:
            monkeypatch.delenv(name)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        return OperatorSettings.from_env()

    kustomized = yaml.safe_load((REPO_ROOT / "config" / "manager" / "deployment.yaml").read_text())
    container = kustomized["spec"]["template"]["spec"]["containers"][0]
    installs = {
        "helm": settings_from(environment(operator_container(render({})))),
        "kustomize": settings_from({v["name"]: str(v.get("value", "")) for v in container["env"]}),
    }
    knobs = [
        "resync_seconds",
        "stuck_terminating_seconds",
        "expectation_seconds",
        "max_concurrent_api_calls",
        "status_batch_seconds",
        "gang_progress_seconds",
        "settle_seconds",
        "cluster_domain",
        "network_policy",
        "metrics_from",
        "lease_duration_seconds",
        "lease_renew_deadline_seconds",
        "lease_retry_period_seconds",
        "lease_name",
    ]
    plain = {k: getattr(OperatorSettings(), k) for k in knobs}
    for install, settings in installs.items():
        assert {k: getattr(settings, k) for k in knobs} == plain, install


def test_leader_election_gets_the_lease_and_nothing_more_in_the_release_namespace() -> None:
    objects = render(NAMESPACED, release="ops")
    role = next(r for r in of_kind(objects, "Role") if r["metadata"]["name"] == "ops-aidc-operator-leader-election")
    assert role["metadata"]["namespace"] == "aidc-system"
    assert role["rules"] == [
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "resourceNames": ["ops-aidc-operator"],
         "verbs": ["get", "update"]},
    ]  # fmt: skip
    binding = next(b for b in of_kind(objects, "RoleBinding") if b["roleRef"]["name"] == role["metadata"]["name"])
    assert binding["metadata"]["namespace"] == "aidc-system"
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "ops-aidc-operator", "namespace": "aidc-system"}]
    # no other grant on leases anywhere: not in the watched namespaces, not cluster-wide
    assert [r for _, _, r in rules(objects) if "leases" in r["resources"]] == role["rules"]
    assert environment(operator_container(objects))["AIDC_LEASE_NAME"] == "ops-aidc-operator"


def test_two_replicas_keep_one_through_a_drain_and_prefer_two_nodes() -> None:
    objects = render({}, release="ops")
    budget = one(objects, "PodDisruptionBudget")
    pod_labels = one(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert budget["spec"]["maxUnavailable"] == 1 and "minAvailable" not in budget["spec"]
    assert budget["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    spread = one(objects, "Deployment")["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
    (term,) = spread["preferredDuringSchedulingIgnoredDuringExecution"]
    assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert term["podAffinityTerm"]["labelSelector"]["matchLabels"] == budget["spec"]["selector"]["matchLabels"]
    own = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": []}}}
    assert one(render({"affinity": own}), "Deployment")["spec"]["template"]["spec"]["affinity"] == own


def test_one_replica_without_leader_election_is_recreated_and_has_no_budget_nor_lease() -> None:
    single = render({"replicas": 1, "leaderElection": {"enabled": False}})
    deployment = one(single, "Deployment")
    assert deployment["spec"]["replicas"] == 1 and deployment["spec"]["strategy"] == {"type": "Recreate"}
    assert not of_kind(single, "PodDisruptionBudget") and "affinity" not in deployment["spec"]["template"]["spec"]
    assert not [r for r in of_kind(single, "Role") if r["metadata"]["name"].endswith("-leader-election")]
    assert environment(operator_container(single))["AIDC_LEADER_ELECTION"] == "false"
    # one replica that still elects: a rollout's new pod waits for the old one's lease
    elected = render({"replicas": 1})
    assert one(elected, "Deployment")["spec"]["strategy"]["type"] == "RollingUpdate"
    assert not of_kind(elected, "PodDisruptionBudget")


@pytest.mark.parametrize(
    ("values", "complaint"),
    [
        ({"leaderElection": {"enabled": False}}, "replicas > 1 needs leaderElection.enabled"),
        ({"leaderElection": {"leaseDurationSeconds": 10}}, "must be longer than renewDeadlineSeconds"),
        ({"leaderElection": {"retryPeriodSeconds": 9}}, "longer than 1.2 x retryPeriodSeconds"),
    ],
)
def test_unsafe_replica_and_lease_settings_are_refused(values: dict[str, Any], complaint: str) -> None:
    path = values_file(values)
    try:
        result = helm("template", "x", str(CHART), "-f", str(path), check=False)
    finally:
        path.unlink()
    assert result.returncode != 0 and complaint in result.stderr, result.stderr


def test_the_chart_ships_exactly_the_generated_crds() -> None:
    generated = sorted((REPO_ROOT / "crds").glob("*.yaml"))
    shipped = sorted((CHART / "crds").glob("*.yaml"))
    assert [p.name for p in generated] == [p.name for p in shipped]
    for source, copy in zip(generated, shipped, strict=True):
        assert source.read_bytes() == copy.read_bytes(), f"{copy} differs from {source}: run `make crds`"
    rendered = {o["metadata"]["name"] for o in of_kind(render({}), "CustomResourceDefinition")}
    assert rendered == {"trainingjobs.aidc.io", "inferenceservices.aidc.io"}


def test_heartbeat_policy_is_rendered_unchanged_and_can_be_turned_off() -> None:
    template = CHART / "templates" / "heartbeat-policy.yaml"
    plain = [doc for doc in yaml.safe_load_all(template.read_text()) if doc]  # still plain YAML
    rendered = [o for o in render({}) if o["kind"].startswith("ValidatingAdmissionPolicy")]
    assert rendered == plain
    assert [o["kind"] for o in plain] == ["ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"]
    off = render({"heartbeatPolicy": {"enabled": False}})
    assert not [o for o in off if o["kind"].startswith("ValidatingAdmissionPolicy")]


@MODES
def test_network_policy_verbs_follow_the_setting(values: dict[str, Any]) -> None:
    """On: watched, created, kept in shape, read on a conflicting create. Off: only the index's watch."""

    def verbs(objects: list[dict[str, Any]]) -> set[str]:
        found = {verb for _, _, rule in rules(objects) for (group, resource, verb) in grants([rule])
                 if (group, resource) == ("networking.k8s.io", "networkpolicies")}  # fmt: skip
        return found

    assert verbs(render(values)) == {"get", "list", "watch", "create", "patch"}
    off = render({**values, "networkPolicy": {"enabled": False}})
    assert verbs(off) == {"list", "watch"}
    assert environment(operator_container(off))["AIDC_NETWORK_POLICY"] == "false"
    no_scraper = environment(operator_container(render({**values, "networkPolicy": {"metricsFrom": []}})))
    assert no_scraper["AIDC_NETWORK_POLICY_METRICS_FROM"] == "[]"


def test_service_monitor_is_optional() -> None:
    assert not of_kind(render({}), "ServiceMonitor")
    values = {"metrics": {"serviceMonitor": {"enabled": True, "interval": "15s", "labels": {"release": "prom"}}}}
    objects = render(values, release="ops")
    monitor = one(objects, "ServiceMonitor")
    service = one(objects, "Service")
    assert monitor["metadata"]["labels"]["release"] == "prom"
    assert monitor["spec"]["endpoints"] == [
        {"port": "metrics", "path": "/metrics", "honorLabels": True, "interval": "15s", "scrapeTimeout": "10s"}
    ]
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()


def _sanitized(label: str) -> str:
    """A pod label's name as Prometheus's Kubernetes discovery spells it (__meta_kubernetes_pod_label_<name>)."""
    return "__meta_kubernetes_pod_label_" + re.sub(r"[^a-zA-Z0-9_]", "_", label)


def test_pod_monitors_select_the_pods_the_operator_creates_and_name_their_resource() -> None:
    from aidc import contract
    from aidc.compute.gang import rank_labels
    from aidc.identity.labels import serving_labels
    from tests.factories import inference_service, training_job

    assert not of_kind(render({}), "PodMonitor")
    values = {"watchNamespaces": ["ml"], "metrics": {"podMonitors": {"enabled": True, "labels": {"release": "prom"}}}}
    trainers, servers = of_kind(render(values, release="ops"), "PodMonitor")
    job = training_job()
    rank0, rank1 = rank_labels(job, 0, 1), rank_labels(job, 1, 1)
    wanted = trainers["spec"]["selector"]["matchLabels"]
    assert wanted.items() <= rank0.items() and not wanted.items() <= rank1.items()  # rank 0 only serves metrics
    assert servers["spec"]["selector"]["matchLabels"].items() <= serving_labels(inference_service()).items()
    for monitor, port, label, target in (
        (trainers, "metrics", contract.LABEL_JOB_NAME, "trainingjob"),
        (servers, "http", contract.LABEL_SERVICE_NAME, "inferenceservice"),
    ):
        assert monitor["metadata"]["labels"]["release"] == "prom"
        assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["ml"]}
        (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
        assert (endpoint["port"], endpoint["path"]) == (port, "/metrics")
        assert {"sourceLabels": [_sanitized(label)], "targetLabel": target} in endpoint["relabelings"]
    everywhere = {"metrics": {"podMonitors": {"enabled": True, "serverScheme": "https"}}}
    _, secure = of_kind(render(everywhere), "PodMonitor")
    assert secure["spec"]["namespaceSelector"] == {"any": True}
    assert secure["spec"]["podMetricsEndpoints"][0]["scheme"] == "https"


def test_json_logs_are_a_value_away() -> None:
    assert "--log-format=json" not in operator_container(render({}))["args"]
    assert "--log-format=json" in operator_container(render({"operator": {"logFormat": "json"}}))["args"]


def test_helm_test_hook_fetches_healthz_through_the_service_with_the_operators_image() -> None:
    image = {"repository": "registry.example/aidc", "tag": "9", "pullPolicy": "Always"}
    objects = render({"image": image, "test": {"podAnnotations": {"a": "b"}}}, release="r")
    hook = next(o for o in of_kind(objects, "Pod") if o["metadata"]["annotations"].get("helm.sh/hook") == "test")
    assert hook["metadata"]["annotations"]["a"] == "b"
    container = hook["spec"]["containers"][0]
    operator = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == operator["image"] == "registry.example/aidc:9"
    assert container["imagePullPolicy"] == "Always"
    assert container["command"][:2] == ["python", "-c"]
    assert container["command"][-1] == "http://r-aidc-operator.aidc-system.svc:8080/healthz"
    assert hook["spec"]["restartPolicy"] == "Never"
    # the operator's Service must not select the test pod
    selector = one(objects, "Service")["spec"]["selector"]
    assert not selector.items() <= hook["metadata"]["labels"].items()


def test_helm_test_hook_runs_where_the_operator_may() -> None:
    placement = {"nodeSelector": {"pool": "system"}, "tolerations": [{"key": "pool", "operator": "Exists"}]}
    hook = next(o for o in of_kind(render(placement), "Pod") if o["metadata"]["annotations"].get("helm.sh/hook"))
    assert hook["spec"]["nodeSelector"] == {"pool": "system"}
    assert hook["spec"]["tolerations"] == [{"key": "pool", "operator": "Exists"}]


@pytest.mark.parametrize(
    ("values", "complaint"),
    [
        ({"replica": 2}, "additional properties 'replica' not allowed"),
        ({"replicas": 0}, "replicas"),
        ({"leaderElection": {"leaseDurationSeconds": 1}}, "leaseDurationSeconds"),
        ({"image": {"repository": "x", "pullPolicy": "Sometimes"}}, "pullPolicy"),
        ({"watchNamespaces": ["Not_A_Namespace"]}, "does not match pattern"),
        ({"operator": {"resyncSeconds": 0}}, "resyncSeconds"),
        ({"metrics": {"port": 70000}}, "port"),
        ({"metrics": {"serviceMonitor": {"enabled": "yes"}}}, "enabled"),
        ({"trainerImage": ""}, "trainerImage"),
        ({"networkPolicy": {"enabled": "yes"}}, "enabled"),
        ({"networkPolicy": {"metricsFrom": [{"namespace": "monitoring"}]}}, "namespace"),
        (
            {
                "networkPolicy": {
                    "metricsFrom": [{"podSelector": {"matchExpressions": [{"key": "a", "operator": "Gt"}]}}]
                }
            },
            "operator",
        ),
    ],
)
def test_schema_refuses_unknown_keys_and_bad_values(values: dict[str, Any], complaint: str) -> None:
    path = values_file(values)
    try:
        result = helm("template", "x", str(CHART), "-f", str(path), check=False)
    finally:
        path.unlink()
    assert result.returncode != 0
    assert complaint in result.stderr


def test_default_values_and_schema_agree() -> None:
    """Every key of values.yaml is in the schema: a strict schema must not refuse the defaults."""
    import json

    schema = json.loads((CHART / "values.schema.json").read_text())
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    assert set(defaults) <= set(schema["properties"])
    assert schema["additionalProperties"] is False


def test_chart_metadata() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert (chart["apiVersion"], chart["version"], chart["appVersion"]) == ("v2", "0.1.0", "0.1.0")
    assert Path(CHART / "templates" / "NOTES.txt").is_file()


@pytest.mark.parametrize(
    ("name", "value", "complaint"),
    [
        ("AIDC_NETWORK_POLICY", "yes", "must be true or false"),
        ("AIDC_NETWORK_POLICY_METRICS_FROM", '{"namespaceSelector": {}}', "JSON list of NetworkPolicy peers"),
        ("AIDC_NETWORK_POLICY_METRICS_FROM", '["monitoring"]', "JSON list of NetworkPolicy peers"),
    ],
)
def test_a_network_policy_setting_the_operator_cannot_read_stops_it(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, complaint: str
) -> None:
    """Set by hand (the kustomize base, `aidc run`) rather than by the chart's schema: refused at start-up,
    not read as "off" (a typo must not open the cluster)."""
    monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=complaint):
        OperatorSettings.from_env()
