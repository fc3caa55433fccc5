"""Settings of the in-process operators of the GitOps tests."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _quiet_operator(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIDC_METRICS_PORT", "0")  # several operators run in one test process
    monkeypatch.setenv("AIDC_RESYNC_SECONDS", "5")
