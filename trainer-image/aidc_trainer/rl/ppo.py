"""PPO's mathematics, free of environments and processes: GAE and the clipped surrogate loss.

Kept pure so the tests can check them against values worked out by hand. The conventions are
CleanRL's ``ppo.py``: ``dones[t]`` says the episode ended at step ``t`` (terminated or truncated;
truncation is not bootstrapped, as there), advantages are normalised per minibatch, and the value
loss is clipped around the rollout's values with the same epsilon unless that is turned off.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def generalized_advantages(
    rewards: torch.Tensor,
    values: torch.Tensor,
    dones: torch.Tensor,
    next_value: torch.Tensor,
    gamma: float,
    gae_lambda: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(advantages, returns) of a ``[steps, envs]`` rollout.

    ``next_value`` is the value of the observation after the last step. A done at ``t`` cuts both
    the bootstrap from ``t + 1`` and the advantage carried back from it.
    """
    steps = rewards.shape[0]
    advantages = torch.zeros_like(rewards)
    carried = torch.zeros_like(next_value)
    for t in reversed(range(steps)):
        following = next_value if t == steps - 1 else values[t + 1]
        alive = 1.0 - dones[t].float()
        delta = rewards[t] + gamma * following * alive - values[t]
        carried = delta + gamma * gae_lambda * alive * carried
        advantages[t] = carried
    return advantages, advantages + values


@dataclass(frozen=True)
class LossTerms:
    """The parts of PPO's loss; ``total`` is what is differentiated."""

    total: torch.Tensor
    policy: torch.Tensor
    value: torch.Tensor
    entropy: torch.Tensor
    approx_kl: torch.Tensor


def ppo_loss(
    new_log_prob: torch.Tensor,
    old_log_prob: torch.Tensor,
    advantages: torch.Tensor,
    new_value: torch.Tensor,
    old_value: torch.Tensor,
    returns: torch.Tensor,
    entropy: torch.Tensor,
    *,
    clip: float,
    value_coef: float,
    entropy_coef: float,
    normalize: bool = True,
    clip_value: bool = True,
) -> LossTerms:
    """The clipped surrogate, the value loss (clipped unless ``clip_value`` is off) and the entropy
    bonus of one minibatch."""
    if normalize and advantages.numel() > 1:
        advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
    log_ratio = new_log_prob - old_log_prob
    ratio = log_ratio.exp()
    policy = torch.max(-advantages * ratio, -advantages * ratio.clamp(1 - clip, 1 + clip)).mean()
    value_error = (new_value - returns) ** 2
    if clip_value:
        clipped_value = old_value + (new_value - old_value).clamp(-clip, clip)
        value_error = torch.max(value_error, (clipped_value - returns) ** 2)
    value = 0.5 * value_error.mean()
    mean_entropy = entropy.mean()
    total = policy - entropy_coef * mean_entropy + value_coef * value
    approx_kl = ((ratio - 1) - log_ratio).mean()
    return LossTerms(total, policy, value, mean_entropy, approx_kl.detach())
