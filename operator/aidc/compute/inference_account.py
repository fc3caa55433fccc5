"""The identity of model servers that check their callers' Kubernetes tokens (``spec.auth.kubernetes``).

Such a server asks the API server two questions per new caller: a TokenReview (who is this?) and
a SubjectAccessReview (may they infer?). Both are cluster-scoped ``create`` calls, so the
ServiceAccount ``aidc-inference`` of each namespace gets a ClusterRoleBinding to the chart's
reviewer ClusterRole, which allows exactly those two creates (the ``system:auth-delegator``
rights). The operator holds ``bind`` on that one role only, so it cannot hand out anything else.
Servers without Kubernetes auth keep running with no API token at all.
"""

from __future__ import annotations

from typing import Any

from aidc import contract

INFERENCE_SERVICE_ACCOUNT = "aidc-inference"
_LABELS = {contract.LABEL_APP_PART_OF: contract.APP_PART_OF, contract.LABEL_APP_MANAGED_BY: contract.OPERATOR_NAME}


def reviewer_binding_name(reviewer_role: str, namespace: str) -> str:
    """One binding per namespace and per release (the role is named after the release)."""
    return f"{reviewer_role}-{namespace}"


def inference_identity(namespace: str, reviewer_role: str) -> list[dict[str, Any]]:
    """The ServiceAccount of ``namespace``'s authenticating servers and its ClusterRoleBinding."""
    return [
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": INFERENCE_SERVICE_ACCOUNT, "namespace": namespace, "labels": dict(_LABELS)},
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": reviewer_binding_name(reviewer_role, namespace), "labels": dict(_LABELS)},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": reviewer_role},
            "subjects": [{"kind": "ServiceAccount", "name": INFERENCE_SERVICE_ACCOUNT, "namespace": namespace}],
        },
    ]
