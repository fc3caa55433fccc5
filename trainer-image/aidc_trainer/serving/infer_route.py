"""The v2 infer route's work apart from HTTP: the model a request names, its body decoded, the
batcher's outputs encoded.

Two ways into the server share it: aiohttp's handler (``app.infer``) and the front door's lean
path (``front_door``). Whatever the way, a request gets the same refusals in the same order
(404 for another model, 503 while loading, 400 for a body the protocol refuses) and the same
answer.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from aidc_trainer.serving import json_codec
from aidc_trainer.serving.batcher import DynamicBatcher
from aidc_trainer.serving.binary_tensors import (
    BINARY_CONTENT_TYPE,
    HEADER_LENGTH,
    attach_inputs,
    join_body,
    split_body,
)
from aidc_trainer.serving.protocol import ProtocolError, encode_infer_response, parse_infer_request
from aidc_trainer.serving.servable import Servable
from aidc_trainer.serving.state import ServingState

MODEL_VERSION: Final = "1"
JSON_CONTENT_TYPE: Final = "application/json"


@dataclass(frozen=True)
class Answer:
    """A successful answer's body, its content type and any headers it needs besides."""

    body: bytes
    content_type: str = JSON_CONTENT_TYPE
    headers: Mapping[str, str] = field(default_factory=dict)


def served(state: ServingState, name: str, version: str | None) -> tuple[Servable, DynamicBatcher]:
    """The model a request names, or the refusal: 404 for another name, 503 while loading."""
    if name != state.model_name:
        raise ProtocolError(f"unknown model '{name}'; this server serves '{state.model_name}'", status=404)
    if version is not None and version != MODEL_VERSION:
        raise ProtocolError(
            f"model '{name}' has no version '{version}'; it has '{MODEL_VERSION}'", status=404
        )
    if not state.ready or state.servable is None or state.batcher is None:
        raise ProtocolError(f"model '{name}' is not ready yet", status=503)
    return state.servable, state.batcher


def decode_body(
    body: bytes, header_length: str | None, read: Callable[[bytes], Any] = json_codec.loads
) -> Any:
    """The body as JSON (``read`` it); with ``Inference-Header-Content-Length`` the inputs' binary
    data attached."""
    if header_length is None:
        return read(body)
    header, blob = split_body(body, header_length)
    value = json_codec.loads(header)
    attach_inputs(value, blob)
    return value


async def answer_infer(
    state: ServingState, servable: Servable, batcher: DynamicBatcher, body: bytes, header_length: str | None
) -> Answer:
    """Run one infer request's rows through the batcher; binary outputs when the request asks."""
    parsed = parse_infer_request(
        decode_body(body, header_length, json_codec.loads_infer), servable.inputs, servable.outputs
    )
    work = servable.prepare(parsed.inputs, parsed.parameters)
    tensors = await batcher.submit(work)
    encoded, blobs = encode_infer_response(
        state.model_name,
        MODEL_VERSION,
        parsed.id,
        tensors,
        servable.outputs,
        parsed.outputs,
        parsed.binary_outputs,
    )
    header = json_codec.dumps(encoded)
    if not blobs:
        return Answer(header)
    return Answer(join_body(header, blobs), BINARY_CONTENT_TYPE, {HEADER_LENGTH: str(len(header))})
