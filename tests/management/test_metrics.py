"""The operator's metrics are documented (docs/install.md, section Metrics)."""

from __future__ import annotations

from pathlib import Path

from aidc.management import metrics
from aidc.management.metrics import OperatorMetrics

INSTALL = Path(__file__).resolve().parents[2] / "docs" / "install.md"


def test_every_operator_metric_has_a_row_in_the_install_guide() -> None:
    documented = INSTALL.read_text()
    names = {m.name for m in OperatorMetrics().registry.collect() if m.name.startswith(metrics.PREFIX + "_")}
    assert len(names) >= 10, names
    # counters are collected without their _total suffix: the row's name starts with it
    missing = sorted(n for n in names if f"| `{n.removeprefix(metrics.PREFIX + '_')}" not in documented)
    assert not missing, f"metrics without a row in docs/install.md: {missing}"
