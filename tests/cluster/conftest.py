"""Fixtures of the cluster tests beyond the shared ones in tests/conftest.py."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from kubernetes import client

_QUANTITY = {"anyOf": [{"type": "integer"}, {"type": "string"}], "x-kubernetes-int-or-string": True}


def _podgroup_crd(group: str, version: str, spec_properties: dict[str, Any]) -> dict[str, Any]:
    """A minimal PodGroup CRD with the fields the real one validates (no preserve-unknown: typos are pruned)."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"podgroups.{group}"},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"kind": "PodGroup", "plural": "podgroups", "singular": "podgroup", "listKind": "PodGroupList"},
            "versions": [{
                "name": version, "served": True, "storage": True,
                "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                    "spec": {"type": "object", "properties": spec_properties},
                    "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                }}},
            }],
        },
    }  # fmt: skip


@pytest.fixture(scope="session")
def podgroup_crds(kube: client.ApiClient, wait_for: Callable[..., Any]) -> None:
    """Volcano's PodGroup CRD, trimmed to the fields its schema defines (no Volcano runs: the objects are
    only checked for being accepted). scheduler-plugins' real CRD comes with its scheduler
    (``aidc_testbed.scheduler_plugins``, tests/cluster/test_coscheduling.py)."""
    resources = {"type": "object", "additionalProperties": _QUANTITY}
    crds = [
        _podgroup_crd("scheduling.volcano.sh", "v1beta1", {
            "minMember": {"type": "integer", "format": "int32"}, "minResources": resources,
            "queue": {"type": "string"}, "priorityClassName": {"type": "string"},
            "minTaskMember": {"type": "object", "additionalProperties": {"type": "integer"}},
        }),
    ]  # fmt: skip
    api = client.ApiextensionsV1Api(kube)
    for crd in crds:
        api.patch_custom_resource_definition(
            crd["metadata"]["name"],
            crd,
            field_manager="aidc-tests",
            force=True,
            _content_type="application/apply-patch+yaml",
        )
    for crd in crds:
        name = crd["metadata"]["name"]
        wait_for(
            lambda name=name: any(
                c.type == "Established" and c.status == "True"
                for c in api.read_custom_resource_definition(name).status.conditions or []
            )
        )
