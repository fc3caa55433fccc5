"""The GAN and the language model behind the same server: exports trained for a couple of steps.

The answers are checked against the same export run directly in the test, so what is tested is
the serving path (decoding, batching, pre- and post-processing), not the models' quality.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
import torch

from aidc_trainer import contract
from aidc_trainer.export import load_exported, read_manifest, write_export
from aidc_trainer.serving.model import load_model
from tests.serving.harness import in_process_server

pytestmark = pytest.mark.trainer

Call = Callable[[str, Any], Awaitable[tuple[int, Any]]]


def serve_and(export: Path, scenario: Callable[[Call], Awaitable[None]]) -> None:
    """Serve ``export`` in-process (real loader, real lifecycle) and run ``scenario`` against it."""

    async def run() -> None:
        async with in_process_server(partial(load_model, export, "cpu"), max_delay=0.02) as server:
            await asyncio.wait_for(server.loading, 60)
            async with aiohttp.ClientSession(server.url) as session:

                async def call(path: str, body: Any) -> tuple[int, Any]:
                    method = session.get(path) if body is None else session.post(path, json=body)
                    async with method as response:
                        return response.status, await response.json()

                await scenario(call)

    asyncio.run(run())


def test_gan_generates_from_latent_noise_or_a_count(gan_export: Path) -> None:
    generator, _ = load_exported(gan_export, "cpu")
    latent = np.random.default_rng(0).standard_normal((2, 64)).astype(np.float32)
    with torch.inference_mode():
        reference = generator(torch.from_numpy(latent)).numpy()

    async def scenario(call: Call) -> None:
        status, meta = await call("/v2/models/m", None)
        assert status == 200
        assert meta["inputs"] == [
            {"name": "latent", "datatype": "FP32", "shape": [-1, 64]},
            {"name": "n", "datatype": "INT64", "shape": [1]},
        ]
        assert meta["outputs"] == [{"name": "image", "datatype": "FP32", "shape": [-1, 1, 28, 28]}]
        latent_input = {"name": "latent", "shape": [2, 64], "datatype": "FP32", "data": latent.tolist()}
        status, body = await call("/v2/models/m/infer", {"inputs": [latent_input]})
        assert status == 200 and body["outputs"][0]["shape"] == [2, 1, 28, 28]
        np.testing.assert_allclose(np.array(body["outputs"][0]["data"]).reshape(reference.shape), reference, atol=1e-5)
        count = {"name": "n", "shape": [1], "datatype": "INT64", "data": [3]}
        seeded = {"inputs": [count], "parameters": {"seed": 7}}
        (s1, first), (s2, second) = await asyncio.gather(
            call("/v2/models/m/infer", seeded), call("/v2/models/m/infer", seeded)
        )
        assert s1 == s2 == 200 and first["outputs"][0]["shape"] == [3, 1, 28, 28]
        # same seed, same images: the two requests may share a batch or not, and a batched forward
        # pass rounds differently in the last bits (seen once, ~1e-7 apart)
        assert first["outputs"][0]["shape"] == second["outputs"][0]["shape"]
        np.testing.assert_allclose(first["outputs"][0]["data"], second["outputs"][0]["data"], atol=1e-5)
        pixels = np.array(first["outputs"][0]["data"])
        assert pixels.min() >= 0 and pixels.max() <= 1
        for body, message in [
            ({"inputs": [latent_input, count]}, "exactly one of the inputs 'latent' and 'n'"),
            ({"inputs": []}, "exactly one of the inputs 'latent' and 'n'"),
            ({"inputs": [{**count, "data": [0]}]}, "'n' must be in [1, 4096]"),
            ({"inputs": [{**count, "data": [10**12]}]}, "'n' must be in [1, 4096]"),
            ({"inputs": [{**count, "data": [40]}]}, "40 rows but this server takes at most 32"),
            ({"inputs": [count], "parameters": {"seed": "x"}}, "'seed' must be a non-negative integer"),
        ]:
            status, refused = await call("/v2/models/m/infer", body)
            assert status == 400 and message in refused["error"]

    serve_and(gan_export, scenario)


@pytest.fixture(scope="module")
def varied_language_model_export(language_model_export: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The trained export with noise on every weight.

    A model trained for two steps predicts a space after everything; noise makes the greedy
    path depend on the prompt and the step, so a mix-up of rows or steps cannot go unnoticed.
    """
    state = torch.load(language_model_export / contract.MODEL_WEIGHTS, map_location="cpu", weights_only=True)
    noise = torch.Generator().manual_seed(5)
    state = {
        name: tensor + torch.randn(tensor.shape, generator=noise) if tensor.is_floating_point() else tensor
        for name, tensor in state.items()
    }
    directory = tmp_path_factory.mktemp("varied") / "final"
    write_export(directory, state, read_manifest(language_model_export))
    return directory


def greedy(model: torch.nn.Module, prompt: list[int], steps: int) -> tuple[np.ndarray, list[int]]:
    """Next-token logits of ``prompt`` and its greedy continuation, computed directly."""
    with torch.inference_mode():
        tokens = torch.tensor([prompt])
        logits = model(tokens)[0, -1].numpy()
        continuation = []
        for _ in range(steps):
            token = int(model(tokens)[0, -1].argmax())
            continuation.append(token)
            tokens = torch.cat([tokens, torch.tensor([[token]])], dim=1)
    return logits, continuation


def test_language_model_returns_next_token_logits_and_a_greedy_continuation(
    varied_language_model_export: Path,
) -> None:
    model, _ = load_exported(varied_language_model_export, "cpu")
    short, long = list(b"Hello"), list(b"Kubernetes operator")
    short_logits, short_continuation = greedy(model, short, 4)
    _, long_continuation = greedy(model, long, 4)
    assert len(set(short_continuation)) > 1 and short_continuation != long_continuation  # the test can tell

    def ids(*prompts: list[int]) -> dict[str, Any]:
        return {
            "name": "input_ids",
            "shape": [len(prompts), len(prompts[0])],
            "datatype": "INT64",
            "data": list(prompts),
        }

    async def scenario(call: Call) -> None:
        status, meta = await call("/v2/models/m", None)
        assert status == 200 and meta["inputs"] == [{"name": "input_ids", "datatype": "INT64", "shape": [-1, -1]}]
        assert [o["name"] for o in meta["outputs"]] == ["logits", "next_token", "generated_ids"]
        status, body = await call("/v2/models/m/infer", {"inputs": [ids(short)]})
        assert status == 200
        outputs = {o["name"]: o for o in body["outputs"]}
        assert outputs["logits"]["shape"] == [1, 256]
        np.testing.assert_allclose(outputs["logits"]["data"], short_logits, atol=1e-4)
        assert outputs["next_token"]["data"] == short_continuation[:1]
        assert outputs["generated_ids"]["shape"] == [1, 0]
        # prompts of different lengths arrive together: they must not be stacked into one pass
        generate = {"max_new_tokens": 4}
        (s1, a), (s2, b) = await asyncio.gather(
            call("/v2/models/m/infer", {"inputs": [ids(short, short)], "parameters": generate}),
            call("/v2/models/m/infer", {"inputs": [ids(long)], "parameters": generate}),
        )
        assert s1 == s2 == 200
        assert a["outputs"][2] == {
            "name": "generated_ids",
            "datatype": "INT64",
            "shape": [2, 4],
            "data": short_continuation * 2,
        }
        assert b["outputs"][2]["data"] == long_continuation
        status, v1 = await call("/v1/models/m:predict", {"instances": [short]})
        assert status == 200 and v1["predictions"][0]["next_token"] == short_continuation[0]
        for body, message in [
            ({"inputs": [ids([300, 1])]}, "token ids must be in [0, 255]"),
            ({"inputs": [ids([1] * 129)]}, "1 to 128 tokens per row"),
            ({"inputs": [ids(short)], "parameters": {"max_new_tokens": -1}}, "'max_new_tokens' must be an integer"),
            ({"inputs": [{**ids(short), "datatype": "FP32"}]}, "wrong datatype FP32, the model expects INT64"),
        ]:
            status, refused = await call("/v2/models/m/infer", body)
            assert status == 400 and message in refused["error"]

    serve_and(varied_language_model_export, scenario)
