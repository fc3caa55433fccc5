"""What the server needs from a model, whatever its task: a signature, a way to prepare rows, a run.

The HTTP layer and the batcher only see this interface, so they are tested with a small numpy
stand-in, and each task (classifier, GAN, language model) adds its own pre- and post-processing
without touching them. ``prepare`` runs on the event loop and must be cheap and pure: it checks
what the signature cannot express and turns a request into rows. ``run`` runs in the inference
thread: it is the only place that touches torch and the device.
"""

from __future__ import annotations

import abc
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aidc_trainer.serving.protocol import Array, TensorSpec


@dataclass(frozen=True)
class Work:
    """One request's rows, ready to batch.

    ``arrays`` all share the leading row dimension. Requests may share a forward pass only when
    their ``key`` is equal: a language model cannot stack prompts of different lengths, and two
    requests asking for different numbers of generated tokens need different runs.
    """

    arrays: Mapping[str, Array]
    rows: int
    key: Hashable = ()
    options: Mapping[str, Any] = field(default_factory=dict)


class Servable(abc.ABC):
    """A loaded model with the signature it serves."""

    task: str = ""
    platform: str = "pytorch"

    @property
    @abc.abstractmethod
    def inputs(self) -> tuple[TensorSpec, ...]:
        """The inputs a request may carry (-1 for variable dimensions)."""

    @property
    @abc.abstractmethod
    def outputs(self) -> tuple[TensorSpec, ...]:
        """Every output the server can return, in response order."""

    @abc.abstractmethod
    def prepare(self, inputs: Mapping[str, Array], parameters: Mapping[str, Any]) -> Work:
        """Check a decoded request against what the model needs and turn it into rows.

        Raises ``ProtocolError`` for anything the client must fix.
        """

    @abc.abstractmethod
    def run(self, arrays: Mapping[str, Array], options: Mapping[str, Any]) -> dict[str, Array]:
        """One forward pass over stacked rows; every output keeps the rows in order."""

    @abc.abstractmethod
    def example(self, rows: int) -> Work:
        """A valid request of ``rows`` rows, for the warm-up that gates readiness."""

    @property
    def primary_input(self) -> TensorSpec:
        """The input KServe v1 ``instances`` map onto."""
        return self.inputs[0]
