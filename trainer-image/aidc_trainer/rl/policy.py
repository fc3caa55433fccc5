"""The actor-critic network PPO trains: separate MLP trunks for the policy and the value.

Two hidden layers of 64 tanh units each, orthogonal initialisation, a policy head scaled by 0.01
and a value head by 1: the network of CleanRL's ``ppo.py`` and Stable-Baselines3's default, which
both solve CartPole with the same hyperparameters. Discrete actions are a categorical over logits;
continuous ones a Gaussian whose log standard deviation is a learnt parameter independent of the
observation. The module's forward returns the distribution's parameters and the value, which is
what the model server serves; sampling happens outside.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from torch.distributions import Categorical, Distribution, Normal


def _layer(inputs: int, outputs: int, gain: float) -> nn.Linear:
    layer = nn.Linear(inputs, outputs)
    nn.init.orthogonal_(layer.weight, gain)
    nn.init.zeros_(layer.bias)
    return layer


def _trunk(observation_dim: int, hidden: int, outputs: int, gain: float) -> nn.Sequential:
    return nn.Sequential(
        _layer(observation_dim, hidden, math.sqrt(2)),
        nn.Tanh(),
        _layer(hidden, hidden, math.sqrt(2)),
        nn.Tanh(),
        _layer(hidden, outputs, gain),
    )


class ActorCritic(nn.Module):
    """``forward(obs) -> (logits or mean, value)``; ``log_std`` exists for continuous actions."""

    def __init__(self, observation_dim: int, action_dim: int, discrete: bool, hidden: int = 64) -> None:
        super().__init__()
        self.discrete = discrete
        self.actor = _trunk(observation_dim, hidden, action_dim, 0.01)
        self.critic = _trunk(observation_dim, hidden, 1, 1.0)
        if not discrete:
            self.log_std = nn.Parameter(torch.zeros(action_dim))

    def forward(self, observations: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.actor(observations), self.critic(observations).squeeze(-1)

    def distribution(self, head: torch.Tensor) -> Distribution:
        """The action distribution of the actor's output (logits or mean)."""
        if self.discrete:
            return Categorical(logits=head, validate_args=False)
        return Normal(head, self.log_std.exp().expand_as(head), validate_args=False)

    def log_prob(self, distribution: Distribution, actions: torch.Tensor) -> torch.Tensor:
        """Log-probability of whole actions (summed over a continuous action's dimensions)."""
        log_prob = distribution.log_prob(actions)
        return log_prob if self.discrete else log_prob.sum(-1)

    def entropy(self, distribution: Distribution) -> torch.Tensor:
        entropy = distribution.entropy()
        return entropy if self.discrete else entropy.sum(-1)

    def deterministic(self, head: torch.Tensor) -> torch.Tensor:
        """The evaluation action: the most likely class, or the Gaussian's mean."""
        return head.argmax(-1) if self.discrete else head


def build_policy(architecture: Mapping[str, Any]) -> ActorCritic:
    """The policy of an architecture ``{observationDim, actionDim, discrete, hidden}``."""
    return ActorCritic(
        int(architecture["observationDim"]),
        int(architecture["actionDim"]),
        bool(architecture["discrete"]),
        int(architecture.get("hidden", 64)),
    )
