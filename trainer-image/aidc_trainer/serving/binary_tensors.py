"""The binary tensor data extension of the Open Inference Protocol (as Triton and KServe accept it).

A request may carry its tensors as raw little-endian, row-major bytes after the JSON: the header
``Inference-Header-Content-Length`` says where the JSON ends, and each input with the parameter
``binary_data_size`` takes that many bytes, in the order the inputs are listed. The same layout
answers a request that asks for binary outputs. No text is parsed or written for the numbers, so a
28x28 image costs a memcpy instead of 784 float conversions each way.
"""

from __future__ import annotations

from typing import Any, Final

from aidc_trainer.serving.protocol import ProtocolError, RawTensor

HEADER_LENGTH: Final = "Inference-Header-Content-Length"
EXTENSION: Final = "binary_tensor_data"  # the name servers list in their metadata's extensions
BINARY_CONTENT_TYPE: Final = "application/octet-stream"


def split_body(body: bytes, header_length: str) -> tuple[bytes, memoryview]:
    """The JSON part and the bytes after it, as the header's length divides them."""
    try:
        length = int(header_length)
    except ValueError:
        length = -1
    if not 0 <= length <= len(body):
        raise ProtocolError(
            f"{HEADER_LENGTH} must be the JSON's length in bytes, at most the body's {len(body)}; "
            f"got {header_length[:40]!r}"
        )
    return body[:length], memoryview(body)[length:]


def _binary_size(where: str, entry: dict[str, Any]) -> int | None:
    parameters = entry.get("parameters")
    size = parameters.get("binary_data_size") if isinstance(parameters, dict) else None
    if size is None:
        return None
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise ProtocolError(f"{where}: binary_data_size must be a non-negative integer, got {size!r}")
    if "data" in entry:
        raise ProtocolError(f"{where}: give either data or binary_data_size, not both")
    return size


def attach_inputs(request: Any, blob: memoryview) -> None:
    """Give each input with ``binary_data_size`` its bytes as ``data``, in order; all bytes must be used.

    Bodies of the wrong shape are left for ``parse_infer_request`` to refuse with its own messages.
    """
    entries = request.get("inputs") if isinstance(request, dict) else None
    offset = 0
    for index, entry in enumerate(entries if isinstance(entries, list) else ()):
        if not isinstance(entry, dict):
            continue
        where = f"input '{entry.get('name', index)}'"
        size = _binary_size(where, entry)
        if size is None:
            continue
        if offset + size > len(blob):
            raise ProtocolError(
                f"{where}: binary_data_size {size} runs past the end of the body "
                f"({len(blob) - offset} bytes left)"
            )
        entry["data"] = RawTensor(blob[offset : offset + size])
        offset += size
    if offset != len(blob):
        raise ProtocolError(
            f"the body has {len(blob) - offset} bytes after the JSON that no input's binary_data_size claims"
        )


def join_body(header: bytes, blobs: list[bytes]) -> bytes:
    """The JSON header followed by the outputs' bytes (its length goes in ``HEADER_LENGTH``)."""
    return b"".join([header, *blobs])
