"""Reading infer requests with simdjson's numbers: the same arrays and the same refusals as orjson's path."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from aidc_trainer.serving import json_codec
from aidc_trainer.serving.protocol import NumericData, ProtocolError, TensorSpec, parse_infer_request

IMAGE = TensorSpec("input", "FP32", (-1, 1, 2, 2))
HALF = TensorSpec("input", "FP16", (-1, 4))
IDS = TensorSpec("input", "INT64", (-1, 4))
OUTPUTS = (TensorSpec("probabilities", "FP32", (-1, 10)),)


def body(data: Any, datatype: str = "FP32", shape: Any = (1, 1, 2, 2), **extra: Any) -> bytes:
    tensor = {"name": "input", "shape": list(shape), "datatype": datatype, "data": data}
    return json.dumps({"inputs": [tensor], **extra}).encode()


def both_ways(raw: bytes, spec: TensorSpec = IMAGE) -> list[Any]:
    """What parse_infer_request makes of ``raw`` read by orjson alone and by loads_infer: the
    arrays, or the refusal's status and message."""
    outcomes: list[Any] = []
    for read in (json_codec.loads, json_codec.loads_infer):
        try:
            parsed = parse_infer_request(read(raw), [spec], OUTPUTS)
        except ProtocolError as error:
            outcomes.append((error.status, error.message))
        else:
            array = parsed.inputs["input"]
            outcomes.append((array.dtype.str, array.shape, array.tobytes(), parsed.id, parsed.parameters))
    return outcomes


def test_a_flat_list_of_numbers_is_read_without_python_floats() -> None:
    value = json_codec.loads_infer(body([0.5, 1, -2.5e-3, 7]))
    data = value["inputs"][0]["data"]
    assert isinstance(data, NumericData)
    np.testing.assert_array_equal(data.values, [0.5, 1.0, -2.5e-3, 7.0])
    assert data.values.flags.writeable  # an FP64 input reaches torch.from_numpy without a copy


@pytest.mark.parametrize("seed", range(5))
def test_random_images_decode_bit_for_bit_as_orjson_reads_them(seed: int) -> None:
    rng = np.random.default_rng(seed)
    values = [float(v) for v in rng.normal(scale=10.0 ** rng.integers(-8, 8), size=4)]
    raw = body(values, id=f"r{seed}", parameters={"note": [1, {"x": None}]})
    orjson_way, simdjson_way = both_ways(raw)
    assert orjson_way == simdjson_way


@pytest.mark.parametrize(
    ("data", "datatype", "shape", "spec"),
    [
        ([0.0, 0.25, 0.5, 1], "FP32", (1, 1, 2, 2), IMAGE),  # accepted both ways
        ([[[[0.0, 0.25], [0.5, 1]]]], "FP32", (1, 1, 2, 2), IMAGE),  # nested: the list path
        ([1e-9, 2, -0.0, 3e38], "FP32", (1, 1, 2, 2), IMAGE),
        ([1.0, None, 2.0, 3.0], "FP32", (1, 1, 2, 2), IMAGE),  # a null among the numbers
        ([1.0, "2", 2.0, 3.0], "FP32", (1, 1, 2, 2), IMAGE),  # a string
        ([1.0, True, 2.0, 3.0], "FP32", (1, 1, 2, 2), IMAGE),  # a boolean
        ([1.0, [2.0], 3.0, 4.0], "FP32", (1, 1, 2, 2), IMAGE),  # a list nested in a flat one
        ([[1.0, 2.0], [3.0]], "FP32", (1, 1, 2, 2), IMAGE),  # ragged
        ([1.0, 2.0, 3.0], "FP32", (1, 1, 2, 2), IMAGE),  # too few for the shape
        ([], "FP32", (1, 1, 2, 2), IMAGE),
        ("1, 2, 3, 4", "FP32", (1, 1, 2, 2), IMAGE),  # not a list
        ({"a": 1}, "FP32", (1, 1, 2, 2), IMAGE),
        ([1, 2, 3, 4], "FP64", (1, 1, 2, 2), IMAGE),  # the wrong datatype for the model
        ([1.0, 2.0, 70000.0, 4.0], "FP16", (1, 4), HALF),  # beyond FP16: inf both ways
        ([1, 2, 3, 9007199254740993], "INT64", (1, 4), IDS),  # integers keep every digit
        ([1, 2.5, 3, 4], "INT64", (1, 4), IDS),
        ([1e400, 1, 2, 3], "FP32", (1, 1, 2, 2), IMAGE),  # beyond a double
        ([1, 2, 3, 18446744073709551616], "INT64", (1, 4), IDS),  # beyond 64 bits: orjson reads a float
        ([1, 2, 3, 18446744073709551616], "FP32", (1, 1, 2, 2), IMAGE),
        ([1.5e-400, 2, 3, 4], "FP32", (1, 1, 2, 2), IMAGE),  # below a double: 0
    ],
)
def test_every_request_gets_the_same_answer_as_orjson_gives(
    data: Any, datatype: str, shape: Any, spec: TensorSpec
) -> None:
    orjson_way, simdjson_way = both_ways(body(data, datatype, shape), spec)
    assert orjson_way == simdjson_way


@pytest.mark.parametrize(
    "raw",
    [
        b'{"inputs": [',  # cut short
        b'{"inputs": [{"name": "input", "data": [NaN]}]}',  # not JSON numbers
        b"[" * 5000 + b"]" * 5000,  # deeper than either parser goes
        b'{"inputs": 3}',
        b"[1, 2]",
        b'"text"',
        b"",
    ],
)
def test_malformed_bodies_are_refused_with_orjsons_message(raw: bytes) -> None:
    orjson_way, simdjson_way = both_ways(raw)
    assert orjson_way == simdjson_way
    assert orjson_way[0] == 400


def test_brackets_in_names_and_strings_keep_the_fast_path() -> None:
    raw = body([1, 2, 3, 4], id="[a]", parameters={"k[": "][", "list": [[1], []]})
    assert isinstance(json_codec.loads_infer(raw)["inputs"][0]["data"], NumericData)
    orjson_way, simdjson_way = both_ways(raw)
    assert orjson_way == simdjson_way


def test_a_bracket_written_as_an_escape_only_costs_the_fast_path() -> None:
    raw = b'{"id": "\\u005b", ' + body([1, 2, 3, 4])[1:]  # "[" in the value, no "[" in the text
    assert json_codec.loads_infer(raw)["id"] == "["
    orjson_way, simdjson_way = both_ways(raw)
    assert orjson_way == simdjson_way


TENSOR = '"name": "input", "shape": [1, 1, 2, 2], "datatype": "FP32", "data": [1, 2, 3, 4]'


@pytest.mark.parametrize(
    "raw",
    [
        '{"id": "first", "id": "second", "inputs": [{' + TENSOR + "}]}",
        '{"inputs": [{' + TENSOR + ', "datatype": "INT64"}]}',  # accepted if the first one won
        '{"inputs": [{' + TENSOR + ', "name": "other"}]}',
        '{"inputs": [{' + TENSOR + ', "data": [5, 6, 7, 8]}]}',
        '{"inputs": [{' + TENSOR + '}], "inputs": [{"name": "input"}]}',
        '{"inputs": 7, "inputs": [{' + TENSOR + "}]}",
        '{"parameters": {"a": 1, "a": 2}, "inputs": [{' + TENSOR + "}]}",
    ],
)
def test_a_key_given_twice_reads_as_orjson_reads_it_the_last_one(raw: str) -> None:
    orjson_way, simdjson_way = both_ways(raw.encode())
    assert orjson_way == simdjson_way
