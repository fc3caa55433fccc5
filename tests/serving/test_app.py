"""The HTTP surface and the lifecycle, in-process with a numpy stand-in model (no torch model needed)."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import aiohttp
import pytest

from aidc_trainer.serving.app import SERVER_NAME
from tests.serving.harness import ScaleServable, in_process_server, loaded


async def _get(session: aiohttp.ClientSession, url: str) -> tuple[int, Any]:
    async with session.get(url) as response:
        body = await response.read()
        return response.status, (await response.json() if body else None)


async def _infer(session: aiohttp.ClientSession, url: str, body: Any) -> tuple[int, Any]:
    async with session.post(url, json=body) as response:
        return response.status, await response.json()


ROW = {"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}


def test_ready_only_after_the_warm_up_passed_and_live_all_along() -> None:
    gate = threading.Event()
    model = ScaleServable(gate=gate)

    async def scenario() -> None:
        async with in_process_server(loaded(model)) as server, aiohttp.ClientSession(server.url) as session:
            assert await asyncio.to_thread(model.running.wait, 30)  # the warm-up is running, held
            assert (await _get(session, "/v2/health/live"))[0] == 200
            assert (await _get(session, "/v2/health/ready"))[0] == 400
            assert (await _get(session, "/v2/models/m/ready"))[0] == 400
            status, body = await _infer(session, "/v2/models/m/infer", {"inputs": [ROW]})
            assert (status, body) == (503, {"error": "model 'm' is not ready yet"})
            assert server.state.metrics.registry.get_sample_value("aidc_server_ready") == 0
            gate.set()
            await asyncio.wait_for(server.loading, 30)
            assert (await _get(session, "/v2/health/ready"))[0] == 200
            assert (await _get(session, "/v2/models/m/ready"))[0] == 200
            status, body = await _infer(session, "/v2/models/m/infer", {"inputs": [ROW]})
            assert status == 200 and body["outputs"][1]["data"] == [6.0]
            assert server.state.metrics.registry.get_sample_value("aidc_server_ready") == 1

    asyncio.run(scenario())
    assert model.batches[:2] == [1, 32]  # the warm-up ran one row and a full batch


def test_a_model_that_fails_its_warm_up_never_becomes_ready() -> None:
    async def scenario() -> None:
        async with in_process_server(loaded(ScaleServable(fail=True))) as server:
            with pytest.raises(RuntimeError, match="cannot run"):
                await asyncio.wait_for(server.loading, 30)
            async with aiohttp.ClientSession(server.url) as session:
                assert (await _get(session, "/v2/health/ready"))[0] == 400
                assert (await _get(session, "/v2/health/live"))[0] == 200

    asyncio.run(scenario())


def test_metadata_infer_and_v1_predict() -> None:
    async def scenario() -> None:
        async with in_process_server(loaded(ScaleServable(factor=10))) as server:
            await asyncio.wait_for(server.loading, 30)
            async with aiohttp.ClientSession(server.url) as session:
                status, info = await _get(session, "/v2")
                assert status == 200 and info["name"] == SERVER_NAME and info["extensions"] == ["binary_tensor_data"]
                status, meta = await _get(session, "/v2/models/m")
                assert status == 200
                assert meta == {
                    "name": "m",
                    "versions": ["1"],
                    "platform": "numpy",
                    "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 3]}],
                    "outputs": [
                        {"name": "scaled", "datatype": "FP32", "shape": [-1, 3]},
                        {"name": "total", "datatype": "FP32", "shape": [-1]},
                    ],
                }
                assert (await _get(session, "/v2/models/m/versions/1"))[0] == 200
                assert (await _get(session, "/v2/models/m/versions/2"))[0] == 404
                body = {"id": "abc", "inputs": [{**ROW, "shape": [2, 3], "data": [[1, 2, 3], [4, 5, 6]]}]}
                status, answer = await _infer(session, "/v2/models/m/infer", body)
                assert status == 200 and answer["id"] == "abc" and answer["model_name"] == "m"
                assert answer["outputs"][0] == {
                    "name": "scaled",
                    "datatype": "FP32",
                    "shape": [2, 3],
                    "data": [10.0, 20.0, 30.0, 40.0, 50.0, 60.0],
                }
                status, answer = await _infer(session, "/v1/models/m:predict", {"instances": [[1, 1, 1], [2, 2, 2]]})
                assert status == 200
                assert answer == {
                    "predictions": [
                        {"scaled": [10.0, 10.0, 10.0], "total": 3.0},
                        {"scaled": [20.0, 20.0, 20.0], "total": 6.0},
                    ]
                }

    asyncio.run(scenario())


def test_every_request_is_counted_by_route_template_and_code() -> None:
    async def scenario() -> str:
        async with in_process_server(loaded(ScaleServable()), model_name="digits") as server:
            await asyncio.wait_for(server.loading, 30)
            async with aiohttp.ClientSession(server.url) as session:
                await _infer(session, "/v2/models/digits/infer", {"inputs": [ROW]})
                await _infer(session, "/v2/models/digits/infer", {"inputs": [{**ROW, "data": [1]}]})
                await _infer(session, "/v2/models/other/infer", {"inputs": [ROW]})
                await _get(session, "/no/such/path")
                async with session.get("/metrics") as response:
                    assert response.headers["Content-Type"].startswith("text/plain")
                    return await response.text()

    text = asyncio.run(scenario())
    for line in (
        'aidc_server_requests_total{code="200",endpoint="/v2/models/{model}/infer"} 1.0',
        'aidc_server_requests_total{code="400",endpoint="/v2/models/{model}/infer"} 1.0',
        'aidc_server_requests_total{code="404",endpoint="/v2/models/{model}/infer"} 1.0',
        'aidc_server_requests_total{code="404",endpoint="unmatched"} 1.0',
        "aidc_server_batch_size_count 1.0",  # the warm-up is not counted
        "aidc_server_model_load_seconds 0.001",
    ):
        assert line in text
    assert 'aidc_server_request_duration_seconds_count{code="200",endpoint="/v2/models/{model}/infer"} 1.0' in text
    assert "aidc_server_queue_seconds_count 1.0" in text and "aidc_server_inference_seconds_count 1.0" in text


def test_a_model_error_is_a_500_with_a_message_and_the_server_keeps_serving() -> None:
    model = ScaleServable()

    async def scenario() -> None:
        async with in_process_server(loaded(model)) as server:
            await asyncio.wait_for(server.loading, 30)
            async with aiohttp.ClientSession(server.url) as session:
                model.fail = True
                status, body = await _infer(session, "/v2/models/m/infer", {"inputs": [ROW]})
                assert status == 500 and "this model cannot run" in body["error"]
                model.fail = False
                assert (await _infer(session, "/v2/models/m/infer", {"inputs": [ROW]}))[0] == 200

    asyncio.run(scenario())
