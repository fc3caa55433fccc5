"""SIGTERM means "save and go": the pod is being evicted, drained or preempted.

Kubernetes sends SIGTERM and, after the grace period, SIGKILL. The handler only raises a flag;
the training loop checks it at the next step boundary, where the model and optimizer are in a
consistent state, and the ranks agree on it (one rank's eviction stops the whole gang at the
same step). Rank 0 then writes a checkpoint and every rank exits with the retryable
``EXIT_PREEMPTED`` (143, what a shell reports for SIGTERM), so the operator restarts the gang and
the trainer resumes where it stopped.
"""

from __future__ import annotations

import logging
import signal
from types import FrameType

from aidc_trainer.logs import fields

_log = logging.getLogger(__name__)


class PreemptionWatch:
    """Turns SIGTERM/SIGINT into a flag that the training loop polls."""

    def __init__(self) -> None:
        self.signal_name: str | None = None

    @property
    def requested(self) -> bool:
        return self.signal_name is not None

    def install(self) -> None:
        """Handle SIGTERM and SIGINT in this (main) thread from now on."""
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._handle)

    def request(self, reason: str) -> None:
        """Ask for a stop as if a signal had arrived (tests, or a future stop file)."""
        if self.signal_name is None:
            self.signal_name = reason

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.signal_name is None:
            _log.warning("stop requested; checkpointing at the next step", extra=fields(signal=name))
        self.request(name)
