"""The wire formats: Open Inference Protocol v2 (REST) and KServe v1 ``:predict``, parsed strictly.

Everything a client can get wrong is checked here, before a request reaches the batcher, so that
one bad request fails alone with a 4xx naming the problem and never poisons a batch that other
clients share. The functions are pure (JSON-shaped values in, numpy arrays out and back), which
keeps the rules testable without a model or a socket. Tensor data comes as JSON lists, as
``NumericData`` that ``json_codec.loads_infer`` read straight into numpy, or, with the binary
tensor data extension, as ``RawTensor`` bytes cut from the body by ``binary_tensors``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
import numpy.typing as npt

# OIP datatype name -> numpy dtype. BF16 has no numpy type: it is recognised (so the error says
# "wrong datatype", not "unknown datatype") but no model here declares it.
DATATYPES: Final[Mapping[str, np.dtype[Any] | None]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BF16": None,
    "BYTES": np.dtype(object),
}

Array = npt.NDArray[Any]


@dataclass(frozen=True)
class RawTensor:
    """An input's data sent with the binary tensor data extension: little-endian, row-major bytes."""

    data: bytes | memoryview


@dataclass(frozen=True)
class NumericData:
    """An input's flat JSON ``data`` of numbers, already read into float64 by ``json_codec.loads_infer``."""

    values: Array


class ProtocolError(Exception):
    """A request the server refuses; ``status`` is the HTTP code, the message goes to the client."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class TensorSpec:
    """A named tensor of the model's signature; -1 marks a variable dimension (the batch first).

    ``optional`` inputs may be left out: the GAN takes either its latent noise or a count.
    """

    name: str
    datatype: str
    shape: tuple[int, ...]
    optional: bool = False

    def to_json(self) -> dict[str, Any]:
        """The metadata form of ``GET /v2/models/<m>``."""
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


@dataclass(frozen=True)
class InferRequest:
    """A validated v2 inference request: decoded inputs, and which outputs to return (None: all)."""

    inputs: Mapping[str, Array]
    id: str | None = None
    parameters: Mapping[str, Any] = field(default_factory=dict)
    outputs: tuple[str, ...] | None = None
    binary_outputs: frozenset[str] = frozenset()  # outputs to return as raw bytes after the JSON


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _shape(where: str, value: Any) -> tuple[int, ...]:
    if not isinstance(value, list) or not all(isinstance(d, int) and not isinstance(d, bool) for d in value):
        raise ProtocolError(f"{where}: shape must be a list of integers, got {_describe(value)}")
    if any(d < 0 for d in value):
        raise ProtocolError(f"{where}: shape dimensions must be >= 0, got {value}")
    return tuple(value)


def check_shape(where: str, shape: Sequence[int], spec: TensorSpec) -> None:
    """Raise unless ``shape`` fits ``spec`` (same rank, equal where the spec is not -1, rows >= 1)."""
    if len(shape) != len(spec.shape) or any(s not in (-1, d) for s, d in zip(spec.shape, shape, strict=True)):
        raise ProtocolError(f"{where}: shape {list(shape)} does not match the model's {list(spec.shape)}")
    if spec.shape and shape[0] < 1:
        raise ProtocolError(f"{where}: the batch dimension must be >= 1, got {shape[0]}")


def decode_data(where: str, data: Any, datatype: str, shape: Sequence[int]) -> Array:
    """Turn row-major ``data`` (flat or nested lists, or raw bytes) into an array of ``shape``.

    The element count must equal the product of ``shape`` whatever the nesting: a request whose
    data and shape disagree is ambiguous, and guessing would answer a different question.
    """
    dtype = DATATYPES[datatype]
    if dtype is None or datatype == "BYTES":
        raise ProtocolError(f"{where}: datatype {datatype} is not supported by this server")
    if isinstance(data, RawTensor):
        return _decode_raw(where, data, dtype, shape)
    if isinstance(data, NumericData):
        values = data.values
    elif not isinstance(data, list):
        raise ProtocolError(f"{where}: data must be a list, got {_describe(data)}")
    else:
        try:
            values = np.asarray(data)
        except (ValueError, OverflowError, RecursionError) as error:
            raise ProtocolError(
                f"{where}: data is ragged or not made of {datatype} values ({error})"
            ) from error
    expected = math.prod(shape)
    if values.size != expected:
        raise ProtocolError(
            f"{where}: data has {values.size} elements but shape {list(shape)} needs {expected}"
        )
    if expected:
        _check_kind(where, values, datatype, dtype)
    return values.astype(dtype, copy=False).reshape(tuple(shape))


def _check_kind(where: str, values: Array, datatype: str, dtype: np.dtype[Any]) -> None:
    kind = values.dtype.kind
    if kind == "O":
        raise ProtocolError(
            f"{where}: data holds values that are not {datatype} (nulls, objects or too large)"
        )
    if dtype.kind == "f" and kind not in "iuf":
        raise ProtocolError(f"{where}: {datatype} data must be numbers, got {values.dtype.name} values")
    if dtype.kind in "iu":
        if kind not in "iu":
            raise ProtocolError(f"{where}: {datatype} data must be integers, got {values.dtype.name} values")
        info = np.iinfo(dtype)
        if values.min() < info.min or values.max() > info.max:
            raise ProtocolError(f"{where}: {datatype} data out of range [{info.min}, {info.max}]")
    if dtype.kind == "b" and kind != "b":
        raise ProtocolError(f"{where}: BOOL data must be true or false, got {values.dtype.name} values")


def _decode_raw(where: str, data: RawTensor, dtype: np.dtype[Any], shape: Sequence[int]) -> Array:
    """Binary data: exactly the shape's bytes, little-endian; copied, so the body can be freed."""
    expected = math.prod(shape) * dtype.itemsize
    if len(data.data) != expected:
        raise ProtocolError(
            f"{where}: binary_data_size is {len(data.data)} bytes but shape {list(shape)} of "
            f"{dtype.name} needs {expected}"
        )
    values = np.frombuffer(data.data, dtype=dtype.newbyteorder("<")).astype(dtype, copy=True)
    if dtype.kind == "b" and values.size and np.frombuffer(data.data, dtype=np.uint8).max() > 1:
        raise ProtocolError(f"{where}: BOOL binary data must be bytes 0 or 1")
    return values.reshape(tuple(shape))


def _decode_input(index: int, entry: Any, specs: Mapping[str, TensorSpec]) -> tuple[str, Array]:
    if not isinstance(entry, dict):
        raise ProtocolError(f"inputs[{index}] must be an object with name, shape, datatype and data")
    name = entry.get("name")
    if not isinstance(name, str):
        raise ProtocolError(f"inputs[{index}]: name must be a string, got {_describe(name)}")
    where = f"input '{name}'"
    spec = specs.get(name)
    if spec is None:
        raise ProtocolError(f"the model has no input '{name}'; its inputs are: {', '.join(specs)}")
    parameters = entry.get("parameters") or {}
    if isinstance(parameters, dict) and "binary_data_size" in parameters and "data" not in entry:
        raise ProtocolError(
            f"{where}: binary_data_size needs the binary data after the JSON and its length in the "
            "Inference-Header-Content-Length header"
        )
    for key in ("shape", "datatype", "data"):
        if key not in entry:
            raise ProtocolError(f"{where}: {key} is missing")
    datatype = entry["datatype"]
    if datatype not in DATATYPES:
        raise ProtocolError(f"{where}: unknown datatype {_describe(datatype)}")
    if datatype != spec.datatype:
        raise ProtocolError(f"{where}: wrong datatype {datatype}, the model expects {spec.datatype}")
    shape = _shape(where, entry["shape"])
    check_shape(where, shape, spec)
    return name, decode_data(where, entry["data"], datatype, shape)


def parse_infer_request(
    body: Any, inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec]
) -> InferRequest:
    """Validate a decoded ``/v2/models/<m>/infer`` body against the model's signature."""
    if not isinstance(body, dict):
        raise ProtocolError("the request body must be a JSON object with an 'inputs' list")
    request_id = body.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise ProtocolError(f"id must be a string, got {_describe(request_id)}")
    parameters = body.get("parameters", {})
    if not isinstance(parameters, dict):
        raise ProtocolError(f"parameters must be an object, got {_describe(parameters)}")
    entries = body.get("inputs")
    if not isinstance(entries, list):
        raise ProtocolError(f"inputs must be a list of tensors, got {_describe(entries)}")
    specs = {spec.name: spec for spec in inputs}
    decoded: dict[str, Array] = {}
    for index, entry in enumerate(entries):
        name, array = _decode_input(index, entry, specs)
        if name in decoded:
            raise ProtocolError(f"input '{name}' is given twice")
        decoded[name] = array
    missing = [spec.name for spec in inputs if not spec.optional and spec.name not in decoded]
    if missing:
        raise ProtocolError(f"missing input {', '.join(repr(n) for n in missing)}")
    requested = _requested_outputs(body.get("outputs"), outputs)
    return InferRequest(
        inputs=decoded,
        id=request_id,
        parameters=parameters,
        outputs=requested,
        binary_outputs=_binary_outputs(body.get("outputs"), parameters, requested or outputs),
    )


def _requested_outputs(value: Any, outputs: Sequence[TensorSpec]) -> tuple[str, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(
        isinstance(o, dict) and isinstance(o.get("name"), str) for o in value
    ):
        raise ProtocolError("outputs must be a list of objects with a name")
    known = {spec.name for spec in outputs}
    names = tuple(o["name"] for o in value)
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ProtocolError(
            f"the model has no output '{unknown[0]}'; its outputs are: {', '.join(sorted(known))}"
        )
    return names


def _binary_outputs(
    value: Any, parameters: Mapping[str, Any], returned: Sequence[str] | Sequence[TensorSpec]
) -> frozenset[str]:
    """Outputs to send as raw bytes: all with ``binary_data_output``, each output's ``binary_data`` wins."""
    names = [item if isinstance(item, str) else item.name for item in returned]
    chosen = set(names) if parameters.get("binary_data_output") is True else set()
    for entry in value if isinstance(value, list) else ():
        flag = (entry.get("parameters") or {}).get("binary_data") if isinstance(entry, dict) else None
        if flag is True:
            chosen.add(entry["name"])
        elif flag is False:
            chosen.discard(entry["name"])
    return frozenset(chosen)


def encode_infer_response(
    model_name: str,
    model_version: str,
    request_id: str | None,
    tensors: Mapping[str, Array],
    outputs: Sequence[TensorSpec],
    requested: tuple[str, ...] | None,
    binary: frozenset[str] = frozenset(),
) -> tuple[dict[str, Any], list[bytes]]:
    """The v2 response: the JSON body (data flat, row-major numpy) and the binary outputs' bytes.

    Outputs named in ``binary`` carry ``binary_data_size`` instead of ``data``; their bytes follow
    the JSON in the order the outputs are listed, as the binary tensor data extension lays out.
    """
    datatypes = {spec.name: spec.datatype for spec in outputs}
    names = requested if requested is not None else tuple(name for name in datatypes if name in tensors)
    response: dict[str, Any] = {"model_name": model_name, "model_version": model_version}
    if request_id is not None:
        response["id"] = request_id
    entries: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for name in names:
        if name not in tensors:
            continue
        array = tensors[name]
        entry: dict[str, Any] = {"name": name, "datatype": datatypes[name], "shape": list(array.shape)}
        if name in binary:
            blob = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            entry["data"] = np.ascontiguousarray(array).reshape(-1)
        entries.append(entry)
    response["outputs"] = entries
    return response, blobs


def parse_v1_instances(body: Any, spec: TensorSpec) -> Array:
    """Decode a KServe v1 ``{"instances": [...]}`` body as rows of the model's primary input.

    Each instance is one row; fixed dimensions of the spec reshape flat instances, variable ones
    (a language model's sequence length) come from the instances' own nesting.
    """
    if not isinstance(body, dict) or not isinstance(body.get("instances"), list) or not body["instances"]:
        raise ProtocolError("the request body must be a JSON object with a non-empty 'instances' list")
    instances: list[Any] = body["instances"]
    where = "instances"
    row_shape = spec.shape[1:]
    if -1 in row_shape:
        try:
            nested = np.asarray(instances)
        except ValueError as error:
            raise ProtocolError(f"{where}: instances are ragged ({error})") from error
        shape: tuple[int, ...] = nested.shape
    else:
        shape = (len(instances), *row_shape)
    check_shape(where, shape, spec)
    return decode_data(where, instances, spec.datatype, shape)


def encode_v1_predictions(tensors: Mapping[str, Array], outputs: Sequence[TensorSpec]) -> dict[str, Any]:
    """``{"predictions": [...]}``: one object per instance holding each output's row."""
    names = [spec.name for spec in outputs if spec.name in tensors]
    rows = len(tensors[names[0]]) if names else 0
    return {"predictions": [{name: tensors[name][row].tolist() for name in names} for row in range(rows)]}
