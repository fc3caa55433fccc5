"""A tiny Hugging Face causal LM and tokenizer made from configs on the spot: nothing is downloaded.

A Llama-architecture model of a few thousand parameters with random weights, and a word-level
tokenizer over a small vocabulary, saved with ``save_pretrained`` as a real pretrained folder is.
"""

from __future__ import annotations

from pathlib import Path

_TEXT = "the cat sat on mat dog ran to a red blue ball big small what is color of answer yes no question one two"
WORDS = tuple(_TEXT.split(" "))


def save_tiny_pretrained(folder: Path, seed: int = 0) -> Path:
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<unk>": 1, "<eos>": 2, **{word: index + 3 for index, word in enumerate(WORDS)}}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, unk_token="<unk>", pad_token="<pad>", eos_token="<eos>")
    config = LlamaConfig(
        vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=2, max_position_embeddings=64, pad_token_id=0, eos_token_id=2, bos_token_id=2,
        tie_word_embeddings=False,
        # a pretrained head has weights large enough to make confident logits; the default init's
        # (0.02) caps what frozen weights plus adapters can reach (LoRA would plateau near uniform)
        initializer_range=0.3,
    )  # fmt: skip
    torch.manual_seed(seed)
    LlamaForCausalLM(config).save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder


def write_corpus(folder: Path) -> tuple[Path, Path]:
    """A plain-text corpus and a prompt/response JSONL file with a pattern to learn."""
    folder.mkdir(parents=True, exist_ok=True)
    text = folder / "corpus.txt"
    text.write_text(" ".join(["the cat sat on the mat", "the dog ran to a red ball"] * 60))
    pairs = folder / "pairs.jsonl"
    lines = []
    for index in range(64):
        color = ("red", "blue")[index % 2]
        lines.append(f'{{"prompt": "what is the color of the {color} ball", "response": "{color}"}}')
    pairs.write_text("\n".join(lines) + "\n")
    return text, pairs
