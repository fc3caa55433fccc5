"""Pretrained Hugging Face causal language models from a folder: loaded offline, adapted, saved.

The folder is what ``save_pretrained`` writes: ``config.json``, the weights (safetensors) and the
tokenizer's files. Nothing is downloaded: ``local_files_only`` everywhere, and the image sets
``HF_HUB_OFFLINE``. ``transformers`` and ``peft`` are the trainer image's dependencies only, imported
here, never by the operator.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from aidc_trainer.config import LoraConfig
from aidc_trainer.errors import DataError

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")


def load_pretrained(folder: Path) -> tuple[Any, nn.Module]:
    """(tokenizer, model in fp32 on the CPU) of the causal LM in ``folder``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not (folder / "config.json").is_file():
        raise DataError(f"{folder} holds no pretrained model: config.json is missing")
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True, dtype=torch.float32)
    except (OSError, ValueError, KeyError) as error:
        raise DataError(
            f"cannot load the pretrained model in {folder}: {type(error).__name__}: {error}"
        ) from error
    return tokenizer, model


def with_lora(model: nn.Module, lora: LoraConfig) -> nn.Module:
    """The model with low-rank adapters; every other parameter frozen."""
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model

    adapters = PeftLoraConfig(
        r=lora.rank,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=list(lora.target_modules) if lora.target_modules else None,
        task_type="CAUSAL_LM",
    )
    try:
        return get_peft_model(model, adapters)
    except ValueError as error:  # no target modules known for this architecture, or none matched
        raise DataError(f"cannot add LoRA adapters: {error}; set lora.targetModules") from error


def transformer_blocks(model: nn.Module) -> list[nn.Module]:
    """The decoder layers, FSDP's units: the modules of the classes the model says not to split."""
    base = getattr(model, "get_base_model", None)
    inner = base() if callable(base) else model
    names = set(getattr(inner, "_no_split_modules", None) or ())
    return [module for module in model.modules() if type(module).__name__ in names]


def save_for_serving(
    state: dict[str, torch.Tensor], lora: LoraConfig | None, source: Path, destination: Path
) -> None:
    """Write ``destination/model`` (the merged model and tokenizer) and, with LoRA, ``destination/adapter``.

    The weights in ``state`` (the trained model's full state dict) go into a fresh CPU copy of the
    pretrained model, so the export never depends on how the training copy was wrapped or sharded.
    """
    tokenizer, model = load_pretrained(source)
    if lora is not None:
        model = with_lora(model, lora)
    model.load_state_dict(state)
    if lora is not None:
        model.save_pretrained(destination / "adapter")  # type: ignore[operator]
        model = model.merge_and_unload()  # type: ignore[operator]
    model.save_pretrained(destination / "model", safe_serialization=True)  # type: ignore[operator]
    tokenizer.save_pretrained(destination / "model")


class CausalLmLogits(nn.Module):
    """A Hugging Face causal LM as the built-in model's interface: token ids in, logits out. The
    tokenizer of the same folder rides along for the server's OpenAI routes."""

    def __init__(self, model: nn.Module, tokenizer: Any = None) -> None:
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=ids).logits  # type: ignore[no-any-return]


def load_for_serving(directory: Path) -> nn.Module:
    """The merged model of an export, as ``CausalLmLogits``."""
    tokenizer, model = load_pretrained(directory / "model")
    return CausalLmLogits(model, tokenizer)
