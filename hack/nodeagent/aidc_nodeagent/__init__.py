"""A development node agent: a kubelet that runs the pods bound to its node as local processes.

Beside the real path (kind, real clusters), it lets the loopback test bed train and serve for
real: see ``hack/README.md``. The public surface is what the e2e tests and the demo use.
"""

from __future__ import annotations

from aidc_nodeagent.config import LABEL_NODE_AGENT, AgentConfig
from aidc_nodeagent.local import LocalNode, placement, unavailable

__all__ = ["LABEL_NODE_AGENT", "AgentConfig", "LocalNode", "placement", "unavailable"]
