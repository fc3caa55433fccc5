"""What every way into the server shares: the model's name and limits, and, once loaded, its
servable and batcher.

Both aiohttp's routes (``app``) and the front door's lean infer path (``front_door``) read it, so
it lives apart from either.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from aidc_trainer.serving.batcher import DynamicBatcher
from aidc_trainer.serving.metrics import ServerMetrics
from aidc_trainer.serving.servable import Servable

if TYPE_CHECKING:
    from aidc_trainer.serving.openai_api import OpenAIState


@dataclass
class ServingState:
    """What the handlers share; ``servable`` and ``batcher`` appear once the model is loaded."""

    model_name: str
    max_request_bytes: int
    metrics: ServerMetrics
    servable: Servable | None = None
    batcher: DynamicBatcher | None = None
    ready: bool = False
    openai: OpenAIState | None = None  # the OpenAI routes' state, set by create_app

    def set_ready(self, ready: bool) -> None:
        """Readiness gates traffic (the pod's readiness probe), so it is also a metric."""
        self.ready = ready
        self.metrics.ready.set(1 if ready else 0)
