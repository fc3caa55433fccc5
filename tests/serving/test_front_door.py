"""The front door over real sockets: infer requests answered on the lean path, the rest by aiohttp.

Raw bytes on the wire, so a test controls framing, pipelining and timing exactly. aiohttp names
itself in a ``Server`` field and the front door does not, which tells the two paths apart. Every
test runs on asyncio's own event loop and on uvloop (the server's), since handing a connection over
depends on the transport's ``set_protocol``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import uvloop

from aidc_trainer.serving.auth import ApiKeyGate
from aidc_trainer.serving.server import tls_context
from aidc_trainer.serving.settings import parse_settings
from tests.serving.harness import InProcessServer, ScaleServable, in_process_server, loaded

KEY = "sk-front-door"
LoopFactory = Callable[[], asyncio.AbstractEventLoop] | None


@pytest.fixture(params=["asyncio", "uvloop"])
def loop_factory(request: pytest.FixtureRequest) -> LoopFactory:
    return None if request.param == "asyncio" else uvloop.new_event_loop


def run(loop_factory: LoopFactory, scenario: Callable[[], Awaitable[None]]) -> None:
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(scenario())  # type: ignore[arg-type]


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def by_aiohttp(self) -> bool:
        return "aiohttp" in self.headers.get("server", "")

    def json(self) -> Any:
        return json.loads(self.body)


def rows(*values: float) -> bytes:
    data = [value for value in values for _ in range(3)]
    return json.dumps({"inputs": [{"name": "x", "shape": [len(values), 3], "datatype": "FP32", "data": data}]}).encode()


def post(body: bytes, path: str = "/v2/models/m/infer", *fields: str) -> bytes:
    head = [f"POST {path} HTTP/1.1", "Host: t", f"Content-Length: {len(body)}", *fields]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def chunked(body: bytes, path: str = "/v2/models/m/infer", *fields: str) -> bytes:
    """The same request with a chunked body, which the front door leaves to aiohttp."""
    head = [f"POST {path} HTTP/1.1", "Host: t", "Transfer-Encoding: chunked", *fields]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)


def get(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode()


async def read_answer(reader: asyncio.StreamReader) -> Answer:
    head = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)).decode("latin-1").split("\r\n")
    status = int(head[0].split(" ")[1])
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in head[1:] if line)}
    if 100 <= status < 200:  # an interim answer (100 Continue): the real one follows
        return await read_answer(reader)
    return Answer(status, headers, await reader.readexactly(int(headers.get("content-length", "0"))))


class Client:
    """One connection to the server."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def ask(self, data: bytes) -> Answer:
        await self.send(data)
        return await read_answer(self.reader)

    async def closed_by_server(self) -> bool:
        return await asyncio.wait_for(self.reader.read(), 30) == b""

    def close(self) -> None:
        self.writer.close()


async def connect(server: InProcessServer, context: ssl.SSLContext | None = None) -> Client:
    port = int(server.url.rsplit(":", 1)[1])
    host = "localhost" if context else "127.0.0.1"
    return Client(*await asyncio.open_connection(host, port, ssl=context))


async def ready(server: InProcessServer) -> None:
    await asyncio.wait_for(server.loading, 30)


@contextlib.asynccontextmanager
async def ready_client(
    model: ScaleServable | None = None, **options: Any
) -> AsyncIterator[tuple[InProcessServer, Client]]:
    """A server whose model has loaded, and one connection to it (closed afterwards)."""
    async with in_process_server(loaded(model or ScaleServable()), **options) as server:
        await ready(server)
        client = await connect(server)
        try:
            yield server, client
        finally:
            client.close()


def test_infer_is_answered_at_the_front_door_and_the_connection_goes_to_aiohttp_for_anything_else(
    loop_factory: LoopFactory,
) -> None:
    async def scenario() -> None:
        async with ready_client() as (_server, client):
            first = await client.ask(post(rows(1.0)))
            assert first.status == 200 and not first.by_aiohttp
            assert first.json()["outputs"][0]["data"] == [2.0, 2.0, 2.0]
            metadata = await client.ask(get("/v2/models/m"))
            assert metadata.status == 200 and metadata.by_aiohttp and metadata.json()["name"] == "m"
            again = await client.ask(post(rows(2.0)))  # the connection is aiohttp's for good
            assert (
                again.status == 200
                and again.by_aiohttp
                and again.json()
                == {
                    **first.json(),
                    "outputs": again.json()["outputs"],
                }
            )
            assert again.json()["outputs"][0]["data"] == [4.0, 4.0, 4.0]

    run(loop_factory, scenario)


def test_pipelined_requests_are_answered_in_order(loop_factory: LoopFactory) -> None:
    async def scenario() -> None:
        async with ready_client() as (_server, client):
            await client.send(post(rows(1.0)) + post(rows(2.0)) + get("/v2/models/m/ready") + post(rows(3.0)))
            answers = [await read_answer(client.reader) for _ in range(4)]
            assert [answer.status for answer in answers] == [200] * 4
            assert [answer.by_aiohttp for answer in answers] == [False, False, True, True]
            totals = [answers[i].json()["outputs"][1]["data"] for i in (0, 1, 3)]
            assert totals == [[3.0], [6.0], [9.0]]

    run(loop_factory, scenario)


def test_a_request_that_arrives_a_byte_at_a_time_is_answered(loop_factory: LoopFactory) -> None:
    async def scenario() -> None:
        async with ready_client() as (_server, client):
            for byte in post(rows(1.0, 2.0)):
                await client.send(bytes([byte]))
            answer = await read_answer(client.reader)
            assert answer.status == 200 and not answer.by_aiohttp
            assert answer.json()["outputs"][1]["data"] == [3.0, 6.0]

    run(loop_factory, scenario)


LEFT_TO_AIOHTTP = {
    "chunked": (chunked(rows(1.0)), 200),
    "expect 100-continue": (post(rows(1.0), "/v2/models/m/infer", "Expect: 100-continue"), 200),
    "a body over the limit": (post(b"[" * 5000), 413),
    "two lengths": (post(rows(1.0), "/v2/models/m/infer", "Content-Length: 3"), 400),
    "a length and chunked": (post(rows(1.0), "/v2/models/m/infer", "Transfer-Encoding: chunked"), 400),
    "not HTTP": (b"HELLO\r\n\r\n", 400),
    "a query": (post(rows(1.0), "/v2/models/m/infer?x=1"), 200),
    "percent-encoded": (post(rows(1.0), "/v2/models/%6d/infer"), 200),
}


@pytest.mark.parametrize(("raw", "status"), LEFT_TO_AIOHTTP.values(), ids=LEFT_TO_AIOHTTP.keys())
def test_requests_the_front_door_does_not_frame_are_aiohttps_and_the_server_stays_up(
    loop_factory: LoopFactory, raw: bytes, status: int
) -> None:
    async def scenario() -> None:
        async with ready_client(max_request_bytes=4096) as (server, client):
            answer = await client.ask(raw)
            assert (answer.status, answer.by_aiohttp) == (status, True)
            fresh = await connect(server)
            after = await fresh.ask(post(rows(1.0)))
            assert after.status == 200 and not after.by_aiohttp
            fresh.close()

    run(loop_factory, scenario)


SAME_ANSWER = {
    "answered": ("/v2/models/m/infer", rows(1.0), KEY),
    "versioned": ("/v2/models/m/versions/1/infer", rows(1.0), KEY),
    "another model": ("/v2/models/other/infer", rows(1.0), KEY),
    "another version": ("/v2/models/m/versions/7/infer", rows(1.0), KEY),
    "malformed JSON": ("/v2/models/m/infer", b'{"inputs": [', KEY),
    "a wrong shape": ("/v2/models/m/infer", rows(1.0).replace(b"[1, 3]", b"[2, 3]"), KEY),
    "the model fails": ("/v2/models/m/infer", rows(-1.0), KEY),
    "no credential": ("/v2/models/m/infer", rows(1.0), None),
    "a wrong credential": ("/v2/models/m/infer", rows(1.0), "wrong"),
}


@pytest.mark.parametrize(("path", "body", "token"), SAME_ANSWER.values(), ids=SAME_ANSWER.keys())
def test_the_front_door_answers_word_for_word_as_aiohttp_does(
    loop_factory: LoopFactory, path: str, body: bytes, token: str | None
) -> None:
    fields = [f"Authorization: Bearer {token}"] if token is not None else []

    async def scenario() -> None:
        async with ready_client(ScaleServable(poison=True), gate=ApiKeyGate(KEY)) as (_server, client):
            lean = await client.ask(post(body, path, *fields))
            full = await client.ask(chunked(body, path, *fields))
            assert (lean.by_aiohttp, full.by_aiohttp) == (False, True)
            assert lean.status == full.status and lean.json() == full.json()
            assert lean.headers.get("www-authenticate") == full.headers.get("www-authenticate")
            assert lean.headers["content-type"] == full.headers["content-type"]

    run(loop_factory, scenario)


def test_a_model_still_loading_is_a_503_on_both_paths(loop_factory: LoopFactory) -> None:
    hold = threading.Event()

    async def scenario() -> None:
        async with in_process_server(loaded(ScaleServable(gate=hold))) as server:
            client = await connect(server)
            lean = await client.ask(post(rows(1.0)))
            full = await client.ask(chunked(rows(1.0)))
            assert (lean.status, full.status) == (503, 503) and lean.json() == full.json()
            hold.set()
            client.close()

    run(loop_factory, scenario)


def test_answers_are_counted_by_route_template_and_code(loop_factory: LoopFactory) -> None:
    async def scenario() -> None:
        async with ready_client() as (server, client):
            for request in (post(rows(1.0)), post(rows(1.0)), post(b"{", "/v2/models/m/versions/1/infer")):
                assert not (await client.ask(request)).by_aiohttp
            sample = server.state.metrics.registry.get_sample_value
            assert sample("aidc_server_requests_total", {"endpoint": "/v2/models/{model}/infer", "code": "200"}) == 2
            versioned = {"endpoint": "/v2/models/{model}/versions/{version}/infer", "code": "400"}
            assert sample("aidc_server_requests_total", versioned) == 1
            assert sample("aidc_server_request_duration_seconds_count", versioned) == 1

    run(loop_factory, scenario)


def test_connection_close_is_honoured(loop_factory: LoopFactory) -> None:
    async def scenario() -> None:
        async with ready_client() as (_server, client):
            answer = await client.ask(post(rows(1.0), "/v2/models/m/infer", "Connection: close"))
            assert answer.status == 200 and answer.headers["connection"] == "close"
            assert await client.closed_by_server()

    run(loop_factory, scenario)


def test_an_idle_connection_is_closed_after_the_keepalive_time(loop_factory: LoopFactory) -> None:
    async def scenario() -> None:
        async with ready_client(keepalive_seconds=0.2) as (_server, client):
            assert (await client.ask(post(rows(1.0)))).status == 200
            assert await client.closed_by_server()

    run(loop_factory, scenario)


def test_draining_answers_the_request_in_flight_then_closes_its_connection(loop_factory: LoopFactory) -> None:
    hold = threading.Event()
    hold.set()
    model = ScaleServable(gate=hold)

    async def scenario() -> None:
        async with in_process_server(loaded(model)) as server:
            await ready(server)
            busy, idle = await connect(server), await connect(server)
            assert (await idle.ask(post(rows(1.0)))).status == 200
            hold.clear()
            model.running.clear()
            await busy.send(post(rows(5.0)))
            assert await asyncio.to_thread(model.running.wait, 30)
            stopping = asyncio.create_task(server.site.stop())
            assert await idle.closed_by_server()  # idle connections close at once
            with pytest.raises(OSError):
                await connect(server)  # no longer listening
            hold.set()
            answer = await read_answer(busy.reader)
            assert answer.status == 200 and answer.headers["connection"] == "close"
            assert answer.json()["outputs"][1]["data"] == [15.0]
            assert await busy.closed_by_server()
            await asyncio.wait_for(stopping, 30)

    run(loop_factory, scenario)


@pytest.fixture
def tls(certificate: tuple[Path, Path]) -> Iterator[tuple[ssl.SSLContext, ssl.SSLContext]]:
    """The server's context and a client's that trusts it."""
    cert, key = certificate
    server = tls_context(parse_settings(["--tls-cert-file", str(cert), "--tls-key-file", str(key)], {}))
    assert server is not None
    yield server, ssl.create_default_context(cafile=str(cert))


def test_over_https_the_front_door_answers_and_hands_over(
    loop_factory: LoopFactory, tls: tuple[ssl.SSLContext, ssl.SSLContext]
) -> None:
    async def scenario() -> None:
        async with in_process_server(loaded(ScaleServable()), ssl_context=tls[0]) as server:
            await ready(server)
            client = await connect(server, tls[1])
            first = await client.ask(post(rows(1.0)))
            assert first.status == 200 and not first.by_aiohttp
            metadata = await client.ask(get("/v2/models/m"))
            assert metadata.status == 200 and metadata.by_aiohttp
            client.close()

    run(loop_factory, scenario)
