"""Fine-tuning a pretrained Hugging Face model from a folder: real gangs of gloo ranks, a tiny model
made from a config (nothing downloaded), its export loaded by the model server and asked."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from aidc_trainer import contract
from aidc_trainer.serving.model import load_model
from tests.trainer.gang import read_losses, run
from tests.trainer.tiny_pretrained import save_tiny_pretrained, write_corpus

pytestmark = pytest.mark.trainer


@pytest.fixture(scope="module")
def claim(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data claim holding a pretrained model and two datasets."""
    folder = tmp_path_factory.mktemp("claim")
    save_tiny_pretrained(folder / "tiny-llama")
    write_corpus(folder)
    return folder


def _config(source: str, path: str, **pretrained: Any) -> dict[str, Any]:
    return {
        "task": "language-model",
        "dataset": {"source": source, "path": path},
        "epochs": 6,
        "batchSize": 4,
        "learningRate": 0.01,
        "gradientClipNorm": 1.0,
        "languageModel": {"contextLength": 12, "pretrained": {"path": "tiny-llama", **pretrained}},
    }


def _fine_tune(tmp_path: Path, claim: Path, config: dict[str, Any], world_size: int = 2) -> dict[int, float]:
    codes, gang = run(
        tmp_path, config, world_size=world_size, checkpoint_dir=tmp_path / "ckpt", loss_log=tmp_path / "losses.jsonl",
        env={"AIDC_DATA_DIR": str(claim)},
    )  # fmt: skip
    assert codes == [0] * world_size, gang.report()
    return {step: float(entry["loss"]) for step, entry in read_losses(tmp_path / "losses.jsonl").items()}


def _falls(losses: dict[int, float]) -> None:
    steps = sorted(losses)
    first, last = np.mean([losses[s] for s in steps[:3]]), np.mean([losses[s] for s in steps[-3:]])
    assert last < 0.7 * first, (first, last)


def _ask(export: Path, words: str) -> int:
    """The next token the served export predicts after ``words``."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(export / "model", local_files_only=True)
    loaded = load_model(export, "cpu")
    ids = np.array([tokenizer(words, add_special_tokens=False)["input_ids"]], dtype=np.int64)
    work = loaded.servable.prepare({"input_ids": ids}, {})
    return int(loaded.servable.run(work.arrays, work.options)["next_token"][0])


def test_plain_text_fine_tunes_the_whole_model_and_the_server_loads_the_export(claim: Path, tmp_path: Path) -> None:
    _falls(_fine_tune(tmp_path, claim, _config("text", "corpus.txt")))
    export = tmp_path / "ckpt" / contract.EXPORT_FINAL
    manifest = json.loads((export / contract.MODEL_MANIFEST).read_text())
    assert manifest["architecture"]["format"] == "transformers" and manifest["architecture"]["lora"] is False
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in (export / "model").iterdir()}
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(export / "model", local_files_only=True)
    assert tokenizer.decode([_ask(export, "the cat sat on the")]) == "mat"  # the corpus, learnt


def test_lora_on_prompt_response_pairs_trains_the_adapters_only_and_exports_them_and_a_merged_model(
    claim: Path, tmp_path: Path
) -> None:
    lora = {
        "rank": 8,
        "alpha": 16,
        "dropout": 0.0,
        "targetModules": ["q_proj", "k_proj", "v_proj", "o_proj", "up_proj", "down_proj"],
    }
    config = {**_config("jsonl", "pairs.jsonl", lora=lora), "epochs": 12, "learningRate": 0.02}
    losses = _fine_tune(tmp_path, claim, config)
    _falls(losses)
    export = tmp_path / "ckpt" / contract.EXPORT_FINAL
    adapter = {p.name for p in (export / "adapter").iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors"} <= adapter
    from safetensors.torch import load_file

    trained = load_file(export / "adapter" / "adapter_model.safetensors")
    assert trained and all("lora_" in name for name in trained)  # the adapters alone, not the base
    base = load_file(claim / "tiny-llama" / "model.safetensors")
    merged = load_file(export / "model" / "model.safetensors")
    name = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(merged[name], base[name])  # merged: the adapters' update is in the weights
    assert torch.equal(merged["model.embed_tokens.weight"], base["model.embed_tokens.weight"])  # frozen stays
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(export / "model", local_files_only=True)
    assert tokenizer.decode([_ask(export, "what is the color of the blue ball")]) == "blue"


@pytest.mark.parametrize("lora", [None, {"rank": 4, "alpha": 8, "targetModules": ["q_proj", "v_proj"]}])
def test_a_pretrained_model_shards_under_fsdp(claim: Path, tmp_path: Path, lora: dict[str, Any] | None) -> None:
    config = {**_config("text", "corpus.txt", **({"lora": lora} if lora else {})), "parallelism": {"strategy": "FSDP"}}
    _falls(_fine_tune(tmp_path, claim, config))
    names = {p.name for p in (tmp_path / "ckpt").glob("ckpt-*/*.distcp")}
    assert names == {"__0_0.distcp", "__1_0.distcp"}
    assert (tmp_path / "ckpt" / contract.EXPORT_FINAL / "model" / "model.safetensors").is_file()


def test_a_missing_pretrained_folder_is_a_data_error(claim: Path, tmp_path: Path) -> None:
    config = _config("text", "corpus.txt")
    config["languageModel"]["pretrained"]["path"] = "no-such-model"
    codes, gang = run(tmp_path, config, world_size=1, env={"AIDC_DATA_DIR": str(claim)})
    assert codes == [contract.EXIT_DATA_ERROR], gang.report()
    assert "no-such-model does not exist" in gang.leader.termination()["message"]
