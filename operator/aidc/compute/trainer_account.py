"""The identity rank 0 reports its heartbeat with.

Rank pods run as the ServiceAccount ``aidc-trainer`` of their namespace, whose Role allows
``get`` and ``patch`` on pods. That alone would let a pod patch any pod of the namespace; the
ValidatingAdmissionPolicy shipped with the chart (``aidc-trainer-heartbeat``) narrows it to
the ``aidc.io/progress`` annotation of the pod the token is bound to.
"""

from __future__ import annotations

from typing import Any

from aidc import contract

TRAINER_SERVICE_ACCOUNT = "aidc-trainer"
_LABELS = {contract.LABEL_APP_PART_OF: contract.APP_PART_OF, contract.LABEL_APP_MANAGED_BY: contract.OPERATOR_NAME}


def trainer_identity(namespace: str) -> list[dict[str, Any]]:
    """ServiceAccount, Role and RoleBinding of the trainer in ``namespace``."""
    meta = {"name": TRAINER_SERVICE_ACCOUNT, "namespace": namespace, "labels": dict(_LABELS)}
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": dict(meta)},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": dict(meta),
            "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "patch"]}],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": dict(meta),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": TRAINER_SERVICE_ACCOUNT},
            "subjects": [{"kind": "ServiceAccount", "name": TRAINER_SERVICE_ACCOUNT, "namespace": namespace}],
        },
    ]
