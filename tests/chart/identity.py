"""Acting as a ServiceAccount of the test bed: a TokenRequest, a kubeconfig, a client, an access review.

The API server's URL and CA come from the admin kubeconfig; only the credential differs, so
whatever the token may do is exactly what RBAC grants that ServiceAccount.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from kubernetes import client

TOKEN_SECONDS = 3600


def request_token(kube: client.ApiClient, namespace: str, service_account: str) -> str:
    """A short-lived token of ``namespace/service_account`` (TokenRequest, not a Secret)."""
    request = {"spec": {"audiences": [], "expirationSeconds": TOKEN_SECONDS}}
    answer = client.CoreV1Api(kube).create_namespaced_service_account_token(service_account, namespace, request)
    return str(answer.status.token)


def write_token_kubeconfig(admin_kubeconfig: Path, token: str, path: Path) -> Path:
    """A kubeconfig with the admin kubeconfig's cluster (server and CA) and ``token`` as the user."""
    admin = yaml.safe_load(admin_kubeconfig.read_text())
    context = next(c for c in admin["contexts"] if c["name"] == admin["current-context"])["context"]
    cluster = next(c for c in admin["clusters"] if c["name"] == context["cluster"])
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [cluster],
        "users": [{"name": "service-account", "user": {"token": token}}],
        "contexts": [{"name": "service-account", "context": {"cluster": cluster["name"], "user": "service-account"}}],
        "current-context": "service-account",
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    path.chmod(0o600)
    return path


def client_for_token(kube: client.ApiClient, token: str) -> client.ApiClient:
    """An ApiClient to the same API server as ``kube``, authenticated by ``token`` only."""
    admin = kube.configuration
    configuration = client.Configuration()
    configuration.host = admin.host
    configuration.ssl_ca_cert = admin.ssl_ca_cert
    configuration.verify_ssl = admin.verify_ssl
    configuration.api_key = {"authorization": f"Bearer {token}"}
    return client.ApiClient(configuration)


def service_account_may(
    kube: client.ApiClient,
    namespace: str,
    service_account: str,
    verb: str,
    resource: str,
    group: str = "",
    in_namespace: str | None = None,
    subresource: str | None = None,
    name: str | None = None,
) -> bool:
    """What a SubjectAccessReview answers for the ServiceAccount; ``in_namespace`` None asks cluster-wide."""
    attributes: dict[str, Any] = {"verb": verb, "resource": resource, "group": group}
    if name is not None:
        attributes["name"] = name
    if in_namespace is not None:
        attributes["namespace"] = in_namespace
    if subresource is not None:
        attributes["subresource"] = subresource
    review = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SubjectAccessReview",
        "spec": {
            "user": f"system:serviceaccount:{namespace}:{service_account}",
            "groups": ["system:serviceaccounts", f"system:serviceaccounts:{namespace}", "system:authenticated"],
            "resourceAttributes": attributes,
        },
    }
    answer = client.AuthorizationV1Api(kube).create_subject_access_review(review)
    return bool(answer.status.allowed)
