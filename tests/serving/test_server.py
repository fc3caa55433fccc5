"""The server process on a real classifier trained in the session: real HTTP, real model, real files.

One server (batching, 50 ms delay, a 1 MiB body limit from the environment) serves most tests; its
model folder is a read-only copy that must be left exactly as it was found.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
import torch

from aidc_trainer import contract
from aidc_trainer.export import load_exported
from tests.serving.harness import ServerProcess, metric_samples, request, start_process

pytestmark = pytest.mark.trainer

MODEL = "digits"
INFER = f"/v2/models/{MODEL}/infer"
LIMIT = 1 << 20


def images(count: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random((count, 1, 28, 28), dtype=np.float32)


def image_input(batch: np.ndarray, **overrides: Any) -> dict[str, Any]:
    return {
        "name": "input",
        "shape": list(batch.shape),
        "datatype": "FP32",
        "data": batch.reshape(-1).tolist(),
        **overrides,
    }


def snapshot(directory: Path) -> dict[str, tuple[int, int, int]]:
    return {p.name: (p.stat().st_size, p.stat().st_mtime_ns, p.stat().st_mode) for p in sorted(directory.iterdir())}


@pytest.fixture(scope="module")
def reference(classifier_export: Path) -> torch.nn.Module:
    """The same export loaded in the test, to check the server's answers against."""
    module: torch.nn.Module = load_exported(classifier_export, "cpu")[0]
    return module


def expected(reference: torch.nn.Module, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    with torch.inference_mode():
        probabilities = torch.softmax(reference(torch.from_numpy(batch)), dim=-1).numpy()
    return probabilities, probabilities.argmax(axis=-1)


@pytest.fixture(scope="module")
def read_only_model(classifier_export: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    directory = tmp_path_factory.mktemp("mounted") / "model"
    shutil.copytree(classifier_export, directory)
    for path in directory.iterdir():
        path.chmod(stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
    directory.chmod(stat.S_IRUSR | stat.S_IXUSR | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH)
    yield directory
    directory.chmod(stat.S_IRWXU)


@pytest.fixture(scope="module")
def server(read_only_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    before = snapshot(read_only_model)
    process = start_process(
        ["--model-name", MODEL, "--port", "0"],
        tmp_path_factory.mktemp("logs") / "server.log",
        env={
            "AIDC_MODEL_DIR": str(read_only_model),
            "AIDC_MAX_DELAY_MS": "50",
            "AIDC_MAX_BATCH_SIZE": "32",
            "AIDC_MAX_REQUEST_BYTES": str(LIMIT),
        },
    )
    try:
        process.wait_ready()
        yield process
    finally:
        process.stop()
    assert snapshot(read_only_model) == before, "the server changed its model folder"


def test_metadata_describes_the_exported_signature(server: ServerProcess, classifier_export: Path) -> None:
    manifest = json.loads((classifier_export / contract.MODEL_MANIFEST).read_text())
    assert request(server.url, "GET", "/v2/health/live").status == 200
    assert request(server.url, "GET", f"/v2/models/{MODEL}/ready").status == 200
    assert request(server.url, "GET", "/v2").json()["name"] == "aidc-model-server"
    meta = request(server.url, "GET", f"/v2/models/{MODEL}").json()
    assert meta["name"] == MODEL and meta["platform"] == "pytorch" and meta["versions"] == ["1"]
    assert meta["inputs"] == manifest["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 1, 28, 28]}]
    assert meta["outputs"] == [
        {"name": "probabilities", "datatype": "FP32", "shape": [-1, 10]},
        {"name": "predicted_class", "datatype": "INT64", "shape": [-1]},
    ]


def test_infer_answers_what_the_model_computes(server: ServerProcess, reference: torch.nn.Module) -> None:
    batch = images(4, seed=1)
    response = request(server.url, "POST", INFER, {"id": "req-1", "inputs": [image_input(batch)]})
    assert response.status == 200, response.body
    body = response.json()
    assert (body["model_name"], body["id"]) == (MODEL, "req-1")
    outputs = {o["name"]: o for o in body["outputs"]}
    probabilities, classes = expected(reference, batch)
    assert outputs["probabilities"]["shape"] == [4, 10] and outputs["probabilities"]["datatype"] == "FP32"
    np.testing.assert_allclose(np.array(outputs["probabilities"]["data"]).reshape(4, 10), probabilities, atol=1e-5)
    assert outputs["predicted_class"] == {
        "name": "predicted_class",
        "datatype": "INT64",
        "shape": [4],
        "data": classes.tolist(),
    }


def test_nested_data_output_filter_and_v1_predict_agree(server: ServerProcess, reference: torch.nn.Module) -> None:
    batch = images(2, seed=2)
    _, classes = expected(reference, batch)
    nested = image_input(batch, data=batch.tolist())
    body = request(server.url, "POST", INFER, {"inputs": [nested], "outputs": [{"name": "predicted_class"}]}).json()
    assert [o["name"] for o in body["outputs"]] == ["predicted_class"]
    assert body["outputs"][0]["data"] == classes.tolist()
    v1 = request(server.url, "POST", f"/v1/models/{MODEL}:predict", {"instances": batch.tolist()})
    assert v1.status == 200
    assert [p["predicted_class"] for p in v1.json()["predictions"]] == classes.tolist()


GOOD = image_input(images(1, seed=3))


@pytest.mark.parametrize(
    ("path", "body", "status", "message"),
    [
        (INFER, b'{"inputs": [{"name": "input",', 400, "malformed JSON"),
        (INFER, b"\xff\xfe not even text", 400, "malformed JSON"),
        (INFER, b"[" * 100_000 + b"]" * 100_000, 400, "malformed JSON: nested too deeply"),
        (INFER, {"id": 42, "inputs": [GOOD]}, 400, "id must be a string"),
        (INFER, {"inputs": [{**GOOD, "datatype": "FP64"}]}, 400, "wrong datatype FP64, the model expects FP32"),
        (INFER, {"inputs": [{**GOOD, "shape": [1, 28, 28]}]}, 400, "does not match the model's [-1, 1, 28, 28]"),
        (INFER, {"inputs": [{**GOOD, "data": GOOD["data"] + [0.5]}]}, 400, "785 elements but shape"),
        (INFER, {"inputs": [{**GOOD, "data": ["x"] * 784}]}, 400, "FP32 data must be numbers"),
        (INFER, {"inputs": []}, 400, "missing input 'input'"),
        (INFER, {"inputs": [{**GOOD, "name": "image"}]}, 400, "no input 'image'"),
        (INFER, {"inputs": [GOOD], "outputs": [{"name": "logits"}]}, 400, "no output 'logits'"),
        (INFER, {"inputs": [image_input(images(33, seed=4))]}, 400, "33 rows but this server takes at most 32"),
        (INFER, b"[" + b"0.5, " * (LIMIT // 5) + b"0.5]", 413, f"exceeds the limit of {LIMIT} bytes"),
        ("/v2/models/mnist/infer", {"inputs": [GOOD]}, 404, "unknown model 'mnist'; this server serves 'digits'"),
        (f"/v1/models/{MODEL}:predict", {"instances": [[0.5] * 3]}, 400, "3 elements but shape [1, 1, 28, 28]"),
    ],
)
def test_a_bad_request_gets_a_4xx_naming_the_problem_and_the_next_one_is_served(
    server: ServerProcess, path: str, body: Any, status: int, message: str
) -> None:
    raw = body if isinstance(body, bytes) else None
    refused = request(server.url, "POST", path, None if raw else body, raw=raw)
    assert refused.status == status, refused.body
    assert message in refused.json()["error"]
    served = request(server.url, "POST", INFER, {"inputs": [GOOD]})
    assert served.status == 200
    assert len(served.json()["outputs"][1]["data"]) == 1


async def _concurrently(url: str, batches: list[np.ndarray]) -> list[dict[str, Any]]:
    async with aiohttp.ClientSession(url, connector=aiohttp.TCPConnector(limit=0)) as session:

        async def one(batch: np.ndarray) -> dict[str, Any]:
            async with session.post(INFER, json={"inputs": [image_input(batch)]}) as response:
                assert response.status == 200
                return await response.json()  # type: ignore[no-any-return]

        return await asyncio.gather(*(one(batch) for batch in batches))


def test_concurrent_requests_are_batched_and_each_gets_its_own_answer(
    server: ServerProcess, reference: torch.nn.Module
) -> None:
    before = metric_samples(server.url)
    batches = [images(1, seed=100 + i) * (i + 1) / 16 for i in range(16)]  # from dim to bright
    answers = asyncio.run(_concurrently(server.url, batches))
    after = metric_samples(server.url)

    def delta(name: str, labels: tuple[tuple[str, str], ...] = ()) -> float:
        return after.get((name, labels), 0.0) - before.get((name, labels), 0.0)

    passes = delta("aidc_server_batch_size_count")
    single_row_passes = delta("aidc_server_batch_size_bucket", (("le", "1.0"),))
    assert delta("aidc_server_batch_size_sum") == 16
    assert passes < 16, "16 concurrent requests ran as 16 forward passes: nothing was batched"
    assert single_row_passes < passes, "no forward pass held more than one row"
    assert delta("aidc_server_queue_seconds_count") == 16
    references = [expected(reference, batch)[0] for batch in batches]
    # whole probability vectors distinct, so a mix-up of rows would show
    assert len({tuple(np.round(p[0], 6)) for p in references}) == 16
    for probabilities, answer in zip(references, answers, strict=True):
        np.testing.assert_allclose(answer["outputs"][0]["data"], probabilities[0], atol=1e-5)


def test_metrics_report_load_time_requests_and_inference(server: ServerProcess) -> None:
    request(server.url, "POST", INFER, {"inputs": [GOOD]})
    samples = metric_samples(server.url)
    assert samples[("aidc_server_model_load_seconds", ())] > 0
    assert samples[("aidc_server_ready", ())] == 1
    infer_ok = (("code", "200"), ("endpoint", "/v2/models/{model}/infer"))
    assert samples[("aidc_server_requests_total", infer_ok)] >= 1
    assert samples[("aidc_server_request_duration_seconds_count", infer_ok)] >= 1
    assert samples[("aidc_server_inference_seconds_count", ())] >= 1


def test_an_unbatched_server_runs_one_row_per_pass_and_stops_cleanly(classifier_export: Path, tmp_path: Path) -> None:
    process = start_process(
        ["--model-dir", str(classifier_export), "--model-name", MODEL, "--port", "0", "--max-batch-size", "1"],
        tmp_path / "server.log",
        env={"AIDC_MAX_DELAY_MS": "50"},
    )
    try:
        process.wait_ready()
        asyncio.run(_concurrently(process.url, [images(1, seed=i) for i in range(8)]))
        samples = metric_samples(process.url)
        assert samples[("aidc_server_batch_size_count", ())] == 8
        assert samples[("aidc_server_batch_size_bucket", (("le", "1.0"),))] == 8
    finally:
        code = process.stop()
    assert code == 0
    assert process.read_log()[-1]["message"] == "stopped"


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--model-dir", "/nonexistent/model"], contract.EXIT_DATA_ERROR, "no exported model in /nonexistent/model"),
        (["--max-batch-size", "0"], contract.EXIT_CONFIG_ERROR, "--max-batch-size='0'"),
    ],
)
def test_a_server_that_cannot_serve_exits_with_a_code_the_operator_understands(
    tmp_path: Path, args: list[str], code: int, message: str
) -> None:
    process = start_process([*args, "--port", "0"], tmp_path / "server.log")
    assert process.process.wait(timeout=120) == code
    assert message in process.log.read_text()


def test_cuda_is_refused_where_there_is_none(classifier_export: Path, tmp_path: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the server would serve on it")
    process = start_process(["--model-dir", str(classifier_export), "--device", "cuda", "--port", "0"], tmp_path / "l")
    assert process.process.wait(timeout=120) == contract.EXIT_CONFIG_ERROR
    assert "no CUDA device" in process.log.read_text()


def test_a_model_the_openai_routes_cannot_serve_is_refused_when_they_are_required(
    classifier_export: Path, tmp_path: Path
) -> None:
    """The operator requires the OpenAI routes of a language model's server: a server that could not
    answer them must not become ready on v2 alone."""
    process = start_process(
        ["--model-dir", str(classifier_export), "--openai", "required", "--port", "0"], tmp_path / "l"
    )
    assert process.process.wait(timeout=120) == contract.EXIT_CONFIG_ERROR
    assert "cannot be served on the OpenAI routes" in process.log.read_text()
