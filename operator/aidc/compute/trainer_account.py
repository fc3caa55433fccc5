"""The identity rank 0 reports its heartbeat with, and why it is this narrow.

The heartbeat (``aidc_trainer.heartbeat``) is one JSON merge PATCH of the ``aidc.io/progress``
annotation of the sender's own pod; it never reads a pod. So:

- Rank pods run as the ServiceAccount ``aidc-trainer`` of their namespace, whose Role allows
  ``patch`` on pods and nothing else: no ``get``, ``list`` or ``watch``, so a token reads no
  pod (a PATCH answers with the pod it changed, and admission lets it change only its own).
- Only the pod of node rank 0 holds a token (``automountServiceAccountToken: false`` on the
  others): the global rank 0 that sends the heartbeat runs there, the other ranks never call
  the API server.
- RBAC cannot name "the pod this token is bound to", so the ValidatingAdmissionPolicy shipped
  with the chart (``aidc-trainer-heartbeat``) does: it compares the pod name bound into the
  token with the pod written, and refuses any change but that one annotation (spec, labels,
  other annotations, finalizers, ownerReferences, generateName, other managers' field records).

Why not a ServiceAccount and Role per job with ``resourceNames`` = the gang's pod names: it
would still not be the pod's own name per token (only the admission policy is), it would only
matter where the policy is switched off, and it costs three more writes per job, on the path
to the gang's first pod (a pod is refused until its ServiceAccount exists).
"""

from __future__ import annotations

from typing import Any

from aidc import contract

TRAINER_SERVICE_ACCOUNT = "aidc-trainer"
# the node rank whose pod runs global rank 0, the one that sends the heartbeat
HEARTBEAT_NODE_RANK = 0
_LABELS = {contract.LABEL_APP_PART_OF: contract.APP_PART_OF, contract.LABEL_APP_MANAGED_BY: contract.OPERATOR_NAME}


def trainer_role(namespace: str) -> dict[str, Any]:
    """The Role of the trainer: patch pods, and nothing else (the policy narrows it further).

    Applied rather than created, so a Role an older operator made with ``get`` loses it.
    """
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": TRAINER_SERVICE_ACCOUNT, "namespace": namespace, "labels": dict(_LABELS)},
        "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["patch"]}],
    }


def trainer_identity(namespace: str) -> list[dict[str, Any]]:
    """ServiceAccount, Role and RoleBinding of the trainer in ``namespace``."""
    meta = {"name": TRAINER_SERVICE_ACCOUNT, "namespace": namespace, "labels": dict(_LABELS)}
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": dict(meta)},
        trainer_role(namespace),
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": dict(meta),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": TRAINER_SERVICE_ACCOUNT},
            "subjects": [{"kind": "ServiceAccount", "name": TRAINER_SERVICE_ACCOUNT, "namespace": namespace}],
        },
    ]


def token_fields(rank: int, template_spec: dict[str, Any]) -> dict[str, Any]:
    """The pod-spec fields of the identity of node rank ``rank``.

    A user's own ``serviceAccountName`` (and its rights) replaces ours, and a user's own
    ``automountServiceAccountToken`` is left alone: both are the user's decision, for every rank.
    """
    if "serviceAccountName" in template_spec:
        return {"serviceAccountName": template_spec["serviceAccountName"]}
    fields: dict[str, Any] = {"serviceAccountName": TRAINER_SERVICE_ACCOUNT}
    if rank != HEARTBEAT_NODE_RANK and "automountServiceAccountToken" not in template_spec:
        fields["automountServiceAccountToken"] = False
    return fields
