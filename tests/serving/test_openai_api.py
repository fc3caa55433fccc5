"""The OpenAI routes of a served built-in language model, asked by the official ``openai`` client over
real HTTP against the real server process: completions and chat, streaming and not, seeds, errors in
OpenAI's shape, a client that leaves mid-stream, and the server up through all of it."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from tests.serving.harness import ServerProcess, metric_samples, ready_process, request

MODEL = "tiny-lm"


@pytest.fixture(scope="module")
def server(language_model_export: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    env = {"AIDC_MODEL_DIR": str(language_model_export), "AIDC_MAX_REQUEST_BYTES": "65536"}
    with ready_process(
        ["--model-name", MODEL, "--port", "0"], tmp_path_factory.mktemp("logs") / "server.log", env
    ) as up:
        yield up


@pytest.fixture
def client(server: ServerProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=60)


def test_the_model_is_listed(client: openai.OpenAI) -> None:
    assert [m.id for m in client.models.list().data] == [MODEL]


def test_a_completion_counts_its_tokens_and_says_why_it_ended(client: openai.OpenAI) -> None:
    answer = client.completions.create(model=MODEL, prompt="hello", max_tokens=5, temperature=0)
    assert answer.object == "text_completion" and answer.model == MODEL
    (choice,) = answer.choices
    assert choice.finish_reason in ("length", "stop") and isinstance(choice.text, str)
    assert answer.usage is not None
    assert answer.usage.prompt_tokens == len(b"hello") and 1 <= answer.usage.completion_tokens <= 5


def test_greedy_and_seeded_sampling_repeat_themselves(client: openai.OpenAI) -> None:
    greedy = [client.completions.create(model=MODEL, prompt="ab", max_tokens=8, temperature=0) for _ in range(2)]
    assert greedy[0].choices[0].text == greedy[1].choices[0].text
    seeded = [
        client.completions.create(model=MODEL, prompt="ab", max_tokens=12, temperature=1.0, top_p=0.95, seed=7)
        for _ in range(2)
    ]
    assert seeded[0].choices[0].text == seeded[1].choices[0].text
    several = client.completions.create(model=MODEL, prompt="ab", max_tokens=12, temperature=1.0, seed=7, n=3)
    assert [c.index for c in several.choices] == [0, 1, 2]
    assert several.choices[0].text == seeded[0].choices[0].text  # choice i is seeded seed + i


def test_chat_answers_as_the_assistant_streaming_or_not(client: openai.OpenAI) -> None:
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    whole = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=6, temperature=0)  # type: ignore[arg-type]
    assert whole.object == "chat.completion" and whole.choices[0].message.role == "assistant"
    chunks = list(
        client.chat.completions.create(model=MODEL, messages=messages, max_tokens=6, temperature=0, stream=True)  # type: ignore[arg-type]
    )
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == whole.choices[0].message.content
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] in ("length", "stop")
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens  # type: ignore[union-attr]


def test_a_stream_ends_with_done(server: ServerProcess) -> None:
    host, port = server.url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    body = {"model": MODEL, "prompt": "x", "max_tokens": 3, "stream": True, "temperature": 0}
    connection.request("POST", "/v1/completions", body=json.dumps(body), headers={"Content-Type": "application/json"})
    response = connection.getresponse()
    assert response.status == 200 and response.getheader("Content-Type", "").startswith("text/event-stream")
    events = [line for line in response.read().decode().split("\n\n") if line]
    assert events[-1] == "data: [DONE]" and all(e.startswith("data: ") for e in events)
    connection.close()


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        ({"model": "gpt-4", "prompt": "x"}, 404, "model"),
        ({"prompt": "x"}, 400, "model"),
        ({"model": MODEL, "prompt": ""}, 400, "prompt"),
        ({"model": MODEL, "prompt": "x", "max_tokens": 0}, 400, "max_tokens"),
        ({"model": MODEL, "prompt": "x", "max_tokens": "5"}, 400, "max_tokens"),
        ({"model": MODEL, "prompt": "x", "temperature": 3}, 400, "temperature"),
        ({"model": MODEL, "prompt": "x", "top_p": -0.1}, 400, "top_p"),
        ({"model": MODEL, "prompt": "x", "n": 0}, 400, "n"),
        ({"model": MODEL, "prompt": "x", "stop": [1]}, 400, "stop"),
        ({"model": MODEL, "prompt": "x", "stream": "yes"}, 400, "stream"),
        ({"model": MODEL, "prompt": "x" * 5000}, 400, "prompt"),  # longer than the context
    ],
)
def test_bad_requests_get_openai_errors_and_the_server_stays_up(
    server: ServerProcess, body: dict[str, object], status: int, param: str
) -> None:
    answer = request(server.url, "POST", "/v1/completions", body)
    assert answer.status == status, answer.body
    error = answer.json()["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error" and error["message"]
    assert request(server.url, "GET", "/v2/health/ready").status == 200


def test_malformed_and_oversized_bodies_are_refused(server: ServerProcess) -> None:
    assert request(server.url, "POST", "/v1/chat/completions", raw=b"{not json").status == 400
    assert (
        request(server.url, "POST", "/v1/chat/completions", {"model": MODEL, "messages": [{"role": "x"}]}).status == 400
    )
    huge = request(
        server.url, "POST", "/v1/completions", raw=json.dumps({"model": MODEL, "prompt": "x" * 70000}).encode()
    )
    assert huge.status == 413 and "exceeds the limit" in huge.json()["error"]["message"]


def test_a_client_that_leaves_mid_stream_does_not_hurt_the_next(client: openai.OpenAI, server: ServerProcess) -> None:
    stream = client.completions.create(model=MODEL, prompt="abc", max_tokens=100, temperature=1.0, stream=True)
    next(iter(stream))
    stream.close()  # gone after the first chunk
    answer = client.completions.create(model=MODEL, prompt="abc", max_tokens=4, temperature=0)
    assert answer.choices[0].finish_reason in ("length", "stop")
    assert request(server.url, "GET", "/v2/health/ready").status == 200


def test_generations_reach_the_metrics(client: openai.OpenAI, server: ServerProcess) -> None:
    def sample(name: str) -> float:
        return metric_samples(server.url).get((name, ()), 0.0)

    before = {name: sample(name) for name in ("aidc_server_generated_tokens_total", "aidc_server_prompt_tokens_total",
                                              "aidc_server_time_to_first_token_seconds_count",
                                              "aidc_server_inter_token_seconds_count",
                                              "aidc_server_generation_duration_seconds_count")}  # fmt: skip
    answer = client.completions.create(model=MODEL, prompt="abc", max_tokens=4, temperature=0)
    assert answer.usage is not None
    generated = answer.usage.completion_tokens
    after = {name: sample(name) for name in before}
    assert after["aidc_server_generated_tokens_total"] - before["aidc_server_generated_tokens_total"] == generated
    assert after["aidc_server_prompt_tokens_total"] - before["aidc_server_prompt_tokens_total"] == 3
    assert (
        after["aidc_server_time_to_first_token_seconds_count"] - before["aidc_server_time_to_first_token_seconds_count"]
        == 1
    )
    assert (
        after["aidc_server_inter_token_seconds_count"] - before["aidc_server_inter_token_seconds_count"]
        == generated - 1
    )
    assert (
        after["aidc_server_generation_duration_seconds_count"] - before["aidc_server_generation_duration_seconds_count"]
        == 1
    )
    assert sample("aidc_server_running_generations") == 0 and sample("aidc_server_waiting_generations") == 0
