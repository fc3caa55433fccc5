"""FSDP on the real node: a gang of two trainer-image ranks shards the language model, each rank
writes its shards of every checkpoint into the claim the operator mounted on both, and rank 0
exports one consolidated model; the status reports the sharded checkpoint.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from kubernetes import client

from tests.cluster.resources import condition_is, create
from tests.e2e.conftest import Release
from tests.e2e.test_real_nodes import TJ, claim_folder, finished, training_job, unique

pytestmark = pytest.mark.e2e


def test_an_fsdp_gang_writes_a_shard_per_rank_and_exports_one_model(
    kube: client.ApiClient, release: Release, wait_for: Callable[..., Any]
) -> None:
    namespace, job = release.watched, unique("fsdp")
    body = training_job(job, max_steps=10, every_steps=5)
    body["spec"]["trainer"] = {
        "task": "language-model", "dataset": {"source": "synthetic", "samples": 256}, "maxSteps": 10, "epochs": 100,
        "batchSize": 8, "seed": 0, "languageModel": {"contextLength": 32, "layers": 2, "heads": 2, "embedding": 32},
        "parallelism": {"strategy": "FSDP"},
    }  # fmt: skip
    create(kube, namespace, TJ, body)
    done = finished(kube, namespace, job, wait_for)
    assert condition_is(done, "Succeeded"), json.dumps(done["status"]["conditions"])
    for rank in (0, 1):  # the claim is on every rank, not only on rank 0 as under DDP
        pod = client.CoreV1Api(kube).read_namespaced_pod(f"{job}-{rank}", namespace)
        assert any(v.persistent_volume_claim for v in pod.spec.volumes or []), rank
    folder = claim_folder(kube, namespace, f"{job}-checkpoints") / job
    assert sorted(p.name for p in folder.glob("ckpt-*")) == ["ckpt-000000005", "ckpt-000000010"]
    assert sorted(p.name for p in (folder / "ckpt-000000010").glob("*.distcp")) == ["__0_0.distcp", "__1_0.distcp"]
    assert (folder / "latest").read_text().strip() == "ckpt-000000010"
    assert (folder / "export" / "final" / "model.pt").stat().st_uid == 1000
    assert done["status"]["checkpoint"]["step"] == 10
    assert done["status"]["checkpoint"]["path"].endswith("ckpt-000000010")
