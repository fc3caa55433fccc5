"""Reinforcement-learning policies behind the server: CartPole (discrete) and Pendulum (continuous).

Each export comes from the real trainer (one PPO iteration); the answers are checked against the
exported module run directly, over real HTTP (OIP v2 and KServe v1), with several requests at
once so they are batched.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from aidc_trainer import contract
from aidc_trainer.export import load_exported, read_manifest, write_export
from tests.serving.harness import train
from tests.serving.test_tasks import Call, serve_and

pytestmark = pytest.mark.trainer


def _policy_export(directory: Path, gymnasium_id: str) -> Path:
    block = {
        "environment": {"gymnasiumId": gymnasium_id},
        "totalSteps": 64,
        "envsPerRank": 2,
        "rolloutSteps": 32,
        "evaluationEpisodes": 1,
    }
    return train("reinforcement-learning", directory, {"reinforcementLearning": block})


@pytest.fixture(scope="module")
def cartpole_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _policy_export(tmp_path_factory.mktemp("cartpole"), "CartPole-v1")


@pytest.fixture(scope="module")
def pendulum_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The trained export with the actor's output shifted, so some means leave [-2, 2]."""
    trained = _policy_export(tmp_path_factory.mktemp("pendulum"), "Pendulum-v1")
    state = torch.load(trained / contract.MODEL_WEIGHTS, map_location="cpu", weights_only=True)
    state["actor.4.weight"] = state["actor.4.weight"] * 400
    directory = tmp_path_factory.mktemp("shifted") / "final"
    write_export(directory, state, read_manifest(trained))
    return directory


def _observations(rows: int, dim: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((rows, dim)).astype(np.float32)


def _outputs(body: dict[str, Any]) -> dict[str, np.ndarray]:
    return {o["name"]: np.array(o["data"]).reshape(o["shape"]) for o in body["outputs"]}


def test_discrete_policy_serves_action_probabilities_and_value(cartpole_export: Path) -> None:
    module, manifest = load_exported(cartpole_export, "cpu")
    assert manifest["task"] == "reinforcement-learning"
    assert manifest["architecture"]["actionSpace"] == {"type": "Discrete", "n": 2, "start": 0}
    assert "evaluationReturn" in manifest["metrics"]
    batches = [_observations(rows, 4, seed) for seed, rows in enumerate([3, 1, 5])]

    async def scenario(call: Call) -> None:
        status, meta = await call("/v2/models/m", None)
        assert status == 200 and meta["inputs"] == [{"name": "observation", "datatype": "FP32", "shape": [-1, 4]}]
        assert [o["name"] for o in meta["outputs"]] == ["action", "probabilities", "value"]
        requests = [
            call(
                "/v2/models/m/infer",
                {"inputs": [{"name": "observation", "shape": list(b.shape), "datatype": "FP32", "data": b.tolist()}]},
            )
            for b in batches
        ]
        for observations, (status, body) in zip(batches, await asyncio.gather(*requests), strict=True):
            assert status == 200, body
            got = _outputs(body)
            with torch.inference_mode():
                logits, value = module(torch.from_numpy(observations))
            probabilities = torch.softmax(logits, -1).numpy()
            np.testing.assert_allclose(got["probabilities"], probabilities, atol=1e-5)
            np.testing.assert_allclose(got["value"], value.numpy(), atol=1e-5)
            assert got["action"].tolist() == probabilities.argmax(-1).tolist()
            assert body["outputs"][0]["datatype"] == "INT64"
        status, body = await call("/v1/models/m:predict", {"instances": batches[0].tolist()})
        assert status == 200 and len(body["predictions"]) == 3
        assert set(body["predictions"][0]) == {"action", "probabilities", "value"}
        status, refused = await call(
            "/v2/models/m/infer",
            {"inputs": [{"name": "observation", "shape": [1, 3], "datatype": "FP32", "data": [0, 0, 0]}]},
        )
        assert status == 400, refused

    serve_and(cartpole_export, scenario)


def test_continuous_policy_serves_a_clipped_mean_its_std_and_value(pendulum_export: Path) -> None:
    module, manifest = load_exported(pendulum_export, "cpu")
    assert manifest["architecture"]["actionSpace"] == {"type": "Box", "shape": [1], "low": [-2.0], "high": [2.0]}
    observations = _observations(8, 3, 9)

    async def scenario(call: Call) -> None:
        status, meta = await call("/v2/models/m", None)
        assert [o["name"] for o in meta["outputs"]] == ["action", "mean", "std", "value"]
        body_in = {
            "inputs": [{"name": "observation", "shape": [8, 3], "datatype": "FP32", "data": observations.tolist()}]
        }
        status, body = await call("/v2/models/m/infer", body_in)
        assert status == 200, body
        got = _outputs(body)
        with torch.inference_mode():
            mean, value = module(torch.from_numpy(observations))
            std = module.log_std.exp().expand_as(mean)
        np.testing.assert_allclose(got["mean"], mean.numpy(), atol=1e-5)
        np.testing.assert_allclose(got["std"], std.numpy(), atol=1e-5)
        np.testing.assert_allclose(got["value"], value.numpy(), atol=1e-4)
        assert (np.abs(mean.numpy()) > 2).any() and (np.abs(mean.numpy()) < 2).any()
        np.testing.assert_allclose(got["action"], np.clip(mean.numpy(), -2, 2), atol=1e-5)
        assert got["action"].shape == (8, 1)
        status, body = await call("/v1/models/m:predict", {"instances": observations[:2].tolist()})
        assert status == 200 and set(body["predictions"][0]) == {"action", "mean", "std", "value"}

    serve_and(pendulum_export, scenario)
