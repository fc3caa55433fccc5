"""The HTTP surface: Open Inference Protocol v2 REST routes, KServe v1 ``:predict``, ``/metrics``.

Handlers stay thin: they look the model up, read the body within its limit, hand the JSON to
``protocol`` for validation, the rows to the batcher, and the outputs back to ``protocol`` for
encoding. One middleware turns every refusal into ``{"error": "..."}`` with its status and
records each request's count and latency by route template, so every error path is observable.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from importlib import metadata
from typing import Any, Final

from aiohttp import web
from aiohttp.typedefs import Middleware

from aidc_trainer.serving import json_codec
from aidc_trainer.serving.auth import Gate, auth_middleware
from aidc_trainer.serving.batcher import DynamicBatcher
from aidc_trainer.serving.binary_tensors import EXTENSION, HEADER_LENGTH
from aidc_trainer.serving.infer_route import MODEL_VERSION, answer_infer, decode_body, served
from aidc_trainer.serving.metrics import CONTENT_TYPE
from aidc_trainer.serving.openai_api import add_openai_routes
from aidc_trainer.serving.protocol import ProtocolError, encode_v1_predictions, parse_v1_instances
from aidc_trainer.serving.servable import Servable
from aidc_trainer.serving.state import ServingState

log = logging.getLogger(__name__)

SERVER_NAME: Final = "aidc-model-server"


def _package_version() -> str:
    try:
        return metadata.version("aidc-trainer")
    except metadata.PackageNotFoundError:
        return "0.0.0"


STATE: Final = web.AppKey("state", ServingState)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


@web.middleware
async def observe(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn refusals into JSON errors and count every request by route template and code."""
    started = time.perf_counter()
    response: web.StreamResponse
    try:
        response = await handler(request)
    except ProtocolError as error:
        response = _error(error.status, error.message)
    except web.HTTPException as error:  # the router's 404 and 405, aiohttp's own 413
        response = _error(error.status, f"{error.reason}: {request.method} {request.path}")
    except Exception as error:
        log.exception("request %s %s failed", request.method, request.path)
        response = _error(500, f"internal error: {type(error).__name__}: {error}")
    resource = request.match_info.route.resource
    endpoint = resource.canonical if resource is not None else "unmatched"
    request.app[STATE].metrics.answered(endpoint, str(response.status), time.perf_counter() - started)
    return response


def _served(request: web.Request) -> tuple[ServingState, Servable, DynamicBatcher]:
    """The model a request names, or the refusal: 404 for another name, 503 while loading."""
    state = request.app[STATE]
    servable, batcher = served(state, request.match_info["model"], request.match_info.get("version"))
    return state, servable, batcher


async def _read_body(request: web.Request, limit: int) -> bytes:
    """The raw body; 413 beyond ``limit`` bytes (checked before reading when declared)."""
    declared = request.content_length
    if declared is not None and declared > limit:
        raise ProtocolError(
            f"request body of {declared} bytes exceeds the limit of {limit} bytes", status=413
        )
    try:
        return await request.read()
    except web.HTTPRequestEntityTooLarge as error:
        raise ProtocolError(f"request body exceeds the limit of {limit} bytes", status=413) from error


async def _read_json(request: web.Request, limit: int) -> Any:
    """The body as JSON; with ``Inference-Header-Content-Length`` the inputs' binary data attached."""
    return decode_body(await _read_body(request, limit), request.headers.get(HEADER_LENGTH))


def _json(value: Any, status: int = 200) -> web.Response:
    return web.Response(body=json_codec.dumps(value), status=status, content_type="application/json")


async def live(request: web.Request) -> web.Response:
    """The process answers: liveness never depends on the model, or a slow load would be killed."""
    return web.Response(status=200)


async def ready(request: web.Request) -> web.Response:
    """200 once the model is loaded and warmed up; a 4xx before, as the protocol asks."""
    return web.Response(status=200 if request.app[STATE].ready else 400)


async def server_metadata(request: web.Request) -> web.Response:
    return _json({"name": SERVER_NAME, "version": _package_version(), "extensions": [EXTENSION]})


async def model_ready(request: web.Request) -> web.Response:
    try:
        _served(request)
    except ProtocolError as error:
        return web.Response(status=400 if error.status == 503 else error.status)
    return web.Response(status=200)


async def model_metadata(request: web.Request) -> web.Response:
    state, servable, _ = _served(request)
    return web.json_response(
        {
            "name": state.model_name,
            "versions": [MODEL_VERSION],
            "platform": servable.platform,
            "inputs": [spec.to_json() for spec in servable.inputs],
            "outputs": [spec.to_json() for spec in servable.outputs],
        }
    )


async def infer(request: web.Request) -> web.Response:
    """The route aiohttp serves when the front door hands a connection over (see ``front_door``)."""
    state, servable, batcher = _served(request)
    body = await _read_body(request, state.max_request_bytes)
    answer = await answer_infer(state, servable, batcher, body, request.headers.get(HEADER_LENGTH))
    return web.Response(body=answer.body, content_type=answer.content_type, headers=answer.headers)


async def predict_v1(request: web.Request) -> web.Response:
    """KServe v1 compatibility: instances are rows of the model's primary input."""
    state, servable, batcher = _served(request)
    primary = servable.primary_input
    rows = parse_v1_instances(await _read_json(request, state.max_request_bytes), primary)
    work = servable.prepare({primary.name: rows}, {})
    tensors = await batcher.submit(work)
    return _json(encode_v1_predictions(tensors, servable.outputs))


async def metrics(request: web.Request) -> web.Response:
    body = request.app[STATE].metrics.render()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})


def create_runner(
    state: ServingState, gate: Gate | None = None, shutdown_timeout: float = 60.0
) -> web.AppRunner:
    """The app's runner; a client that disconnects cancels its handler (``handler_cancellation``),
    so its rows leave the batcher's queue instead of taking room in a forward pass."""
    return web.AppRunner(
        create_app(state, gate),
        access_log=None,
        handle_signals=False,
        shutdown_timeout=shutdown_timeout,
        handler_cancellation=True,
    )


def create_app(state: ServingState, gate: Gate | None = None) -> web.Application:
    """The application; the body limit is enforced by aiohttp too, for bodies of unknown length.

    With a ``gate`` every route but the health probes and ``/metrics`` needs a credential; the
    refusals still pass through ``observe``, so they are counted like any other answer.
    """
    middlewares: list[Middleware] = [observe] if gate is None else [observe, auth_middleware(gate)]
    app = web.Application(middlewares=middlewares, client_max_size=state.max_request_bytes)
    app[STATE] = state
    if gate is not None:

        async def close_gate(_: web.Application) -> None:
            await gate.close()

        app.on_cleanup.append(close_gate)
    app.router.add_get("/v2/health/live", live)
    app.router.add_get("/v2/health/ready", ready)
    app.router.add_get("/v2", server_metadata)
    for prefix in ("/v2/models/{model}", "/v2/models/{model}/versions/{version}"):
        app.router.add_get(prefix, model_metadata)
        app.router.add_get(prefix + "/ready", model_ready)
        app.router.add_post(prefix + "/infer", infer)
    app.router.add_post("/v1/models/{model}:predict", predict_v1)
    app.router.add_get("/metrics", metrics)
    state.openai = add_openai_routes(app, state.max_request_bytes)
    return app
