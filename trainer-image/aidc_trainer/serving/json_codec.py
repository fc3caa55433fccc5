"""JSON of the model routes: orjson, and simdjson for the numbers of an infer request's tensors.

The standard library's ``json`` spent more time on a 28x28 image (784 numbers) than the small
model's forward pass: about 180 us to read it and 9 us to write ten probabilities through
``tolist()``. orjson reads the same body in about 20 us and writes numpy arrays itself, without a
Python float per element (``OPT_SERIALIZE_NUMPY``), but reading still makes a float object per
element, which numpy then copies (about 15 us more). ``loads_infer`` reads an infer request with
simdjson instead and copies each floating-point input's flat ``data`` straight into a float64
array (``as_buffer``): no Python object per number, about 10 us for the same image. numpy's own
text reader (``np.fromstring``) measured slower than either (about 220 us). Whatever simdjson
does not read as plain numbers (nested lists, a null, a string or a boolean among them, integer
datatypes, malformed JSON) is read by orjson as before, so it is refused with the same message.
Clients that want no text at all send the binary extension (``binary_tensors``).
"""

from __future__ import annotations

from typing import Any, Final

import numpy as np
import orjson
import simdjson

from aidc_trainer.serving.protocol import NumericData, ProtocolError

FLOATING: Final = frozenset({"FP16", "FP32", "FP64"})  # datatypes whose numbers float64 holds
OPENING_BRACKET: Final = ord("[")


def loads(body: bytes) -> Any:
    """The body's JSON value; a 400 naming the problem when it is not JSON."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as error:
        problem = "nested too deeply" if str(error).startswith("depth limit") else str(error)
        raise ProtocolError(f"malformed JSON: {problem}") from error


def _fallback(value: Any) -> Any:
    if isinstance(value, np.ndarray):  # a dtype or layout orjson does not write itself
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def dumps(value: Any) -> bytes:
    """JSON of ``value``; numpy arrays and scalars are written without a Python object per element."""
    return orjson.dumps(value, default=_fallback, option=orjson.OPT_SERIALIZE_NUMPY)


def loads_infer(body: bytes) -> Any:
    """An infer request's JSON value, as ``loads`` reads it, except that each input of a floating
    datatype whose ``data`` is a flat list of numbers comes as ``NumericData``."""
    try:
        # a parser per body: simdjson refuses to parse again while any value of the last body lives
        document = simdjson.Parser().parse(body)
    except (ValueError, RuntimeError):  # malformed or too deep: orjson's message
        return loads(body)
    inputs = document.get("inputs") if isinstance(document, simdjson.Object) else None
    if not isinstance(document, simdjson.Object) or not isinstance(inputs, simdjson.Array):
        return loads(body)  # parse_infer_request refuses it, with the value orjson reads
    try:
        value = {key: _plain(item) for key, item in _members(document) if key != "inputs"}
        value["inputs"] = [_input(entry) for entry in inputs]
    except _RepeatedKeyError:
        return loads(body)
    if _opening_brackets(body) != _brackets(value):  # simdjson flattened a list nested in a flat one
        return loads(body)
    return value


def _opening_brackets(body: bytes) -> int:
    """How many ``[`` bytes ``body`` holds; numpy compares 16 or 32 bytes at a time, where
    ``bytes.count`` of one byte goes byte by byte (4.3 against 2.6 us on a 28x28 image's 15 kB body)."""
    return int(np.count_nonzero(np.frombuffer(body, dtype=np.uint8) == OPENING_BRACKET))


def _brackets(value: Any) -> int:
    """How many ``[`` the JSON text of ``value`` holds: its lists, flat numbers, keys and strings."""
    if isinstance(value, NumericData):
        return 1
    if isinstance(value, list):
        return 1 + sum(_brackets(item) for item in value)
    if isinstance(value, dict):
        return sum(key.count("[") + _brackets(item) for key, item in value.items())
    return value.count("[") if isinstance(value, str) else 0


def _plain(value: Any) -> Any:
    if isinstance(value, simdjson.Object):
        return value.as_dict()
    if isinstance(value, simdjson.Array):
        return value.as_list()
    return value


def _input(entry: Any) -> Any:
    if not isinstance(entry, simdjson.Object):
        return _plain(entry)
    members = dict(_members(entry))
    value = {key: _plain(item) for key, item in members.items() if key != "data"}
    if "data" in members:
        data = members["data"]
        value["data"] = _numbers(data) if value.get("datatype") in FLOATING else _plain(data)
    return value


class _RepeatedKeyError(Exception):
    """An object names a key twice: orjson's path reads the body instead."""


def _members(value: simdjson.Object) -> list[tuple[str, Any]]:
    """An object's keys and values, or ``_RepeatedKeyError`` when it names a key twice: orjson keeps
    the last one, but simdjson's ``obj[key]`` finds the first, so ``"datatype"`` given twice would
    read differently (objects nested deeper are converted whole by ``as_dict``, which keeps the
    last, as orjson does)."""
    keys = list(value.keys())
    if len(set(keys)) != len(keys):
        raise _RepeatedKeyError
    return [(key, value[key]) for key in keys]


def _numbers(data: Any) -> Any:
    """A flat list of numbers as NumericData; anything else as orjson would read it."""
    if not isinstance(data, simdjson.Array) or len(data) == 0 or isinstance(data[0], simdjson.Array):
        return _plain(data)
    try:
        # a copy: frombuffer's array is read-only, and an FP64 input goes to torch as it is
        values = np.frombuffer(data.as_buffer(of_type="d"), dtype=np.float64).copy()
    except TypeError:  # a null, string, boolean or object among the numbers
        return data.as_list()
    return NumericData(values)  # a list nested in it is caught by counting brackets (loads_infer)
