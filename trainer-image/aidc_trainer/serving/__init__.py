"""The model server: an exported aidc model behind the Open Inference Protocol v2 (REST).

Same image as the trainer, run as ``python -m aidc_trainer.serving``. Layers point one way:
``protocol`` (wire formats, pure) and ``servable`` (what a model must offer) know nothing of
HTTP or torch; ``batcher`` gathers rows for a servable; the task modules (``classifier``,
``gan``, ``language_model``) wrap torch modules; ``model`` loads an export; ``app`` is the HTTP
surface; ``server`` the process lifecycle. Importing this package is cheap: torch loads only
with the modules that need it.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the server (see ``aidc_trainer.serving.server.main``)."""
    from aidc_trainer.serving.server import main as run

    return run(argv)
