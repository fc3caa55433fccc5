"""The v2 and v1 wire formats: what is accepted, and the message for each thing a client gets wrong."""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pytest

from aidc_trainer.serving.protocol import (
    DATATYPES,
    ProtocolError,
    RawTensor,
    TensorSpec,
    decode_data,
    encode_infer_response,
    encode_v1_predictions,
    parse_infer_request,
    parse_v1_instances,
)

IMAGE = TensorSpec("input", "FP32", (-1, 1, 2, 2))
IDS = TensorSpec("input_ids", "INT64", (-1, -1))
OUTPUTS = (TensorSpec("probabilities", "FP32", (-1, 10)), TensorSpec("predicted_class", "INT64", (-1,)))


def image_input(**overrides: Any) -> dict[str, Any]:
    return {"name": "input", "shape": [1, 1, 2, 2], "datatype": "FP32", "data": [0.0, 0.25, 0.5, 1], **overrides}


def test_flat_and_nested_data_decode_to_the_same_row_major_array() -> None:
    flat = parse_infer_request({"inputs": [image_input()]}, [IMAGE], OUTPUTS)
    nested = parse_infer_request({"inputs": [image_input(data=[[[[0.0, 0.25], [0.5, 1]]]])]}, [IMAGE], OUTPUTS)
    expected = np.array([0.0, 0.25, 0.5, 1.0], dtype=np.float32).reshape(1, 1, 2, 2)
    for parsed in (flat, nested):
        assert parsed.inputs["input"].dtype == np.float32
        np.testing.assert_array_equal(parsed.inputs["input"], expected)


def test_id_parameters_and_output_filter_are_kept() -> None:
    body = {"id": "r-1", "parameters": {"seed": 3}, "inputs": [image_input()], "outputs": [{"name": "predicted_class"}]}
    parsed = parse_infer_request(body, [IMAGE], OUTPUTS)
    assert (parsed.id, dict(parsed.parameters), parsed.outputs) == ("r-1", {"seed": 3}, ("predicted_class",))


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ([1, 2], "must be a JSON object"),
        ({"inputs": {"name": "input"}}, "inputs must be a list"),
        ({"inputs": []}, "missing input 'input'"),
        ({"inputs": [image_input(name="pixels")]}, "no input 'pixels'; its inputs are: input"),
        ({"inputs": [image_input(), image_input()]}, "given twice"),
        ({"inputs": [{"name": "input", "shape": [1, 1, 2, 2], "datatype": "FP32"}]}, "data is missing"),
        ({"inputs": [image_input(datatype="FP64")]}, "wrong datatype FP64, the model expects FP32"),
        ({"inputs": [image_input(datatype="FLOAT")]}, "unknown datatype 'FLOAT'"),
        ({"inputs": [image_input(shape=[1, 2, 2])]}, "shape [1, 2, 2] does not match the model's [-1, 1, 2, 2]"),
        ({"inputs": [image_input(shape=[0, 1, 2, 2], data=[])]}, "batch dimension must be >= 1"),
        ({"inputs": [image_input(shape=[1, 1, 2, "2"])]}, "shape must be a list of integers"),
        ({"inputs": [image_input(data=[0.0, 0.25, 0.5, 1, 7])]}, "data has 5 elements but shape [1, 1, 2, 2] needs 4"),
        ({"inputs": [image_input(data=[0.0, "a", 0.5, 1])]}, "FP32 data must be numbers"),
        ({"inputs": [image_input(data=[True, False, True, True])]}, "FP32 data must be numbers"),
        ({"inputs": [image_input(data=[[0.0, 0.25], [0.5]])]}, "ragged"),
        ({"inputs": [image_input(data=0.5)]}, "data must be a list"),
        (
            {
                "inputs": [
                    {"name": "input", "shape": [1, 1, 2, 2], "datatype": "FP32", "parameters": {"binary_data_size": 16}}
                ]
            },
            "binary data after the JSON",
        ),
        ({"id": 7, "inputs": [image_input()]}, "id must be a string"),
        ({"parameters": [1], "inputs": [image_input()]}, "parameters must be an object"),
        ({"inputs": [image_input()], "outputs": [{"name": "logits"}]}, "no output 'logits'"),
        ({"inputs": [image_input()], "outputs": ["predicted_class"]}, "outputs must be a list of objects"),
    ],
)
def test_bad_requests_are_refused_with_a_message_naming_the_problem(body: Any, message: str) -> None:
    with pytest.raises(ProtocolError) as refused:
        parse_infer_request(body, [IMAGE], OUTPUTS)
    assert refused.value.status == 400
    assert message in refused.value.message


@pytest.mark.parametrize(
    ("data", "datatype", "message"),
    [
        ([1.5, 2], "INT64", "INT64 data must be integers"),
        ([300, 1], "UINT8", "out of range [0, 255]"),
        ([2**70, 1], "INT64", "values that are not INT64"),
        ([None, 1], "FP32", "values that are not FP32"),
        ([1, 0], "BOOL", "BOOL data must be true or false"),
        (["a", "b"], "BYTES", "not supported"),
        ([1.0, 2.0], "BF16", "not supported"),
    ],
)
def test_values_must_fit_their_datatype(data: list[Any], datatype: str, message: str) -> None:
    with pytest.raises(ProtocolError, match=re.escape(message)):
        decode_data("input 'x'", data, datatype, [2])


def test_integer_data_is_accepted_for_float_inputs_and_converted() -> None:
    array = decode_data("input 'x'", [0, 1, 2, 3], "FP32", [1, 1, 2, 2])
    assert array.dtype == np.float32 and array.shape == (1, 1, 2, 2)


def test_response_holds_requested_outputs_flat_with_their_shapes() -> None:
    tensors = {
        "probabilities": np.full((2, 10), 0.1, dtype=np.float32),
        "predicted_class": np.array([3, 4], dtype=np.int64),
    }
    everything, blobs = encode_infer_response("digits", "1", "r-9", tensors, OUTPUTS, None)
    assert everything["id"] == "r-9" and everything["model_name"] == "digits" and blobs == []
    assert [(o["name"], o["datatype"], o["shape"]) for o in everything["outputs"]] == [
        ("probabilities", "FP32", [2, 10]),
        ("predicted_class", "INT64", [2]),
    ]
    np.testing.assert_array_equal(everything["outputs"][0]["data"], np.full(20, 0.1, dtype=np.float32))
    only, _ = encode_infer_response("digits", "1", None, tensors, OUTPUTS, ("predicted_class",))
    assert "id" not in only
    assert [(o["name"], o["shape"], o["data"].tolist()) for o in only["outputs"]] == [("predicted_class", [2], [3, 4])]


@pytest.mark.parametrize(
    ("request_parameters", "outputs", "binary"),
    [
        ({}, None, set()),
        ({"binary_data_output": True}, None, {"probabilities", "predicted_class"}),
        ({"binary_data_output": True}, [{"name": "predicted_class"}], {"predicted_class"}),
        ({}, [{"name": "probabilities", "parameters": {"binary_data": True}}], {"probabilities"}),
        (
            {"binary_data_output": True},
            [{"name": "probabilities", "parameters": {"binary_data": False}}, {"name": "predicted_class"}],
            {"predicted_class"},
        ),
    ],
)
def test_binary_outputs_are_chosen_by_the_request_and_each_output(
    request_parameters: dict[str, Any], outputs: list[dict[str, Any]] | None, binary: set[str]
) -> None:
    body: dict[str, Any] = {"parameters": request_parameters, "inputs": [image_input()]}
    if outputs is not None:
        body["outputs"] = outputs
    assert parse_infer_request(body, [IMAGE], OUTPUTS).binary_outputs == binary


def test_binary_outputs_carry_their_size_and_bytes_in_output_order() -> None:
    tensors = {
        "probabilities": np.arange(20, dtype=np.float32).reshape(2, 10),
        "predicted_class": np.array([3, 4], dtype=np.int64),
    }
    body, blobs = encode_infer_response("digits", "1", None, tensors, OUTPUTS, None, frozenset(["probabilities"]))
    first, second = body["outputs"]
    assert first["parameters"] == {"binary_data_size": 80} and "data" not in first
    assert blobs == [np.arange(20, dtype="<f4").tobytes()]
    assert second["data"].tolist() == [3, 4] and "parameters" not in second


@pytest.mark.parametrize(
    ("datatype", "values"),
    [
        ("FP32", np.array([0.0, -1.5, 3.25, 1e-8], dtype="<f4")),
        ("FP16", np.array([0.5, -2.0, 1.0, 4.0], dtype="<f2")),
        ("INT64", np.array([1, -2, 2**40, 0], dtype="<i8")),
        ("UINT8", np.array([0, 255, 7, 1], dtype="u1")),
        ("BOOL", np.array([True, False, True, True])),
    ],
)
def test_raw_binary_data_decodes_little_endian_to_the_datatype(datatype: str, values: np.ndarray) -> None:
    decoded = decode_data("input 'x'", RawTensor(values.tobytes()), datatype, [2, 2])
    assert decoded.shape == (2, 2) and decoded.dtype == DATATYPES[datatype]
    np.testing.assert_array_equal(decoded.reshape(-1), values)


@pytest.mark.parametrize(
    ("raw", "datatype", "message"),
    [
        (b"\x00" * 15, "FP32", "binary_data_size is 15 bytes but shape [2, 2] of float32 needs 16"),
        (b"\x00\x01\x02\x01", "BOOL", "bytes 0 or 1"),
        (b"\x00" * 16, "BYTES", "not supported"),
    ],
)
def test_raw_binary_data_of_the_wrong_size_or_values_is_refused(raw: bytes, datatype: str, message: str) -> None:
    with pytest.raises(ProtocolError, match=re.escape(message)):
        decode_data("input 'x'", RawTensor(raw), datatype, [2, 2])


def test_v1_instances_become_rows_of_the_primary_input() -> None:
    flat = parse_v1_instances({"instances": [[0, 1, 2, 3], [4, 5, 6, 7]]}, IMAGE)
    nested = parse_v1_instances({"instances": [[[[0, 1], [2, 3]]], [[[4, 5], [6, 7]]]]}, IMAGE)
    np.testing.assert_array_equal(flat, nested)
    assert flat.shape == (2, 1, 2, 2)
    ids = parse_v1_instances({"instances": [[1, 2, 3], [4, 5, 6]]}, IDS)
    assert ids.shape == (2, 3) and ids.dtype == np.int64


@pytest.mark.parametrize(
    ("body", "spec", "message"),
    [
        ({"instances": []}, IMAGE, "non-empty 'instances'"),
        ({"inputs": []}, IMAGE, "non-empty 'instances'"),
        ({"instances": [[0, 1, 2]]}, IMAGE, "data has 3 elements but shape [1, 1, 2, 2] needs 4"),
        ({"instances": [[1, 2, 3], [4, 5]]}, IDS, "ragged"),
        ({"instances": [1, 2, 3]}, IDS, "does not match the model's [-1, -1]"),
    ],
)
def test_bad_v1_instances_are_refused(body: Any, spec: TensorSpec, message: str) -> None:
    with pytest.raises(ProtocolError) as refused:
        parse_v1_instances(body, spec)
    assert message in refused.value.message


def test_v1_predictions_are_one_object_per_instance() -> None:
    tensors = {"probabilities": np.eye(2, 10, dtype=np.float32), "predicted_class": np.array([0, 1])}
    predictions = encode_v1_predictions(tensors, OUTPUTS)["predictions"]
    assert [p["predicted_class"] for p in predictions] == [0, 1]
    assert predictions[1]["probabilities"][1] == 1.0
