"""Argo CD's health checks (docs/argocd/) run as Argo CD runs them: Lua 5.1, the object as ``obj``.

Argo CD embeds gopher-lua, a Lua 5.1; lupa's bundled Lua 5.1 runs the same scripts. The object is
handed over as Argo CD does: JSON objects and arrays become tables (arrays from index 1), null
becomes nil.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
HEALTH_CHECKS = REPO_ROOT / "docs" / "argocd"
STATUSES = {"Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown"}


def script_for(kind: str) -> Path:
    return HEALTH_CHECKS / "aidc.io" / kind / "health.lua"


def health(obj: dict[str, Any]) -> dict[str, str]:
    """The ``hs`` table the health check of ``obj["kind"]`` returns, as a dict."""
    import lupa.lua51

    lua = lupa.lua51.LuaRuntime(unpack_returned_tuples=True, register_eval=False)
    lua.globals().obj = lua.table_from(obj, recursive=True)
    result = lua.execute(script_for(obj["kind"]).read_text())
    hs = {str(key): str(value) for key, value in result.items()}
    assert hs.get("status") in STATUSES, hs
    return hs
