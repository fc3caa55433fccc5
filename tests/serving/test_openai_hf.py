"""A Hugging Face causal LM on the OpenAI routes: a tiny Llama made from a fresh config (nothing
downloaded), fine-tuned by the real trainer, served by the real server process and asked by the
official ``openai`` client; its cache decodes what the full forward would, and chat messages go
through the tokenizer's chat template where it has one."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
import torch

from aidc_trainer.pretrained import load_for_serving
from aidc_trainer.serving.engine import Engine
from aidc_trainer.serving.hf_cache import HFSlotCache
from aidc_trainer.serving.openai_api import plain_chat, tokenizer_codec
from aidc_trainer.serving.sampling import SamplingParams
from tests.serving.harness import ServerProcess, ready_process, request

MODEL = "tiny-llama"


@pytest.fixture(scope="module")
def server(pretrained_export: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    env = {"AIDC_MODEL_DIR": str(pretrained_export)}
    with ready_process(
        ["--model-name", MODEL, "--port", "0"], tmp_path_factory.mktemp("logs") / "server.log", env
    ) as up:
        yield up


@pytest.fixture
def client(server: ServerProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=60)


def test_completions_count_the_tokenizers_tokens_streaming_or_not(
    client: openai.OpenAI, pretrained_export: Path
) -> None:
    tokenizer = load_for_serving(pretrained_export).tokenizer
    prompt = "the cat sat on the"
    whole = client.completions.create(model=MODEL, prompt=prompt, max_tokens=6, temperature=0)
    assert whole.usage is not None and whole.usage.prompt_tokens == len(tokenizer(prompt)["input_ids"])
    assert whole.choices[0].finish_reason in ("length", "stop") and whole.choices[0].text.strip()
    chunks = list(client.completions.create(model=MODEL, prompt=prompt, max_tokens=6, temperature=0, stream=True))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == whole.choices[0].text


def test_chat_without_a_template_uses_the_plain_one(client: openai.OpenAI) -> None:
    messages = [{"role": "user", "content": "what is the color of the red ball"}]
    answer = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=4, seed=3, temperature=0.8)  # type: ignore[arg-type]
    again = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=4, seed=3, temperature=0.8)  # type: ignore[arg-type]
    assert answer.choices[0].message.role == "assistant"
    assert answer.choices[0].message.content == again.choices[0].message.content  # seeded


def test_a_prompt_beyond_the_context_is_refused(server: ServerProcess) -> None:
    answer = request(server.url, "POST", "/v1/completions", {"model": MODEL, "prompt": "the cat " * 200})
    assert answer.status == 400 and answer.json()["error"]["param"] == "prompt"
    assert request(server.url, "GET", "/v2/health/ready").status == 200


def test_the_cache_decodes_what_the_full_forward_would(pretrained_export: Path) -> None:
    module = load_for_serving(pretrained_export)
    cache = HFSlotCache(module.model, slots=2, context_length=64)

    async def generate(prompts: list[list[int]]) -> list[list[int]]:
        engine = Engine(cache, context_length=64)
        engine.start()
        generations = [engine.submit(p, SamplingParams(max_tokens=6, temperature=0)) for p in prompts]
        out = [[t async for t in engine.tokens(g)] for g in generations]
        await engine.stop()
        return out

    prompts = [[3, 4, 5], [6, 7, 8, 9, 10]]
    for prompt, tokens in zip(prompts, asyncio.run(generate(prompts)), strict=True):
        sequence = list(prompt)
        for _ in range(6):
            with torch.no_grad():
                sequence.append(int(module(torch.tensor([sequence]))[0, -1].argmax()))
        assert tokens == sequence[len(prompt) :]
    assert cache.free_slots == 2


def test_messages_go_through_the_tokenizers_chat_template(pretrained_export: Path) -> None:
    tokenizer = load_for_serving(pretrained_export).tokenizer
    messages = [{"role": "user", "content": "the red ball"}]
    assert tokenizer_codec(tokenizer).encode_chat(messages) == tokenizer(plain_chat(messages))["input_ids"]
    tokenizer.chat_template = (
        "{% for m in messages %}{{ m['content'] }} {% endfor %}{% if add_generation_prompt %}answer{% endif %}"
    )
    assert (
        tokenizer_codec(tokenizer).encode_chat(messages)
        == tokenizer("the red ball answer", add_special_tokens=False)["input_ids"]
    )
