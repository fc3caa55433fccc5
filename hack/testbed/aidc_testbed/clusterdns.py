"""Cluster DNS for real nodes: CoreDNS as a Deployment in kube-system behind the Service 10.96.0.10.

It answers the cluster's names only (``<pod>.<subdomain>.<ns>.svc.cluster.local`` of a headless
Service, Service names, ``kubernetes.default``): there is no ``forward``, so a name outside the
cluster fails at once and nothing leaves the machine (and no ``loop``, which would need one). It
listens on 1053 so it runs as a non-root user without capabilities; the Service maps 53 onto it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from aidc_testbed import health
from aidc_testbed.realnodes import CLUSTER_DNS, CLUSTER_DOMAIN, placement

NAMESPACE = "kube-system"
NAME = "coredns"
PORT = 1053
WATCH = ["list", "watch"]
COREFILE = f""".:{PORT} {{
    errors
    health :8080
    ready :8181
    kubernetes {CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
        ttl 5
    }}
    cache 5
}}
"""


def manifests(image: str) -> list[dict[str, Any]]:
    labels = {"k8s-app": "kube-dns"}
    meta = {"name": NAME, "namespace": NAMESPACE}
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": "system:coredns"},
            "rules": [
                {"apiGroups": [""], "resources": ["endpoints", "services", "pods", "namespaces"], "verbs": WATCH},
                {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": WATCH},
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "system:coredns"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:coredns"},
            "subjects": [{"kind": "ServiceAccount", "name": NAME, "namespace": NAMESPACE}],
        },
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": {"Corefile": COREFILE}},
        _deployment(meta, labels, image),
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "kube-dns", "namespace": NAMESPACE, "labels": labels},
            "spec": {
                "clusterIP": CLUSTER_DNS,
                "selector": labels,
                "ports": [
                    {"name": "dns", "port": 53, "targetPort": PORT, "protocol": "UDP"},
                    {"name": "dns-tcp", "port": 53, "targetPort": PORT, "protocol": "TCP"},
                ],
            },
        },
    ]


def _deployment(meta: dict[str, str], labels: dict[str, str], image: str) -> dict[str, Any]:
    container = {
        "name": "coredns",
        "image": image,
        "imagePullPolicy": "Never",
        "args": ["-conf", "/etc/coredns/Corefile"],
        "ports": [{"containerPort": PORT, "protocol": "UDP"}, {"containerPort": PORT, "protocol": "TCP"}],
        "readinessProbe": {"httpGet": {"path": "/ready", "port": 8181}, "periodSeconds": 1},
        "livenessProbe": {"httpGet": {"path": "/health", "port": 8080}, "periodSeconds": 10},
        "resources": {"requests": {"cpu": "50m", "memory": "32Mi"}, "limits": {"memory": "128Mi"}},
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 65532,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [{"name": "config", "mountPath": "/etc/coredns", "readOnly": True}],
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {**meta, "labels": labels},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "serviceAccountName": NAME,
                    "dnsPolicy": "Default",
                    "priorityClassName": "system-cluster-critical",
                    **placement(),
                    "containers": [container],
                    "volumes": [{"name": "config", "configMap": {"name": NAME}}],
                },
            },
        },
    }


def install(api: client.ApiClient, *, image: str) -> None:
    """Create what :func:`manifests` lists (what exists already is left as it is)."""
    for manifest in manifests(image):
        try:
            _create(api, manifest)
        except ApiException as error:
            if error.status != 409:
                raise


def _create(api: client.ApiClient, manifest: dict[str, Any]) -> None:
    kind, namespace = manifest["kind"], manifest["metadata"].get("namespace")
    core, apps, rbac = client.CoreV1Api(api), client.AppsV1Api(api), client.RbacAuthorizationV1Api(api)
    create = {
        "ServiceAccount": lambda: core.create_namespaced_service_account(namespace, manifest),
        "ConfigMap": lambda: core.create_namespaced_config_map(namespace, manifest),
        "Service": lambda: core.create_namespaced_service(namespace, manifest),
        "Deployment": lambda: apps.create_namespaced_deployment(namespace, manifest),
        "ClusterRole": lambda: rbac.create_cluster_role(manifest),
        "ClusterRoleBinding": lambda: rbac.create_cluster_role_binding(manifest),
    }[kind]
    create()


def wait_ready(api: client.ApiClient, timeout: float, abort: Callable[[], str | None]) -> None:
    apps = client.AppsV1Api(api)

    def ready() -> bool | None:
        status = apps.read_namespaced_deployment_status(NAME, NAMESPACE).status
        return True if (status.ready_replicas or 0) >= 1 else None

    health.poll(ready, timeout=timeout, what="CoreDNS Ready", abort=abort, interval=0.5)
