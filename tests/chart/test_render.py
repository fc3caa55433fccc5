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

NAMESPACED = {"watchNamespaces": ["team-a", "team-b"]}
MODES = pytest.mark.parametrize("values", [{}, NAMESPACED], ids=["cluster-wide", "namespaced"])


def test_lint_is_clean_in_strict_mode() -> None:
    for values in ({}, NAMESPACED, {"metrics": {"serviceMonitor": {"enabled": True}}}):
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
        if "bind" in rule["verbs"] or "resourceNames" in rule:  # bind the reviewer role, nothing else
            assert rule == {
                "apiGroups": ["rbac.authorization.k8s.io"], "resources": ["clusterroles"], "verbs": ["bind"],
                "resourceNames": ["aidc-operator-inference-reviewer"],
            }, rule  # fmt: skip
    assert "secrets" not in text  # not in a rule, not in an env var, not in a volume


def test_cluster_wide_mode_binds_one_cluster_role_with_everything() -> None:
    objects = render({})
    assert not of_kind(objects, "Role") and not of_kind(objects, "RoleBinding")
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
    roles, bindings = of_kind(objects, "Role"), of_kind(objects, "RoleBinding")
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
    """RBAC forbids granting what one does not hold: the trainer's Role needs get/patch on pods."""
    from aidc.compute.trainer_account import trainer_identity

    trainer_role = next(o for o in trainer_identity("ns") if o["kind"] == "Role")
    for values in ({}, NAMESPACED):
        held = {g for _, _, rule in rules(render(values)) for g in grants([rule])}
        assert grants(trainer_role["rules"]) <= held


@MODES
def test_deployment_is_one_hardened_replica_replaced_by_recreate(values: dict[str, Any]) -> None:
    objects = render(values)
    deployment = one(objects, "Deployment")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
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
    }
    env = environment(operator_container(render(values)))
    source = (REPO_ROOT / "operator" / "aidc" / "settings.py").read_text()
    assert set(env) == set(re.findall(r'"(AIDC_[A-Z_]+)"', source))
    for name in [n for n in os.environ if n.startswith("AIDC_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
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
    }
    assert {field: getattr(settings, field) for field in expected} == expected
    # the operator's Service follows the ports
    service_ports = {p["name"]: (p["port"], p["targetPort"]) for p in one(render(values), "Service")["spec"]["ports"]}
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
    ]
    plain = {k: getattr(OperatorSettings(), k) for k in knobs}
    for install, settings in installs.items():
        assert {k: getattr(settings, k) for k in knobs} == plain, install


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


def test_service_monitor_is_optional() -> None:
    assert not of_kind(render({}), "ServiceMonitor")
    values = {"metrics": {"serviceMonitor": {"enabled": True, "interval": "15s", "labels": {"release": "prom"}}}}
    objects = render(values, release="ops")
    monitor = one(objects, "ServiceMonitor")
    service = one(objects, "Service")
    assert monitor["metadata"]["labels"]["release"] == "prom"
    assert monitor["spec"]["endpoints"] == [
        {"port": "metrics", "path": "/metrics", "interval": "15s", "scrapeTimeout": "10s"}
    ]
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()


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
        ({"replicas": 2}, "additional properties 'replicas' not allowed"),
        ({"image": {"repository": "x", "pullPolicy": "Sometimes"}}, "pullPolicy"),
        ({"watchNamespaces": ["Not_A_Namespace"]}, "does not match pattern"),
        ({"operator": {"resyncSeconds": 0}}, "resyncSeconds"),
        ({"metrics": {"port": 70000}}, "port"),
        ({"metrics": {"serviceMonitor": {"enabled": "yes"}}}, "enabled"),
        ({"trainerImage": ""}, "trainerImage"),
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
