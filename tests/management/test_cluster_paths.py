"""Where the operator POSTs what it creates (its lean create path builds the URL itself)."""

from __future__ import annotations

from typing import Any

import pytest

from aidc.compute.trainer_account import trainer_identity
from aidc.management.cluster import _PLURALS, _path


def obj(api_version: str, kind: str) -> dict[str, Any]:
    return {"apiVersion": api_version, "kind": kind, "metadata": {"name": "x", "namespace": "ml"}}


@pytest.mark.parametrize(
    ("api_version", "kind", "expected"),
    [
        ("v1", "Pod", "/api/v1/namespaces/ml/pods"),
        ("v1", "PersistentVolumeClaim", "/api/v1/namespaces/ml/persistentvolumeclaims"),
        (
            "rbac.authorization.k8s.io/v1",
            "RoleBinding",
            "/apis/rbac.authorization.k8s.io/v1/namespaces/ml/rolebindings",
        ),
        ("apps/v1", "Deployment", "/apis/apps/v1/namespaces/ml/deployments"),
        ("autoscaling/v2", "HorizontalPodAutoscaler", "/apis/autoscaling/v2/namespaces/ml/horizontalpodautoscalers"),
        ("scheduling.volcano.sh/v1beta1", "PodGroup", "/apis/scheduling.volcano.sh/v1beta1/namespaces/ml/podgroups"),
        (
            "snapshot.storage.k8s.io/v1",
            "VolumeSnapshot",
            "/apis/snapshot.storage.k8s.io/v1/namespaces/ml/volumesnapshots",
        ),
    ],
)
def test_collection_paths(api_version: str, kind: str, expected: str) -> None:
    assert _path(obj(api_version, kind), _PLURALS.get(kind) or kind.lower() + "s") == expected


def test_an_event_without_api_version_goes_to_core() -> None:
    assert _path({"metadata": {"namespace": "ml"}}, "events") == "/api/v1/namespaces/ml/events"


def test_every_identity_object_has_a_known_plural() -> None:
    assert {o["kind"] for o in trainer_identity("ml")} <= set(_PLURALS)
