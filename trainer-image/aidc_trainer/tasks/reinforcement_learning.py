"""The ``reinforcement-learning`` task: PPO with GAE on Gymnasium environments, one gang.

One optimizer "step" of the loop is one PPO iteration: every rank collects a rollout of
``rolloutSteps`` from its own ``envsPerRank`` environments, computes GAE, then runs ``ppo.epochs``
passes over its rollout in ``ppo.minibatches`` minibatches; DDP averages each minibatch's gradient
over the ranks, so the policy stays identical everywhere. The learning rate anneals linearly to
zero over the run, as CleanRL's ``ppo.py`` does by default.

State (per rank, since each rank steps other environments): the environments and the window of
recent episode returns; shared: policy, optimizer and schedule. Evaluation runs the deterministic
policy (argmax or mean) on fresh environments and reports ``evaluationReturn``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch.utils.data import TensorDataset

from aidc_trainer.config import ReinforcementLearningConfig
from aidc_trainer.distributed import all_reduce_sum, gather_to_leader
from aidc_trainer.errors import ConfigError
from aidc_trainer.rl.environments import EnvironmentSet, environment_factory
from aidc_trainer.rl.policy import ActorCritic, build_policy
from aidc_trainer.rl.ppo import generalized_advantages, ppo_loss
from aidc_trainer.tasks.base import Batch, Exported, Task, TaskContext, wrap_ddp

RETURN_WINDOW = 20  # episodes per rank behind ``episodicReturn``
_EVALUATION_SEED_OFFSET = 1_000_000  # evaluation episodes never replay training seeds


def describe_spaces(observation: gym.Space[Any], action: gym.Space[Any]) -> dict[str, Any]:
    """The policy's architecture from the environment's spaces (ConfigError for unsupported ones)."""
    if not isinstance(observation, gym.spaces.Box):
        raise ConfigError(f"the environment's observation space {observation} is not a Box")
    spaces: dict[str, Any] = {"observationSpace": {"type": "Box", "shape": list(observation.shape)}}
    if isinstance(action, gym.spaces.Discrete):
        spaces["actionSpace"] = {"type": "Discrete", "n": int(action.n), "start": int(action.start)}
        return {
            "observationDim": int(np.prod(observation.shape)),
            "actionDim": int(action.n),
            "discrete": True,
            **spaces,
        }
    if isinstance(action, gym.spaces.Box) and len(action.shape) == 1:

        def finite(values: np.ndarray) -> list[float | None]:
            return [float(v) if np.isfinite(v) else None for v in values]

        spaces["actionSpace"] = {
            "type": "Box",
            "shape": list(action.shape),
            "low": finite(action.low),
            "high": finite(action.high),
        }
        return {
            "observationDim": int(np.prod(observation.shape)),
            "actionDim": int(action.shape[0]),
            "discrete": False,
            **spaces,
        }
    raise ConfigError(f"the environment's action space {action} is neither Discrete nor a 1-d Box")


class ReinforcementLearningTask(Task):
    name = "reinforcement-learning"
    default_learning_rate = 2.5e-4
    primary_metric = "evaluationReturn"
    higher_is_better = True

    def __init__(self, context: TaskContext) -> None:
        super().__init__(context)
        assert self.config.reinforcement_learning is not None  # parse_config guarantees it
        self.rl: ReinforcementLearningConfig = self.config.reinforcement_learning
        gang = context.gang
        first_seed = self.config.seed + gang.rank * self.rl.envs_per_rank
        self.envs = EnvironmentSet(self.rl.environment, self.rl.envs_per_rank, first_seed)
        self.architecture = {
            "hidden": 64,
            **describe_spaces(self.envs.observation_space, self.envs.action_space),
        }
        torch.manual_seed(self.config.seed)  # same initial weights on every rank
        self.model: ActorCritic = build_policy(self.architecture).to(self.device)
        self.ddp = wrap_ddp(self.model, self.device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=self.learning_rate, eps=1e-5)
        self.scheduler: torch.optim.lr_scheduler.LambdaLR | None = None
        self.recent: deque[float] = deque(maxlen=RETURN_WINDOW)
        self._gathered: list[Any] | None = None
        low, high = self._action_bounds()
        self._low, self._high = low, high

    def _action_bounds(self) -> tuple[np.ndarray | None, np.ndarray | None]:
        space = self.envs.action_space
        if isinstance(space, gym.spaces.Box):
            return space.low, space.high
        return None, None

    @property
    def train_set(self) -> TensorDataset:
        return TensorDataset(torch.zeros(0))  # the environments are the data

    @property
    def steps_per_update(self) -> int:
        """Environment steps one iteration takes over the whole gang."""
        return self.rl.envs_per_rank * self.rl.rollout_steps * self.context.gang.world_size

    def set_total_steps(self, total_steps: int) -> None:
        def factor(update: int) -> float:
            return max(0.0, 1.0 - update / total_steps)

        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, factor)

    # --- acting ------------------------------------------------------------------------------

    def _env_actions(self, actions: torch.Tensor) -> np.ndarray:
        """What the environments receive: class indices (plus the space's start) or clipped vectors."""
        values = actions.cpu().numpy()
        if self.model.discrete:
            return values.astype(np.int64) + int(self.architecture["actionSpace"]["start"])
        clipped: np.ndarray = np.clip(values, self._low, self._high)
        return clipped

    @torch.no_grad()
    def _rollout(self) -> dict[str, torch.Tensor]:
        steps, count, device = self.rl.rollout_steps, self.rl.envs_per_rank, self.device
        observations = torch.zeros((steps, count, self.architecture["observationDim"]), device=device)
        buffers = {
            name: torch.zeros((steps, count), device=device)
            for name in ("rewards", "dones", "values", "logp")
        }
        actions: list[torch.Tensor] = []
        current = torch.from_numpy(self.envs.observations).to(device).reshape(count, -1)
        for t in range(steps):
            observations[t] = current
            head, value = self.model(current)
            distribution = self.model.distribution(head)
            action = distribution.sample()
            result = self.envs.step(self._env_actions(action))
            for episode_return, _ in result.finished:
                self.recent.append(episode_return)
            actions.append(action)
            buffers["values"][t], buffers["logp"][t] = value, self.model.log_prob(distribution, action)
            buffers["rewards"][t] = torch.from_numpy(result.rewards).to(device)
            buffers["dones"][t] = torch.from_numpy(result.terminated | result.truncated).to(device)
            current = torch.from_numpy(result.observations).to(device).reshape(count, -1)
        _, next_value = self.model(current)
        advantages, returns = generalized_advantages(
            buffers["rewards"],
            buffers["values"],
            buffers["dones"],
            next_value,
            self.rl.ppo.gamma,
            self.rl.ppo.gae_lambda,
        )
        flat = {
            "observations": observations.reshape(steps * count, -1),
            "actions": torch.stack(actions).flatten(0, 1),
        }
        for name, tensor in (
            ("values", buffers["values"]),
            ("logp", buffers["logp"]),
            ("advantages", advantages),
            ("returns", returns),
        ):
            flat[name] = tensor.reshape(-1)
        return flat

    # --- learning ----------------------------------------------------------------------------

    def _minibatch_loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        head, value = self.ddp(batch["observations"])
        distribution = self.model.distribution(head)
        ppo = self.rl.ppo
        terms = ppo_loss(
            self.model.log_prob(distribution, batch["actions"]),
            batch["logp"],
            batch["advantages"],
            value,
            batch["values"],
            batch["returns"],
            self.model.entropy(distribution),
            clip=ppo.clip,
            value_coef=ppo.value_coef,
            entropy_coef=ppo.entropy_coef,
            clip_value=ppo.clip_value_loss,
        )
        self.optimizer.zero_grad(set_to_none=True)
        terms.total.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), ppo.max_grad_norm)
        self.optimizer.step()
        return {
            "loss": terms.total.detach(),
            "policyLoss": terms.policy.detach(),
            "valueLoss": terms.value.detach(),
            "entropy": terms.entropy.detach(),
            "approxKl": terms.approx_kl,
        }

    def train_step(self, micro_batches: Sequence[Batch]) -> dict[str, torch.Tensor]:
        """One PPO iteration: a rollout, then epochs of minibatch updates (``micro_batches`` unused)."""
        del micro_batches
        self.model.train()
        rollout = self._rollout()
        size = len(rollout["returns"])
        minibatch = size // self.rl.ppo.minibatches
        last: dict[str, torch.Tensor] = {}
        for _ in range(self.rl.ppo.epochs):
            order = torch.randperm(size, device=self.device)
            for start in range(0, size, minibatch):
                index = order[start : start + minibatch]
                last = self._minibatch_loss({name: tensor[index] for name, tensor in rollout.items()})
        if self.scheduler is not None:
            self.scheduler.step()
        return last

    def episodic_return(self) -> float | None:
        """Mean return of the recent episodes of every rank (collective); None before any ended."""
        total, count = all_reduce_sum([float(sum(self.recent)), float(len(self.recent))], self.context.gang)
        return total / count if count else None

    # --- evaluation --------------------------------------------------------------------------

    @torch.no_grad()
    def _episode(self, env: gym.Env[Any, Any], seed: int) -> float:
        observation, _ = env.reset(seed=seed)
        total, done = 0.0, False
        while not done:
            current = torch.as_tensor(np.asarray(observation, dtype=np.float32), device=self.device).reshape(
                1, -1
            )
            head, _ = self.model(current)
            action = self._env_actions(self.model.deterministic(head))[0]
            observation, reward, terminated, truncated, _ = env.step(action)
            total += float(reward)
            done = bool(terminated or truncated)
        return total

    def evaluate(self) -> dict[str, float]:
        """Mean return of the deterministic policy over ``evaluationEpisodes`` (shared by the ranks)."""
        episodes = self.rl.evaluation_episodes
        if episodes == 0:
            return {}
        self.model.eval()
        gang = self.context.gang
        env = environment_factory(self.rl.environment)()
        try:
            returns = [
                self._episode(env, self.config.seed + _EVALUATION_SEED_OFFSET + episode)
                for episode in range(gang.rank, episodes, gang.world_size)
            ]
        finally:
            env.close()
        total, count = all_reduce_sum([float(sum(returns)), float(len(returns))], gang)
        return {"evaluationReturn": total / count}

    # --- state -------------------------------------------------------------------------------

    def _rank_state(self) -> dict[str, Any]:
        return {
            "environments": self.envs.state_dict(),
            "recentReturns": torch.tensor(list(self.recent), dtype=torch.float64),
        }

    def gather_rank_states(self) -> None:
        """Collect every rank's environments and returns window on rank 0 (collective), for the
        next ``state_dict``: the loop only asks rank 0 for the task's state."""
        self._gathered = gather_to_leader(self._rank_state(), self.context.gang)

    def state_dict(self) -> dict[str, Any]:
        ranks = self._gathered if self._gathered is not None else [self._rank_state()]
        self._gathered = None
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "ranks": ranks,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state.get("scheduler"):
            self.scheduler.load_state_dict(state["scheduler"])
        ranks = state.get("ranks") or []
        if len(ranks) != self.context.gang.world_size:
            return  # another gang size: the environments start afresh, the policy continues
        mine = ranks[self.context.gang.rank]
        self.envs.load_state_dict(mine["environments"])
        self.recent = deque((float(v) for v in mine["recentReturns"].tolist()), maxlen=RETURN_WINDOW)

    def export(self) -> Exported:
        observation_dim, action_dim = (
            int(self.architecture["observationDim"]),
            int(self.architecture["actionDim"]),
        )
        outputs: list[dict[str, Any]] = [
            {
                "name": "action",
                "datatype": "INT64" if self.model.discrete else "FP32",
                "shape": [-1] if self.model.discrete else [-1, action_dim],
            }
        ]
        if self.model.discrete:
            outputs.append({"name": "probabilities", "datatype": "FP32", "shape": [-1, action_dim]})
        else:
            outputs += [
                {"name": name, "datatype": "FP32", "shape": [-1, action_dim]} for name in ("mean", "std")
            ]
        outputs.append({"name": "value", "datatype": "FP32", "shape": [-1]})
        return Exported(
            state_dict={k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            architecture=dict(self.architecture),
            inputs=[{"name": "observation", "datatype": "FP32", "shape": [-1, observation_dim]}],
            outputs=outputs,
        )
