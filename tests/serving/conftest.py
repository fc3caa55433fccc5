"""Exported models trained by the real trainer, once per session (CPU, a few steps each)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.serving.harness import train


@pytest.fixture(scope="session")
def classifier_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The digits classifier after 20 steps: good enough to tell digits apart a little."""
    return train(
        "classifier",
        tmp_path_factory.mktemp("classifier"),
        {"dataset": {"source": "digits"}, "epochs": 1, "maxSteps": 20},
    )


@pytest.fixture(scope="session")
def gan_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train("gan", tmp_path_factory.mktemp("gan"), {"epochs": 1, "maxSteps": 2})


@pytest.fixture(scope="session")
def language_model_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train("language-model", tmp_path_factory.mktemp("language-model"), {"epochs": 1, "maxSteps": 2})


@pytest.fixture(scope="session")
def pretrained_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Hugging Face Llama (a fresh config, random weights) fine-tuned two steps from a claim."""
    from tests.trainer.tiny_pretrained import save_tiny_pretrained, write_corpus

    claim = tmp_path_factory.mktemp("claim")
    save_tiny_pretrained(claim / "tiny-llama")
    write_corpus(claim)
    config = {
        "dataset": {"source": "text", "path": "corpus.txt"}, "epochs": 1, "maxSteps": 2, "batchSize": 4,
        "languageModel": {"contextLength": 12, "pretrained": {"path": "tiny-llama"}},
    }  # fmt: skip
    return train("language-model", tmp_path_factory.mktemp("pretrained"), config, {"AIDC_DATA_DIR": str(claim)})


@pytest.fixture(scope="session")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for localhost, made by the openssl CLI (cert, key)."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is not installed")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "tls.crt", folder / "tls.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert, key
