"""The head of an HTTP/1.1 request, read only far enough to tell whether the front door may answer it.

The front door (``front_door``) answers one kind of request itself: ``POST`` of a v2 infer URL with
a ``Content-Length`` body within the server's limit. This module frames such a request and says
"not mine" for anything else, strictly: a request line or field it does not fully understand, a
repeated field, ``Transfer-Encoding``, ``Expect``, ``Upgrade``, a query, percent-encoding or dot
segments in the path. Those go to aiohttp with the connection, byte for byte, so aiohttp's own
parser decides them; the front door never frames a request differently from how aiohttp would.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

MAX_HEAD_BYTES: Final = 16 * 1024  # a longer head is aiohttp's to refuse (its lines stop at 8190)
HEAD_END: Final = b"\r\n\r\n"
# names of models and versions as aiohttp would route them, limited to what needs no decoding
_SEGMENT: Final = rb"[A-Za-z0-9_\-][A-Za-z0-9._\-]*"
_REQUEST_LINE: Final = re.compile(
    rb"POST (/v2/models/(" + _SEGMENT + rb")(?:/versions/(" + _SEGMENT + rb"))?/infer) HTTP/1\.1"
)
# RFC 9110 field: a token, a colon, the value between optional whitespace; no control bytes
_FIELD: Final = re.compile(rb"([!#$%&'*+\-.^_`|~0-9A-Za-z]+):([\t\x20-\x7e\x80-\xff]*)")
_REFUSED_FIELDS: Final = frozenset({b"transfer-encoding", b"expect", b"upgrade"})
_DIGITS: Final = re.compile(rb"[0-9]{1,15}")
_VERSIONED: Final = "/v2/models/{model}/versions/{version}/infer"
_UNVERSIONED: Final = "/v2/models/{model}/infer"


@dataclass(frozen=True, slots=True)
class InferHead:
    """What the front door needs of an infer request's head."""

    model: str
    version: str | None
    head_bytes: int  # the request line and fields, the blank line included
    body_bytes: int
    authorization: str | None
    header_length: str | None  # Inference-Header-Content-Length, the binary extension's
    keep_alive: bool

    @property
    def request_bytes(self) -> int:
        """The whole request: head and body."""
        return self.head_bytes + self.body_bytes

    @property
    def endpoint(self) -> str:
        """The route template the metrics count it under, as aiohttp's router names it."""
        return _UNVERSIONED if self.version is None else _VERSIONED


class Incomplete:
    """The head has not all arrived yet."""


INCOMPLETE: Final = Incomplete()


def read_head(buffer: bytes | bytearray, max_body_bytes: int) -> InferHead | Incomplete | None:
    """The infer request at the start of ``buffer``, :data:`INCOMPLETE`, or None: not the front door's."""
    end = buffer.find(HEAD_END, 0, MAX_HEAD_BYTES)
    if end < 0:
        return INCOMPLETE if len(buffer) < MAX_HEAD_BYTES else None
    lines = bytes(buffer[:end]).split(b"\r\n")
    target = _REQUEST_LINE.fullmatch(lines[0])
    fields = _fields(lines[1:])
    if target is None or fields is None:
        return None
    length = fields.get(b"content-length")
    if length is None or _DIGITS.fullmatch(length) is None or int(length) > max_body_bytes:
        return None
    version = target.group(3)
    return InferHead(
        model=target.group(2).decode(),
        version=None if version is None else version.decode(),
        head_bytes=end + len(HEAD_END),
        body_bytes=int(length),
        authorization=_text(fields.get(b"authorization")),
        header_length=_text(fields.get(b"inference-header-content-length")),
        keep_alive=not _names_close(fields.get(b"connection")),
    )


def _fields(lines: list[bytes]) -> dict[bytes, bytes] | None:
    """The fields by lower-case name, or None for a line that is not a field, a repeated name, or a
    field that changes how the body is framed or answered."""
    fields: dict[bytes, bytes] = {}
    for line in lines:
        field = _FIELD.fullmatch(line)
        if field is None:
            return None
        name = field.group(1).lower()
        if name in fields or name in _REFUSED_FIELDS:
            return None
        fields[name] = field.group(2).strip(b" \t")
    return fields


def _text(value: bytes | None) -> str | None:
    """A field's value as aiohttp hands it to handlers."""
    return None if value is None else value.decode("utf-8", "surrogateescape")


def _names_close(connection: bytes | None) -> bool:
    return connection is not None and b"close" in (
        option.strip() for option in connection.lower().split(b",")
    )
