"""Fine-tuning data for a pretrained language model, tokenized by the model's own tokenizer.

Two sources: ``text`` (a plain-text file, cut into windows of ``contextLength`` tokens, every token
a target) and ``jsonl`` (one ``{"prompt": ..., "response": ...}`` object per line: the prompt, the
response and the end-of-sequence token, padded to ``contextLength``; only the response and its end
token are targets, the prompt and the padding are labelled -100 and carry no loss).

Each example is three rows of ``contextLength`` int64: input ids, labels, attention mask.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import torch
from torch.utils.data import TensorDataset

from aidc_trainer.config import TrainerConfig
from aidc_trainer.datasets import resolve_path
from aidc_trainer.errors import ConfigError, DataError

IGNORED: Final = -100  # the label that carries no loss (torch's and Hugging Face's convention)


@dataclass(frozen=True)
class FinetuneData:
    train: TensorDataset
    validation: TensorDataset | None


def load_finetune_data(config: TrainerConfig, data_dir: Path | None, tokenizer: Any) -> FinetuneData:
    """The examples of ``config.dataset``, split train/validation (the last fraction validates)."""
    length = config.language_model.context_length
    path = resolve_path(config.dataset.path or "", data_dir)
    if not path.is_file():
        raise DataError(f"dataset path {path} is not a file")
    if config.dataset.source == "text":
        rows = _text_windows(path.read_text(encoding="utf-8", errors="replace"), tokenizer, length)
    elif config.dataset.source == "jsonl":
        rows = _prompt_response_rows(path, tokenizer, length)
    else:
        raise ConfigError(
            f"a pretrained language model reads dataset source text or jsonl, not {config.dataset.source}"
        )
    if len(rows) < 2:
        raise DataError(
            f"{path} makes {len(rows)} example(s) of {length} tokens; fine-tuning needs at least 2"
        )
    ids, labels, mask = (torch.tensor([row[i] for row in rows], dtype=torch.int64) for i in range(3))
    count = len(rows)
    validation_count = int(count * config.validation_fraction)
    cut = count - validation_count
    train = TensorDataset(ids[:cut], labels[:cut], mask[:cut])
    validation = TensorDataset(ids[cut:], labels[cut:], mask[cut:]) if validation_count else None
    return FinetuneData(train, validation)


def _text_windows(text: str, tokenizer: Any, length: int) -> list[tuple[list[int], list[int], list[int]]]:
    tokens: list[int] = tokenizer(text, add_special_tokens=False)["input_ids"]
    windows = [tokens[start : start + length] for start in range(0, len(tokens) - length + 1, length)]
    return [(window, list(window), [1] * length) for window in windows]


def _prompt_response_rows(
    path: Path, tokenizer: Any, length: int
) -> list[tuple[list[int], list[int], list[int]]]:
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    end = tokenizer.eos_token_id
    if pad is None or end is None:
        raise DataError(
            "the pretrained tokenizer has no end-of-sequence token, which prompt/response data needs"
        )
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        prompt, response = _pair(path, number, line)
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        response_ids = [*tokenizer(response, add_special_tokens=False)["input_ids"], end]
        ids = (prompt_ids + response_ids)[:length]
        labels = ([IGNORED] * len(prompt_ids) + response_ids)[:length]
        if all(label == IGNORED for label in labels):
            raise DataError(
                f"{path} line {number}: the prompt fills all {length} tokens, no response is left to learn"
            )
        padding = length - len(ids)
        rows.append((ids + [pad] * padding, labels + [IGNORED] * padding, [1] * len(ids) + [0] * padding))
    return rows


def _pair(path: Path, number: int, line: str) -> tuple[str, str]:
    try:
        entry = json.loads(line)
    except ValueError as error:
        raise DataError(f"{path} line {number} is not JSON: {error}") from error
    if (
        not isinstance(entry, dict)
        or not isinstance(entry.get("prompt"), str)
        or not isinstance(entry.get("response"), str)
    ):
        raise DataError(f'{path} line {number} must be an object with string "prompt" and "response"')
    return entry["prompt"], entry["response"]
