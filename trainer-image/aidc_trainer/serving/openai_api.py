"""The OpenAI API of a language model: ``/v1/models``, ``/v1/completions``, ``/v1/chat/completions``.

Requests are checked field by field and refused in OpenAI's error shape
(``{"error": {"message", "type", "param", "code"}}``) with the right 4xx: 404 for another model,
400 for a bad type or range or a prompt longer than the context, 413 beyond the body limit, 429
with ``Retry-After`` when the engine's queue is full, 503 while loading. ``stream: true`` answers
with server-sent events of ``chunk`` objects ending with ``data: [DONE]``; a client that goes away
mid-stream cancels its generations. ``usage`` counts prompt and completion tokens.

The built-in language model's tokens are UTF-8 bytes; a Hugging Face model's are its tokenizer's,
and chat messages go through the tokenizer's chat template. A model without one gets the documented
plain template: one ``<role>: <content>`` line per message, then ``assistant:`` to answer.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final

from aiohttp import web

from aidc_trainer.models import LanguageModel
from aidc_trainer.pretrained import CausalLmLogits
from aidc_trainer.serving.engine import CachedModel, Engine, EngineObserver, Generation, QueueFullError
from aidc_trainer.serving.hf_cache import HFSlotCache
from aidc_trainer.serving.kv_cache import SlotCache
from aidc_trainer.serving.sampling import SamplingParams

MAX_TOKENS: Final = 4096
MAX_CHOICES: Final = 16
RETRY_AFTER_SECONDS: Final = 1


class OpenAIError(Exception):
    def __init__(
        self, status: int, message: str, param: str | None = None, kind: str = "invalid_request_error"
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.kind = status, message, param, kind

    def response(self) -> web.Response:
        body = {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": None}}
        headers = {"Retry-After": str(RETRY_AFTER_SECONDS)} if self.status == 429 else None
        return web.json_response(body, status=self.status, headers=headers)


@dataclass(frozen=True)
class TextCodec:
    """Text to token ids and back, and chat messages to a prompt's ids."""

    encode: Callable[[str], list[int]]
    decode: Callable[[list[int]], str]
    encode_chat: Callable[[list[dict[str, str]]], list[int]]
    end_token: int | None = None


def plain_chat(messages: list[dict[str, str]]) -> str:
    """The documented template of models without one: a ``<role>: <content>`` line per message, then
    ``assistant:`` to answer."""
    return "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant:"


def byte_codec() -> TextCodec:
    """The built-in model's: UTF-8 bytes, and the plain chat template."""

    def encode(text: str) -> list[int]:
        return list(text.encode("utf-8"))

    return TextCodec(
        encode=encode,
        decode=lambda ids: bytes(ids).decode("utf-8", errors="replace"),
        encode_chat=lambda messages: encode(plain_chat(messages)),
    )


def tokenizer_codec(tokenizer: Any) -> TextCodec:
    """A Hugging Face tokenizer's: its chat template where it has one (the template adds the special
    tokens it wants), the plain template otherwise; generation ends at its end-of-sequence token."""

    def encode(text: str) -> list[int]:
        return list(tokenizer(text)["input_ids"])

    def encode_chat(messages: list[dict[str, str]]) -> list[int]:
        if not getattr(tokenizer, "chat_template", None):
            return encode(plain_chat(messages))
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])

    return TextCodec(
        encode=encode,
        decode=lambda ids: str(tokenizer.decode(ids, skip_special_tokens=True)),
        encode_chat=encode_chat,
        end_token=tokenizer.eos_token_id,
    )


@dataclass
class LanguageModelEndpoint:
    """What the OpenAI routes serve: the engine, the codec and the name clients use."""

    name: str
    engine: Engine
    codec: TextCodec
    created: int


@dataclass
class OpenAIState:
    """Set on the application when it is made; ``endpoint`` appears once the model is loaded and warm."""

    body_limit: int
    endpoint: LanguageModelEndpoint | None = None


OPENAI: Final = web.AppKey("openai", OpenAIState)


def language_endpoint(
    module: object,
    name: str,
    *,
    slots: int = 16,
    max_waiting: int = 64,
    observer: EngineObserver | None = None,
) -> LanguageModelEndpoint | None:
    """The endpoint of a language model the routes can serve: the built-in one over bytes, or a
    Hugging Face causal LM with its tokenizer (None for any other model)."""
    if isinstance(module, LanguageModel) and module.tokens.num_embeddings == 256:
        cache: CachedModel = SlotCache(module, slots)
        codec, context = byte_codec(), module.context_length
    elif isinstance(module, CausalLmLogits) and module.tokenizer is not None:
        context = int(getattr(module.model.config, "max_position_embeddings", 0) or 2048)
        cache, codec = HFSlotCache(module.model, slots, context), tokenizer_codec(module.tokenizer)
    else:
        return None
    engine = Engine(cache, context_length=context, max_waiting=max_waiting, end_token=codec.end_token,
                    text_of=codec.decode, observer=observer)  # fmt: skip
    return LanguageModelEndpoint(name, engine, codec, int(time.time()))


async def warm_up(endpoint: LanguageModelEndpoint) -> None:
    """Start the engine and run one short generation: ready means a generation has run."""
    endpoint.engine.start()
    generation = endpoint.engine.submit(
        endpoint.codec.encode("a"), SamplingParams(max_tokens=2, temperature=0)
    )
    await _drain(endpoint, generation)


# --- reading a request ------------------------------------------------------------------------


def _number(body: dict[str, Any], key: str, default: float, low: float, high: float) -> float:
    value = body.get(key, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise OpenAIError(400, f"'{key}' must be a number in [{low}, {high}], got {json.dumps(value)}", key)
    return float(value)


def _integer(body: dict[str, Any], key: str, default: int | None, low: int, high: int) -> int | None:
    value = body.get(key, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise OpenAIError(400, f"'{key}' must be an integer in [{low}, {high}], got {json.dumps(value)}", key)
    return value


def _stop(body: dict[str, Any]) -> tuple[str, ...]:
    value = body.get("stop")
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or len(value) > 4 or not all(isinstance(s, str) and s for s in value):
        raise OpenAIError(400, "'stop' must be a string or a list of up to 4 non-empty strings", "stop")
    return tuple(value)


def sampling_of(body: dict[str, Any]) -> tuple[SamplingParams, int, bool]:
    """The sampling parameters, ``n`` and ``stream`` of a request body."""
    max_tokens = _integer(body, "max_tokens", 16, 1, MAX_TOKENS)
    if body.get("max_completion_tokens") is not None:
        max_tokens = _integer(body, "max_completion_tokens", 16, 1, MAX_TOKENS)
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise OpenAIError(400, f"'stream' must be true or false, got {json.dumps(stream)}", "stream")
    params = SamplingParams(
        max_tokens=int(max_tokens or 16),
        temperature=_number(body, "temperature", 1.0, 0.0, 2.0),
        top_p=_number(body, "top_p", 1.0, 0.0, 1.0) or 1.0,
        stop=_stop(body),
        seed=_integer(body, "seed", None, -(2**63), 2**63 - 1),
    )
    return params, int(_integer(body, "n", 1, 1, MAX_CHOICES) or 1), stream


async def _body(request: web.Request) -> dict[str, Any]:
    limit = request.app[OPENAI].body_limit
    if request.content_length is not None and request.content_length > limit:
        raise OpenAIError(
            413, f"request body of {request.content_length} bytes exceeds the limit of {limit} bytes"
        )
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge as error:
        raise OpenAIError(413, f"request body exceeds the limit of {limit} bytes") from error
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError) as error:
        raise OpenAIError(400, f"malformed JSON: {error}") from error
    if not isinstance(body, dict):
        raise OpenAIError(400, "the body must be a JSON object")
    return body


def _endpoint(request: web.Request, body: dict[str, Any] | None = None) -> LanguageModelEndpoint:
    endpoint = request.app[OPENAI].endpoint
    if endpoint is None:
        raise OpenAIError(503, "the model is not ready yet", kind="server_error")
    if body is not None:
        model = body.get("model")
        if not isinstance(model, str):
            raise OpenAIError(400, "'model' is required: a string", "model")
        if model != endpoint.name:
            raise OpenAIError(
                404, f"the model '{model}' does not exist; this server serves '{endpoint.name}'", "model"
            )
    return endpoint


def _prompt_text(body: dict[str, Any]) -> str:
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if not isinstance(prompt, str) or not prompt:
        raise OpenAIError(400, "'prompt' must be a non-empty string", "prompt")
    return prompt


def _messages(body: dict[str, Any]) -> list[dict[str, str]]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise OpenAIError(400, "'messages' must be a non-empty list", "messages")
    for index, message in enumerate(messages):
        if (
            not isinstance(message, dict)
            or message.get("role") not in ("system", "user", "assistant", "developer")
            or not isinstance(message.get("content"), str)
        ):
            raise OpenAIError(
                400, f"messages[{index}] must be {{role: system|user|assistant|developer, content: string}}",
                f"messages[{index}]",
            )  # fmt: skip
    return messages


# --- answering ----------------------------------------------------------------------------------


def _start(
    endpoint: LanguageModelEndpoint, prompt: list[int], params: SamplingParams, n: int
) -> list[Generation]:
    generations: list[Generation] = []
    try:
        for index in range(n):
            seeded = params if params.seed is None else dataclasses.replace(params, seed=params.seed + index)
            generations.append(endpoint.engine.submit(prompt, seeded))
    except QueueFullError as error:
        for generation in generations:
            generation.cancelled = True
        raise OpenAIError(
            429, f"the server is busy ({error}); retry later", kind="rate_limit_error"
        ) from error
    except ValueError as error:  # the prompt does not fit the context
        raise OpenAIError(400, str(error), "prompt") from error
    return generations


def _text(endpoint: LanguageModelEndpoint, generation: Generation) -> str:
    text = endpoint.codec.decode(generation.tokens)
    for stop in generation.params.stop:
        cut = text.find(stop)
        if cut >= 0:
            text = text[:cut]
    return text


def _usage(prompt: list[int], generations: list[Generation]) -> dict[str, int]:
    completion = sum(len(g.tokens) for g in generations)
    return {
        "prompt_tokens": len(prompt),
        "completion_tokens": completion,
        "total_tokens": len(prompt) + completion,
    }


async def _drain(endpoint: LanguageModelEndpoint, generation: Generation) -> None:
    async for _ in endpoint.engine.tokens(generation):
        pass


Shape = Callable[[int, str | None, str], dict[str, Any]]  # (index, finish_reason, text) -> a choice


async def _answer(
    request: web.Request, kind: str, prompt: list[int], body: dict[str, Any], choice: Shape, delta: Shape
) -> web.StreamResponse:
    endpoint = _endpoint(request)
    params, n, stream = sampling_of(body)
    generations = _start(endpoint, prompt, params, n)
    identity = f"{'chatcmpl' if kind == 'chat.completion' else 'cmpl'}-{secrets.token_hex(12)}"
    head = {"id": identity, "created": int(time.time()), "model": endpoint.name}
    if stream:
        chunk_kind = f"{kind}.chunk" if kind == "chat.completion" else kind
        return await _stream(request, endpoint, generations, prompt, {**head, "object": chunk_kind}, delta)
    try:
        await asyncio.gather(*(_drain(endpoint, g) for g in generations))
    finally:
        for generation in generations:
            if not generation.done:
                generation.cancelled = True
    choices = [choice(i, g.finish_reason, _text(endpoint, g)) for i, g in enumerate(generations)]
    return web.json_response(
        {**head, "object": kind, "choices": choices, "usage": _usage(prompt, generations)}
    )


async def _stream(
    request: web.Request,
    endpoint: LanguageModelEndpoint,
    generations: list[Generation],
    prompt: list[int],
    head: dict[str, Any],
    delta: Shape,
) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await response.prepare(request)
    queue: asyncio.Queue[tuple[int, str | None, str] | None] = asyncio.Queue()

    async def pump(index: int, generation: Generation) -> None:
        sent = ""
        async for _ in endpoint.engine.tokens(generation):
            text = _text(endpoint, generation)
            if len(text) > len(sent) and not text.endswith("\ufffd"):  # whole characters only
                await queue.put((index, None, text[len(sent) :]))
                sent = text
        await queue.put((index, generation.finish_reason or "stop", _text(endpoint, generation)[len(sent) :]))

    pumps = [asyncio.create_task(pump(i, g)) for i, g in enumerate(generations)]
    finished = 0
    try:
        while finished < len(generations):
            item = await queue.get()
            assert item is not None
            index, reason, text = item
            finished += reason is not None
            chunk = {**head, "choices": [delta(index, reason, text)]}
            await response.write(f"data: {json.dumps(chunk)}\n\n".encode())
        usage = {**head, "choices": [], "usage": _usage(prompt, generations)}
        await response.write(f"data: {json.dumps(usage)}\n\n".encode())
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
    except (ConnectionResetError, asyncio.CancelledError):  # the client went away: free the slots
        for generation in generations:
            generation.cancelled = True
        raise
    finally:
        for task in pumps:
            task.cancel()
    return response


# --- the routes -----------------------------------------------------------------------------------

Route = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _refusals(route: Route) -> Route:
    async def answer(request: web.Request) -> web.StreamResponse:
        try:
            return await route(request)
        except OpenAIError as error:
            return error.response()

    return answer


@_refusals
async def list_models(request: web.Request) -> web.StreamResponse:
    endpoint = _endpoint(request)
    card = {"id": endpoint.name, "object": "model", "created": endpoint.created, "owned_by": "aidc"}
    return web.json_response({"object": "list", "data": [card]})


@_refusals
async def completions(request: web.Request) -> web.StreamResponse:
    body = await _body(request)
    endpoint = _endpoint(request, body)

    def choice(index: int, reason: str | None, text: str) -> dict[str, Any]:
        return {"index": index, "text": text, "logprobs": None, "finish_reason": reason}

    prompt = endpoint.codec.encode(_prompt_text(body))
    return await _answer(request, "text_completion", prompt, body, choice, choice)


@_refusals
async def chat_completions(request: web.Request) -> web.StreamResponse:
    body = await _body(request)
    endpoint = _endpoint(request, body)
    prompt = endpoint.codec.encode_chat(_messages(body))

    def choice(index: int, reason: str | None, text: str) -> dict[str, Any]:
        message = {"role": "assistant", "content": text}
        return {"index": index, "message": message, "logprobs": None, "finish_reason": reason}

    def delta(index: int, reason: str | None, text: str) -> dict[str, Any]:
        change = {"role": "assistant", "content": text} if text else {}
        return {"index": index, "delta": change, "logprobs": None, "finish_reason": reason}

    return await _answer(request, "chat.completion", prompt, body, choice, delta)


def add_openai_routes(app: web.Application, body_limit: int) -> OpenAIState:
    """Register the routes; the returned state takes the endpoint once the model is ready."""
    state = OpenAIState(body_limit)
    app[OPENAI] = state
    app.router.add_get("/v1/models", list_models)
    app.router.add_post("/v1/completions", completions)
    app.router.add_post("/v1/chat/completions", chat_completions)
    return state
