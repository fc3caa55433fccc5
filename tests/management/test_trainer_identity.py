"""The trainer's identity as the gang's pods carry it: only rank 0's pod holds a token, its Role
may only patch pods; a user's own ServiceAccount or token setting is theirs for every rank.
What the token may do on a real API server is tests/cluster/test_heartbeat_policy.py."""

from __future__ import annotations

from typing import Any

import pytest

from aidc.compute.gang import gang_pods
from aidc.compute.trainer_account import TRAINER_SERVICE_ACCOUNT, trainer_identity, trainer_role
from aidc.settings import OperatorSettings
from tests.factories import training_job

OURS = TRAINER_SERVICE_ACCOUNT


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ({}, [(OURS, None), (OURS, False), (OURS, False)]),
        ({"serviceAccountName": "team"}, [("team", None)] * 3),
        ({"automountServiceAccountToken": True}, [(OURS, True)] * 3),
        ({"automountServiceAccountToken": False}, [(OURS, False)] * 3),
        ({"serviceAccountName": "team", "automountServiceAccountToken": False}, [("team", False)] * 3),
    ],
    ids=["ours", "user-account", "user-wants-tokens", "user-wants-none", "user-account-without-token"],
)
def test_only_rank_zero_holds_our_token(template: dict[str, Any], expected: list[tuple[str, bool | None]]) -> None:
    job = training_job(spec={"replicas": 3, "podTemplate": {"spec": template}})
    found = [
        (pod["spec"]["serviceAccountName"], pod["spec"].get("automountServiceAccountToken"))
        for pod in gang_pods(job, 0, OperatorSettings())
    ]
    assert found == expected


def test_the_role_may_only_patch_pods() -> None:
    role = trainer_role("ml")
    assert role["rules"] == [{"apiGroups": [""], "resources": ["pods"], "verbs": ["patch"]}]
    assert [o["kind"] for o in trainer_identity("ml")] == ["ServiceAccount", "Role", "RoleBinding"]
    binding = trainer_identity("ml")[2]
    assert binding["roleRef"]["name"] == role["metadata"]["name"] == OURS
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": OURS, "namespace": "ml"}]
