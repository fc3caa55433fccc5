"""Batching seen from clients over real HTTP: a client that leaves frees its rows, a request the
model cannot run fails alone, and the binary tensor data extension both ways."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable
from typing import Any

import aiohttp
import numpy as np
import pytest

from aidc_trainer.serving.batcher import DynamicBatcher
from tests.serving.harness import ScaleServable, in_process_server, loaded

INFER = "/v2/models/m/infer"
HEADER = "Inference-Header-Content-Length"


def rows(count: int, value: float) -> dict[str, Any]:
    return {"inputs": [{"name": "x", "shape": [count, 3], "datatype": "FP32", "data": [value] * (3 * count)}]}


async def post(session: aiohttp.ClientSession, body: Any) -> tuple[int, Any]:
    async with session.post(INFER, json=body) as response:
        return response.status, await response.json()


async def until(condition: Callable[[], bool]) -> None:
    """Poll a condition the server reaches by itself; the guard turns a hang into a failure."""

    async def poll() -> None:
        while not condition():
            await asyncio.sleep(0.01)

    await asyncio.wait_for(poll(), 30)


def _batcher(state: Any) -> DynamicBatcher:
    batcher: DynamicBatcher = state.batcher
    return batcher


def test_a_client_that_disconnects_frees_its_rows_before_the_next_pass() -> None:
    gate = threading.Event()
    gate.set()
    model = ScaleServable(gate=gate)

    async def scenario() -> list[int]:
        async with in_process_server(loaded(model), max_batch_size=8, max_delay=0.0) as server:
            await asyncio.wait_for(server.loading, 30)
            warm_up_passes = len(model.batches)
            gate.clear()
            model.running.clear()
            batcher = _batcher(server.state)
            async with aiohttp.ClientSession(server.url) as session:
                busy = asyncio.ensure_future(post(session, rows(1, 1.0)))
                assert await asyncio.to_thread(model.running.wait, 30)  # the model is now held
                leaving = aiohttp.ClientSession(server.url)
                abandoned = asyncio.ensure_future(post(leaving, rows(3, 2.0)))
                await until(lambda: batcher.queued_rows == 3)
                abandoned.cancel()
                await leaving.close()  # the connection goes: the server cancels that handler
                kept = asyncio.ensure_future(post(session, rows(2, 3.0)))
                await until(lambda: batcher.queued_rows == 2)
                gate.set()
                assert (await busy)[0] == 200
                status, body = await kept
                assert status == 200 and body["outputs"][1]["data"] == [9.0, 9.0]
            return model.batches[warm_up_passes:]

    assert asyncio.run(scenario()) == [1, 2]


def test_a_request_the_model_cannot_run_fails_alone_and_its_batch_mates_get_answers() -> None:
    gate = threading.Event()
    gate.set()
    model = ScaleServable(gate=gate, poison=True)

    async def scenario() -> list[tuple[int, Any]]:
        async with in_process_server(loaded(model), max_batch_size=8, max_delay=0.0) as server:
            await asyncio.wait_for(server.loading, 30)
            gate.clear()
            model.running.clear()
            batcher = _batcher(server.state)
            async with aiohttp.ClientSession(server.url) as session:
                busy = asyncio.ensure_future(post(session, rows(1, 1.0)))
                assert await asyncio.to_thread(model.running.wait, 30)
                mates = [asyncio.ensure_future(post(session, rows(n, v))) for n, v in ((1, 2.0), (2, -1.0), (1, 4.0))]
                await until(lambda: batcher.queued_rows == 4)  # all three will share the next pass
                gate.set()
                return [await busy, *[await mate for mate in mates]]

    outcomes = asyncio.run(scenario())
    assert [status for status, _ in outcomes] == [200, 200, 500, 200]
    assert "cannot take negative values" in outcomes[2][1]["error"]
    assert [body["outputs"][1]["data"] for _, body in (outcomes[1], outcomes[3])] == [[6.0], [12.0]]
    assert model.batches[-4:] == [4, 1, 2, 1]  # the shared pass failed, then each request alone


def _binary_request(x: np.ndarray, parameters: dict[str, Any], outputs: list[dict[str, Any]] | None) -> bytes:
    header: dict[str, Any] = {
        "inputs": [
            {"name": "x", "shape": list(x.shape), "datatype": "FP32", "parameters": {"binary_data_size": x.nbytes}}
        ],
        "parameters": parameters,
    }
    if outputs is not None:
        header["outputs"] = outputs
    encoded = json.dumps(header).encode()
    return encoded, encoded + x.astype("<f4").tobytes()


def _read_outputs(body: bytes, header_length: str | None) -> dict[str, np.ndarray]:
    """Each output as an array, from its JSON data or from the bytes after the JSON."""
    length = len(body) if header_length is None else int(header_length)
    parsed = json.loads(body[:length])
    arrays, offset = {}, length
    for output in parsed["outputs"]:
        dtype = {"FP32": "<f4", "INT64": "<i8"}[output["datatype"]]
        size = (output.get("parameters") or {}).get("binary_data_size")
        if size is None:
            arrays[output["name"]] = np.asarray(output["data"], dtype=dtype).reshape(output["shape"])
        else:
            arrays[output["name"]] = np.frombuffer(body[offset : offset + size], dtype=dtype).reshape(output["shape"])
            offset += size
    assert offset == len(body)
    return arrays


@pytest.mark.parametrize(
    ("parameters", "outputs", "binary_outputs"),
    [
        ({}, None, set()),
        ({"binary_data_output": True}, None, {"scaled", "total"}),
        ({}, [{"name": "total", "parameters": {"binary_data": True}}, {"name": "scaled"}], {"total"}),
    ],
)
def test_binary_tensors_in_and_out_give_the_same_numbers_as_json(
    parameters: dict[str, Any], outputs: list[dict[str, Any]] | None, binary_outputs: set[str]
) -> None:
    x = np.arange(6, dtype=np.float32).reshape(2, 3) / 7

    async def scenario() -> tuple[int, str | None, str | None, bytes]:
        async with in_process_server(loaded(ScaleServable(factor=3.0))) as server:
            await asyncio.wait_for(server.loading, 30)
            header, body = _binary_request(x, parameters, outputs)
            async with (
                aiohttp.ClientSession(server.url) as session,
                session.post(INFER, data=body, headers={HEADER: str(len(header))}) as response,
            ):
                return response.status, response.headers.get(HEADER), response.content_type, await response.read()

    status, length, content_type, body = asyncio.run(scenario())
    assert status == 200, body
    assert (length is not None) == bool(binary_outputs)
    assert content_type == ("application/octet-stream" if binary_outputs else "application/json")
    decoded = _read_outputs(body, length)
    np.testing.assert_array_equal(decoded["scaled"], x * 3.0)
    np.testing.assert_allclose(decoded["total"], x.sum(axis=1), rtol=1e-6)
    sent_binary = {o["name"] for o in json.loads(body[: int(length or len(body))])["outputs"] if "parameters" in o}
    assert sent_binary == binary_outputs


@pytest.mark.parametrize(
    ("header_length", "extra", "size", "message"),
    [
        ("many", b"", 24, "must be the JSON's length in bytes"),
        ("100000", b"", 24, "must be the JSON's length in bytes"),
        (None, b"\x00" * 4, 24, "4 bytes after the JSON that no input's binary_data_size claims"),
        (None, b"", 32, "runs past the end of the body"),
        (None, b"", 20, "binary_data_size is 20 bytes but shape [2, 3] of float32 needs 24"),
    ],
)
def test_binary_bodies_that_do_not_add_up_are_refused_with_400(
    header_length: str | None, extra: bytes, size: int, message: str
) -> None:
    x = np.zeros((2, 3), dtype=np.float32)

    async def scenario() -> tuple[int, Any]:
        async with in_process_server(loaded(ScaleServable())) as server:
            await asyncio.wait_for(server.loading, 30)
            tensor = {"name": "x", "shape": [2, 3], "datatype": "FP32", "parameters": {"binary_data_size": size}}
            header = json.dumps({"inputs": [tensor]}).encode()
            body = header + x.tobytes()[:size] + extra
            headers = {HEADER: header_length or str(len(header))}
            async with (
                aiohttp.ClientSession(server.url) as session,
                session.post(INFER, data=body, headers=headers) as response,
            ):
                return response.status, await response.json()

    status, refusal = asyncio.run(scenario())
    assert status == 400 and message in refusal["error"]
