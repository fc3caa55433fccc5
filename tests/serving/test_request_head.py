"""request_head: which request heads the front door may answer itself, and how it frames them.

Everything the front door does not fully understand must come back as None, so that aiohttp's
own parser gets the connection: a wrongly accepted head would be framed differently from how
aiohttp frames it.
"""

from __future__ import annotations

import pytest

from aidc_trainer.serving.request_head import INCOMPLETE, MAX_HEAD_BYTES, InferHead, read_head

LIMIT = 1000
INFER = b"POST /v2/models/m/infer HTTP/1.1\r\n"


def head(*fields: bytes, line: bytes = INFER) -> bytes:
    return line + b"".join(field + b"\r\n" for field in fields) + b"\r\n"


def test_a_plain_infer_head_is_framed_with_what_the_answer_needs() -> None:
    raw = head(b"Host: x", b"content-length:  12 ", b"Authorization: Bearer k", b"Inference-Header-Content-Length: 7")
    framed = read_head(raw + b"{}", LIMIT)
    assert framed == InferHead(
        model="m",
        version=None,
        head_bytes=len(raw),
        body_bytes=12,
        authorization="Bearer k",
        header_length="7",
        keep_alive=True,
    )
    assert framed.endpoint == "/v2/models/{model}/infer"


def test_the_versioned_route_and_connection_close() -> None:
    raw = head(
        b"Content-Length: 0",
        b"Connection: keep-alive, Close",
        line=b"POST /v2/models/m-1/versions/1/infer HTTP/1.1\r\n",
    )
    framed = read_head(raw, LIMIT)
    assert isinstance(framed, InferHead)
    assert (framed.model, framed.version, framed.keep_alive) == ("m-1", "1", False)
    assert framed.endpoint == "/v2/models/{model}/versions/{version}/infer"


@pytest.mark.parametrize(
    "raw",
    [b"", b"POST /v2/models/m/infer HTTP/1.1\r\nContent-Length: 3\r\n", head(b"Content-Length: 3")[:-1]],
    ids=["nothing", "no blank line", "half the blank line"],
)
def test_a_head_still_arriving_is_incomplete(raw: bytes) -> None:
    assert read_head(raw, LIMIT) is INCOMPLETE


NOT_THE_FRONT_DOORS = {
    "another method": head(b"Content-Length: 2", line=b"PUT /v2/models/m/infer HTTP/1.1\r\n"),
    "lower-case method": head(b"Content-Length: 2", line=b"post /v2/models/m/infer HTTP/1.1\r\n"),
    "HTTP/1.0": head(b"Content-Length: 2", line=b"POST /v2/models/m/infer HTTP/1.0\r\n"),
    "another route": head(b"Content-Length: 2", line=b"POST /v1/models/m:predict HTTP/1.1\r\n"),
    "a query": head(b"Content-Length: 2", line=b"POST /v2/models/m/infer?x=1 HTTP/1.1\r\n"),
    "percent-encoding": head(b"Content-Length: 2", line=b"POST /v2/models/%6d/infer HTTP/1.1\r\n"),
    "a dot segment": head(b"Content-Length: 2", line=b"POST /v2/models/../infer HTTP/1.1\r\n"),
    "absolute form": head(b"Content-Length: 2", line=b"POST http://x/v2/models/m/infer HTTP/1.1\r\n"),
    "two spaces": head(b"Content-Length: 2", line=b"POST  /v2/models/m/infer HTTP/1.1\r\n"),
    "a blank line first": b"\r\n" + head(b"Content-Length: 2"),
    "no length": head(b"Host: x"),
    "chunked": head(b"Transfer-Encoding: chunked"),
    "length and chunked": head(b"Content-Length: 2", b"Transfer-Encoding: chunked"),
    "two lengths": head(b"Content-Length: 2", b"Content-Length: 2"),
    "two lengths in any case": head(b"Content-Length: 2", b"content-length: 3"),
    "a signed length": head(b"Content-Length: +2"),
    "a list of lengths": head(b"Content-Length: 2, 2"),
    "a hex length": head(b"Content-Length: 0x2"),
    "a length over the limit": head(b"Content-Length: 1001"),
    "a length of 16 digits": head(b"Content-Length: 0000000000000002"),
    "expect": head(b"Content-Length: 2", b"Expect: 100-continue"),
    "upgrade": head(b"Content-Length: 2", b"Upgrade: h2c"),
    "a folded line": head(b"Content-Length: 2", b"X-A: b", b" c"),
    "space before the colon": head(b"Content-Length : 2"),
    "no colon": head(b"Content-Length: 2", b"X-A"),
    "a bare LF in a value": head(b"Content-Length: 2", b"X-A: b\nContent-Length: 5"),
    "a bare CR in a value": head(b"Content-Length: 2", b"X-A: b\rc"),
    "a NUL in a value": head(b"Content-Length: 2", b"X-A: b\x00"),
    "a head too long to finish": INFER + b"X-A: " + b"a" * MAX_HEAD_BYTES,
}


@pytest.mark.parametrize("raw", NOT_THE_FRONT_DOORS.values(), ids=NOT_THE_FRONT_DOORS.keys())
def test_anything_else_goes_to_aiohttp(raw: bytes) -> None:
    assert read_head(raw, LIMIT) is None


def test_a_length_at_the_limit_is_the_front_doors() -> None:
    assert isinstance(read_head(head(b"Content-Length: 1000"), LIMIT), InferHead)
