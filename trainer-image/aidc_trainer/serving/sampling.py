"""Choosing the next token: greedy at temperature 0, else temperature and nucleus (top-p) sampling.

Each request draws from its own ``torch.Generator``, seeded with the request's ``seed`` when it has
one, so the same request with the same seed gives the same tokens whatever else the batch holds.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

import torch


@dataclass(frozen=True)
class SamplingParams:
    """OpenAI's generation parameters, already checked (routes validate the request's types and ranges)."""

    max_tokens: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None


@dataclass
class Sampler:
    """The next-token choice of one sequence."""

    params: SamplingParams
    generator: torch.Generator = field(init=False)

    def __post_init__(self) -> None:
        self.generator = torch.Generator()
        self.generator.manual_seed(self.params.seed if self.params.seed is not None else secrets.randbits(63))

    def choose(self, logits: torch.Tensor) -> int:
        """A token id from the logits of one position (vocab,)."""
        if self.params.temperature == 0:
            return int(logits.argmax())
        probabilities = torch.softmax(logits.float().cpu() / self.params.temperature, dim=-1)
        if self.params.top_p < 1.0:
            probabilities = nucleus(probabilities, self.params.top_p)
        return int(torch.multinomial(probabilities, 1, generator=self.generator))


def nucleus(probabilities: torch.Tensor, top_p: float) -> torch.Tensor:
    """The smallest set of most likely tokens whose mass reaches ``top_p``, renormalised."""
    ordered, order = probabilities.sort(descending=True)
    before = ordered.cumsum(-1) - ordered  # the mass of the tokens ranked above each
    ordered = torch.where(before < top_p, ordered, torch.zeros_like(ordered))
    kept = torch.zeros_like(probabilities).scatter(-1, order, ordered)
    return kept / kept.sum()
