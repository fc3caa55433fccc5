"""The server's front door: v2 infer requests answered on a lean path, everything else by aiohttp.

aiohttp spends a task, a request and a response object and a middleware chain on every request:
65-80 us on this project's 2-core machine, a fifth of a small model's whole request
(benchmarks/server/RESULTS.md). So each connection starts here. A request that ``request_head``
frames as an infer request is answered here, with the same auth gate, refusals, metrics and
batcher as aiohttp's route (``infer_route``). The first request that is anything else (another
route, a chunked body, ``Expect``, a body over the limit, a head that is not plain) goes to
aiohttp with the connection: aiohttp's request handler takes the transport and every byte not yet
answered, so every other route and every odd request behaves exactly as it did before.

One request at a time per connection, so answers keep their order; pipelined requests wait in the
buffer. A client that goes away cancels its request, so its rows leave the batcher's queue.
Draining (SIGTERM) closes idle connections at once and busy ones after their answer.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from email.utils import formatdate
from http import HTTPStatus
from typing import Final, cast

from aidc_trainer.serving import json_codec
from aidc_trainer.serving.auth import Gate, refusal, refusal_headers
from aidc_trainer.serving.infer_route import answer_infer, served
from aidc_trainer.serving.protocol import ProtocolError
from aidc_trainer.serving.request_head import Incomplete, InferHead, read_head
from aidc_trainer.serving.state import ServingState

log = logging.getLogger(__name__)

KEEPALIVE_SECONDS: Final = 75.0  # aiohttp's keepalive_timeout: an idle connection is closed after it
ERROR_CONTENT_TYPE: Final = "application/json; charset=utf-8"  # what aiohttp's json_response sends
Protocol = Callable[[], asyncio.Protocol]


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes
    content_type: str
    headers: Mapping[str, str] = field(default_factory=dict)


def error_reply(status: int, message: str, headers: Mapping[str, str] | None = None) -> Reply:
    """A refusal as aiohttp's routes word it: ``{"error": "..."}``."""
    return Reply(status, json_codec.dumps({"error": message}), ERROR_CONTENT_TYPE, headers or {})


class FrontDoor:
    """What the connections share: the model, the gate, aiohttp for hand-overs, the open connections."""

    def __init__(
        self,
        state: ServingState,
        gate: Gate | None,
        aiohttp: Protocol,
        keepalive_seconds: float = KEEPALIVE_SECONDS,
    ) -> None:
        self.state, self.gate, self.aiohttp = state, gate, aiohttp
        self.visits: set[Visit] = set()
        self.closing = False
        self.keepalive_seconds = keepalive_seconds
        self._sweeper: asyncio.Task[None] | None = None
        self._date = (0, b"")

    def open(self) -> None:
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep())

    async def answer(self, head: InferHead, body: bytes) -> Reply:
        """The reply to one infer request; counted by route template and code like aiohttp's."""
        started = time.perf_counter()
        try:
            reply = await self._reply(head, body)
        except ProtocolError as error:
            reply = error_reply(error.status, error.message)
        except Exception as error:
            log.exception("request POST %s failed", head.endpoint)
            reply = error_reply(500, f"internal error: {type(error).__name__}: {error}")
        self.state.metrics.answered(head.endpoint, str(reply.status), time.perf_counter() - started)
        return reply

    async def _reply(self, head: InferHead, body: bytes) -> Reply:
        if self.gate is not None:
            refused = await refusal(self.gate, head.authorization)
            if refused is not None:
                return error_reply(refused.status, refused.message, refusal_headers(refused))
        servable, batcher = served(self.state, head.model, head.version)
        answer = await answer_infer(self.state, servable, batcher, body, head.header_length)
        return Reply(200, answer.body, answer.content_type, answer.headers)

    def date(self) -> bytes:
        """The ``Date`` field's value, formatted once a second."""
        now = int(time.time())
        if now != self._date[0]:
            self._date = (now, formatdate(now, usegmt=True).encode())
        return self._date[1]

    async def _sweep(self) -> None:
        """Close connections idle for longer than the keep-alive time, as aiohttp does."""
        while True:
            await asyncio.sleep(self.keepalive_seconds / 4)
            idle_since = time.monotonic() - self.keepalive_seconds
            for visit in [visit for visit in self.visits if visit.idle and visit.last_seen < idle_since]:
                visit.close()

    async def drain(self, timeout: float) -> None:
        """Close idle connections now and busy ones after their answer; abort what is left at ``timeout``."""
        self.closing = True
        if self._sweeper is not None:
            self._sweeper.cancel()
        for visit in list(self.visits):
            if visit.idle:
                visit.close()
        deadline = time.monotonic() + timeout
        while self.visits and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        for visit in list(self.visits):
            visit.abort()


def encode_reply(reply: Reply, date: bytes, keep_alive: bool) -> bytes:
    """The reply as HTTP/1.1 bytes: status line, fields, blank line, body."""
    fields = [
        b"HTTP/1.1 %d %s" % (reply.status, HTTPStatus(reply.status).phrase.encode()),
        b"Content-Type: " + reply.content_type.encode(),
        b"Content-Length: %d" % len(reply.body),
        b"Date: " + date,
    ]
    fields.extend(f"{name}: {value}".encode() for name, value in reply.headers.items())
    if not keep_alive:
        fields.append(b"Connection: close")
    fields.append(b"\r\n")
    return b"\r\n".join(fields) + reply.body


class Visit(asyncio.Protocol):
    """One client connection while the front door holds it."""

    def __init__(self, door: FrontDoor) -> None:
        self.door = door
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.answering: asyncio.Task[None] | None = None
        self.last_seen = time.monotonic()
        self.reading_paused = self.writing_paused = False

    @property
    def idle(self) -> bool:
        return self.answering is None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.door.visits.add(self)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        self.last_seen = time.monotonic()
        if self.idle and not self.writing_paused:
            self._serve_next()
        elif len(self.buffer) > self.door.state.max_request_bytes and not self.reading_paused:
            self._pause_reading()  # a client that pipelines more than a request's worth waits

    def eof_received(self) -> None:
        return None  # the transport closes: a client that stops sending has gone, as aiohttp takes it

    def connection_lost(self, exc: Exception | None) -> None:
        self.door.visits.discard(self)
        if self.answering is not None:
            self.answering.cancel()  # the client went away: its rows leave the batcher's queue

    def pause_writing(self) -> None:
        self.writing_paused = True

    def resume_writing(self) -> None:
        self.writing_paused = False
        if self.idle:
            self._serve_next()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def _serve_next(self) -> None:
        """Answer the request at the buffer's start, hand the connection to aiohttp, or wait for it."""
        if self.door.closing:
            self.close()
            return
        head = read_head(self.buffer, self.door.state.max_request_bytes)
        if head is None:
            self._hand_off()
            return
        if isinstance(head, Incomplete) or len(self.buffer) < head.request_bytes:
            self._wait_for_more()
            return
        body = bytes(self.buffer[head.head_bytes : head.request_bytes])
        del self.buffer[: head.request_bytes]
        self.answering = asyncio.get_running_loop().create_task(self._answer(head, body))

    def _wait_for_more(self) -> None:
        if self.reading_paused:
            self.transport.resume_reading()  # type: ignore[union-attr]
            self.reading_paused = False

    async def _answer(self, head: InferHead, body: bytes) -> None:
        reply = await self.door.answer(head, body)
        keep_alive = head.keep_alive and not self.door.closing
        self.transport.write(encode_reply(reply, self.door.date(), keep_alive))  # type: ignore[union-attr]
        self.answering = None
        if not keep_alive:
            self.close()
        elif not self.writing_paused:
            self._serve_next()

    def _pause_reading(self) -> None:
        self.transport.pause_reading()  # type: ignore[union-attr]
        self.reading_paused = True

    def _hand_off(self) -> None:
        """Give the connection and its unanswered bytes to aiohttp's request handler for good."""
        self.door.visits.discard(self)
        transport = self.transport
        assert transport is not None
        handler = self.door.aiohttp()
        transport.set_protocol(handler)
        handler.connection_made(transport)
        if self.reading_paused:
            transport.resume_reading()
        if self.buffer:
            handler.data_received(bytes(self.buffer))
            self.buffer.clear()
