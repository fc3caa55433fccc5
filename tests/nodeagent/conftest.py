"""The node agent's package lives in hack/nodeagent (pytest's pythonpath will name it too)."""

from __future__ import annotations

import sys
from pathlib import Path

_AGENT = str(Path(__file__).resolve().parents[2] / "hack" / "nodeagent")
if _AGENT not in sys.path:
    sys.path.insert(0, _AGENT)
