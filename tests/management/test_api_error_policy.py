"""The one error policy of the operator's requests, against a real HTTP server on loopback.

Throttling (429, after its Retry-After) and transient server errors (5xx) are tried again a
few times; any other error raises ``ApiError`` at once with the server's reason and message.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable

from aiohttp import web
from kubernetes import client

from aidc.management.apiserver import ATTEMPTS, ApiError, ApiServer, _retry_after

Answer = tuple[int, dict[str, str]]


def _status(code: int, reason: str) -> bytes:
    return json.dumps({"kind": "Status", "code": code, "reason": reason, "message": f"the {reason} message"}).encode()


async def _serve(answers: list[Answer], run: Callable[[ApiServer], Awaitable[object]]) -> tuple[object, int]:
    """Serves ``answers`` in turn (the last one again and again); what ``run`` returned and the requests seen."""
    seen = 0

    async def handler(request: web.Request) -> web.Response:
        nonlocal seen
        code, headers = answers[min(seen, len(answers) - 1)]
        seen += 1
        body = b"{}" if code < 300 else _status(code, {409: "AlreadyExists", 403: "Forbidden"}.get(code, "Busy"))
        return web.Response(status=code, body=body, headers=headers, content_type="application/json")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    configuration = client.Configuration()
    configuration.host = f"http://127.0.0.1:{port}"
    server = ApiServer(configuration, max_requests=4)
    try:
        try:
            result: object = await run(server)
        except ApiError as error:
            result = error
        return result, seen
    finally:
        await server.close()
        await runner.cleanup()


def _post(server: ApiServer) -> Awaitable[bytes]:
    return server.request("POST", "/api/v1/namespaces/ml/pods", {"metadata": {"name": "p"}})


def test_throttling_is_waited_out_as_the_server_asks() -> None:
    result, seen = asyncio.run(_serve([(429, {"Retry-After": "0"}), (201, {})], _post))
    assert (result, seen) == (b"{}", 2)


def test_server_errors_are_tried_again_then_raised() -> None:
    result, seen = asyncio.run(_serve([(503, {"Retry-After": "0"})], _post))
    assert isinstance(result, ApiError) and result.status == 503 and seen == ATTEMPTS


def test_other_errors_raise_at_once_with_the_servers_reason() -> None:
    result, seen = asyncio.run(_serve([(409, {})], _post))
    assert isinstance(result, ApiError) and seen == 1
    assert (result.status, result.reason, result.message) == (409, "AlreadyExists", "the AlreadyExists message")


def test_retry_after_is_honoured_within_bounds() -> None:
    assert _retry_after({"Retry-After": "3"}, 0) == 3.0
    assert _retry_after({"Retry-After": "3600"}, 0) == 10.0  # a pass is not held for an hour
    assert _retry_after({}, 0) == 0.5 and _retry_after({}, 1) == 1.0  # no advice: a short backoff


def test_a_conflict_on_create_means_it_exists_a_missing_object_on_delete_means_gone() -> None:
    from aidc.management.cluster import Cluster, CreationRefusedError
    from aidc.management.metrics import OperatorMetrics
    from aidc.management.plan import PodDeletion

    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "ml"}}

    async def create(server: ApiServer) -> object:
        try:
            return await Cluster(server, OperatorMetrics()).create(pod)
        except CreationRefusedError as error:
            return error

    async def delete(server: ApiServer) -> object:
        return await Cluster(server, OperatorMetrics()).delete_pod("ml", PodDeletion("p"))

    assert asyncio.run(_serve([(409, {})], create)) == (False, 1)
    assert asyncio.run(_serve([(201, {})], create)) == (True, 1)
    assert asyncio.run(_serve([(404, {})], delete)) == (None, 1)
    refused, _ = asyncio.run(_serve([(403, {})], create))
    assert isinstance(refused, CreationRefusedError) and "the Forbidden message" in str(refused)
