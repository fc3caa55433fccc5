"""Exported models trained by the real trainer, once per session (CPU, a few steps each)."""

from __future__ import annotations

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
