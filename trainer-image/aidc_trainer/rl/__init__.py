"""Reinforcement learning: environments, the actor-critic policy, PPO's mathematics, the loop."""
