"""PPO's pieces checked by hand, the config block, and environments that resume where they were.

GAE and the clipped loss are pure functions: the expected numbers below are worked out on paper
(see each comment). The environment state must survive a weights-only checkpoint and continue
the same trajectory, which is what makes a resumed run's returns continue rather than restart.
"""

from __future__ import annotations

import io
import math
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch

from aidc_trainer.config import EnvironmentConfig, ReinforcementLearningConfig, parse_config
from aidc_trainer.errors import ConfigError
from aidc_trainer.rl.environments import EnvironmentSet, capture_environment, restore_environment
from aidc_trainer.rl.ppo import generalized_advantages, ppo_loss


def test_gae_cuts_at_a_done_and_bootstraps_the_last_step() -> None:
    # gamma 0.9, lambda 0.8, one env; done at t=1
    # t=2: delta = 1 + 0.9*0.2 - 0.3 = 0.88                     -> A2 = 0.88
    # t=1: done, no bootstrap: delta = 1 - 0.4 = 0.6             -> A1 = 0.6
    # t=0: delta = 1 + 0.9*0.4 - 0.5 = 0.86; + 0.9*0.8*0.6 = 0.432 -> A0 = 1.292
    rewards = torch.tensor([[1.0], [1.0], [1.0]])
    values = torch.tensor([[0.5], [0.4], [0.3]])
    dones = torch.tensor([[0.0], [1.0], [0.0]])
    advantages, returns = generalized_advantages(rewards, values, dones, torch.tensor([0.2]), 0.9, 0.8)
    torch.testing.assert_close(advantages, torch.tensor([[1.292], [0.6], [0.88]]))
    torch.testing.assert_close(returns, torch.tensor([[1.792], [1.0], [1.18]]))


def test_gae_with_lambda_one_is_the_discounted_return_minus_the_value() -> None:
    rewards = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    values = torch.zeros(2, 2)
    advantages, _ = generalized_advantages(rewards, values, torch.zeros(2, 2), torch.tensor([10.0, 0.0]), 0.5, 1.0)
    # env 0: A1 = 3 + 0.5*10 = 8, A0 = 1 + 0.5*8 = 5; env 1: A1 = 4, A0 = 2 + 0.5*4 = 4
    torch.testing.assert_close(advantages, torch.tensor([[5.0, 4.0], [8.0, 4.0]]))


@pytest.mark.parametrize(
    ("advantage", "policy"),
    [
        # ratios 1.5 and 0.5, clip 0.2: a positive advantage takes min(r, clip(r)) -> (1.2 + 0.5) / 2
        (1.0, -0.85),
        # a negative one max(r, clip(r)) of the penalty -> (1.5 + 0.8) / 2
        (-1.0, 1.15),
    ],
)
def test_clipped_surrogate_value_and_entropy_terms(advantage: float, policy: float) -> None:
    old = torch.zeros(2)
    terms = ppo_loss(
        torch.log(torch.tensor([1.5, 0.5])),
        old,
        torch.full((2,), advantage),
        new_value=torch.tensor([0.5, -0.1]),
        old_value=torch.zeros(2),
        returns=torch.ones(2),
        entropy=torch.tensor([0.6, 0.4]),
        clip=0.2,
        value_coef=0.5,
        entropy_coef=0.01,
        normalize=False,
    )
    # value: sample 0 clipped to 0.2 -> (0.8)^2 = 0.64 > 0.25; sample 1 unclipped 1.21 -> 0.5 * 0.925
    assert math.isclose(float(terms.policy), policy, rel_tol=1e-6)
    assert math.isclose(float(terms.value), 0.4625, rel_tol=1e-6)
    assert math.isclose(float(terms.entropy), 0.5, rel_tol=1e-6)
    assert math.isclose(float(terms.total), policy - 0.01 * 0.5 + 0.5 * 0.4625, rel_tol=1e-6)


def test_advantages_are_normalised_per_minibatch() -> None:
    # advantages 1 and 3: mean 2, sample std sqrt(2) -> -1/sqrt(2), +1/sqrt(2); ratio 1 -> policy 0
    terms = ppo_loss(
        torch.zeros(2),
        torch.zeros(2),
        torch.tensor([1.0, 3.0]),
        torch.zeros(2),
        torch.zeros(2),
        torch.zeros(2),
        torch.zeros(2),
        clip=0.2,
        value_coef=0.5,
        entropy_coef=0.0,
    )
    assert abs(float(terms.policy)) < 1e-7
    # ratio e^0.1 on the positive advantage only: -(1/sqrt(2)) * min(e^0.1, 1.2) / 2
    terms = ppo_loss(
        torch.tensor([0.0, 0.1]),
        torch.zeros(2),
        torch.tensor([1.0, 3.0]),
        torch.zeros(2),
        torch.zeros(2),
        torch.zeros(2),
        torch.zeros(2),
        clip=0.2,
        value_coef=0.5,
        entropy_coef=0.0,
    )
    expected = (1 / math.sqrt(2) - math.exp(0.1) / math.sqrt(2)) / 2
    assert math.isclose(float(terms.policy), expected, rel_tol=1e-5)


@pytest.mark.parametrize(("clip_value", "expected"), [(True, 0.5 * (0.2 - 10.0) ** 2), (False, 0.0)])
def test_the_value_loss_is_clipped_around_the_rollouts_value_unless_turned_off(
    clip_value: bool, expected: float
) -> None:
    """Rollout value 0, return 10, new value 10. Clipped, the value may move only 0.2 from the
    rollout's, so the loss is that of 0.2: 0.5 * 9.8^2. Unclipped, the new value is right: 0."""
    terms = ppo_loss(
        torch.zeros(1),
        torch.zeros(1),
        torch.ones(1),
        torch.tensor([10.0]),
        torch.zeros(1),
        torch.tensor([10.0]),
        torch.zeros(1),
        clip=0.2,
        value_coef=0.5,
        entropy_coef=0.0,
        clip_value=clip_value,
    )
    assert math.isclose(float(terms.value), expected, rel_tol=1e-6)


RL = "reinforcement-learning"


def test_the_block_has_the_contracts_defaults_and_round_trips() -> None:
    config = parse_config({"task": RL, "reinforcementLearning": {}})
    assert config.reinforcement_learning == ReinforcementLearningConfig()
    block = config.reinforcement_learning
    assert (block.total_steps, block.envs_per_rank, block.rollout_steps) == (
        100_000,
        4,
        128,
    )
    assert block.environment == EnvironmentConfig(gymnasium_id="CartPole-v1")
    assert (block.ppo.clip, block.ppo.gae_lambda, block.ppo.gamma, block.ppo.max_grad_norm) == (0.2, 0.95, 0.99, 0.5)
    raw: dict[str, Any] = {
        "task": RL,
        "epochs": 8,
        "batchSize": 32,
        "dataset": {"source": "digits"},  # what the operator always sends: accepted, ignored
        "reinforcementLearning": {
            "environment": {"entryPoint": "my_envs:Maze"},
            "totalSteps": 5,
            "envsPerRank": 3,
            "rolloutSteps": 2,
            "evaluationEpisodes": 0,
            "ppo": {
                "clip": 1.0,
                "gaeLambda": 0.0,
                "gamma": 1.0,
                "epochs": 2,
                "minibatches": 6,
                "entropyCoef": 0.0,
                "valueCoef": 0.0,
                "maxGradNorm": 1.0,
                "clipValueLoss": False,
            },
        },
    }
    parsed = parse_config(raw)
    assert parse_config(parsed.to_json()) == parsed
    assert parsed.to_json()["reinforcementLearning"] == raw["reinforcementLearning"]


def _rl(**block: Any) -> dict[str, Any]:
    return {"task": RL, "reinforcementLearning": block}


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"task": RL}, "reinforcementLearning is required when task is reinforcement-learning"),
        ({"task": "classifier", "reinforcementLearning": {}}, "reinforcementLearning is only allowed with task"),
        (_rl(steps=3), "unknown key reinforcementLearning.steps"),
        (_rl(environment={}), "reinforcementLearning.environment needs exactly one of gymnasiumId and entryPoint"),
        (_rl(environment={"gymnasiumId": "CartPole-v1", "entryPoint": "a:B"}), "needs exactly one of"),
        (
            _rl(environment={"entryPoint": "no_class"}),
            "reinforcementLearning.environment.entryPoint must be module:Class",
        ),
        (_rl(environment={"gymnasiumId": ""}), "reinforcementLearning.environment.gymnasiumId must be a non-empty"),
        (_rl(totalSteps=0), "reinforcementLearning.totalSteps must be >= 1"),
        (_rl(envsPerRank=257), "reinforcementLearning.envsPerRank must be <= 256"),
        (_rl(rolloutSteps=0), "reinforcementLearning.rolloutSteps must be >= 1"),
        (_rl(rolloutSteps=8193), "reinforcementLearning.rolloutSteps must be <= 8192"),
        (_rl(evaluationEpisodes=1001), "reinforcementLearning.evaluationEpisodes must be <= 1000"),
        (_rl(ppo={"clip": 0}), "reinforcementLearning.ppo.clip must be in (0.0, 1.0]"),
        (_rl(ppo={"clip": 1.5}), "reinforcementLearning.ppo.clip must be in (0.0, 1.0]"),
        (_rl(ppo={"gamma": 1.01}), "reinforcementLearning.ppo.gamma must be in [0.0, 1.0]"),
        (_rl(ppo={"gaeLambda": -0.1}), "reinforcementLearning.ppo.gaeLambda must be in [0.0, 1.0]"),
        (_rl(ppo={"epochs": 101}), "reinforcementLearning.ppo.epochs must be <= 100"),
        (_rl(ppo={"entropyCoef": -1}), "reinforcementLearning.ppo.entropyCoef must be in [0.0, inf)"),
        (_rl(ppo={"maxGradNorm": 0}), "reinforcementLearning.ppo.maxGradNorm must be in (0.0, inf)"),
        (_rl(ppo={"clipValueLoss": 1}), "reinforcementLearning.ppo.clipValueLoss must be true or false"),
        (
            _rl(ppo={"minibatches": 3}),
            "reinforcementLearning.ppo.minibatches (3) must divide envsPerRank x rolloutSteps (512)",
        ),
        (_rl(ppo={"lr": 3}), "unknown key reinforcementLearning.ppo.lr"),
    ],
)
def test_config_errors_name_the_key(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_config(raw)
    assert message in str(raised.value)


@pytest.mark.parametrize(
    ("environment", "message"),
    [
        ({"gymnasiumId": "NoSuchEnv-v0"}, "gymnasiumId 'NoSuchEnv-v0' is not a registered Gymnasium environment"),
        ({"entryPoint": "no_such_module:Env"}, "entryPoint 'no_such_module:Env' cannot be imported"),
        ({"entryPoint": "collections:OrderedDict"}, "is not a gymnasium.Env subclass"),
    ],
)
def test_unknown_environments_are_config_errors(environment: dict[str, str], message: str) -> None:
    config = parse_config(_rl(environment=environment)).reinforcement_learning
    assert config is not None
    with pytest.raises(ConfigError, match=message):
        EnvironmentSet(config.environment, 1, 0)


def _weights_only(state: Any) -> Any:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def _trajectory(envs: EnvironmentSet, actions: list[np.ndarray]) -> list[tuple[Any, ...]]:
    steps = []
    for action in actions:
        result = envs.step(action)
        steps.append(
            (
                result.observations.tolist(),
                result.rewards.tolist(),
                result.terminated.tolist(),
                result.truncated.tolist(),
                result.finished,
            )
        )
    return steps


@pytest.mark.parametrize(
    ("gymnasium_id", "action"),
    [("CartPole-v1", lambda i: np.array([i % 2, (i // 3) % 2])), ("Pendulum-v1", lambda i: np.full((2, 1), np.sin(i)))],
)
def test_environments_resume_the_same_trajectory_from_a_weights_only_state(gymnasium_id: str, action: Any) -> None:
    """Run long enough for episodes to end (CartPole) and a TimeLimit to count (Pendulum: 200)."""
    config = EnvironmentConfig(gymnasium_id=gymnasium_id)
    envs = EnvironmentSet(config, 2, seed=11)
    _trajectory(envs, [action(i) for i in range(150)])
    state = _weights_only(envs.state_dict())
    after = [action(i) for i in range(150, 400)]
    expected = _trajectory(envs, after)
    resumed = EnvironmentSet(config, 2, seed=99)  # other seeds: everything must come from the state
    resumed.load_state_dict(state)
    got = _trajectory(resumed, after)
    assert got == expected
    assert any(step[4] for step in expected)  # episodes ended (and reset from np_random) after the resume


def test_a_captured_time_limit_counts_on() -> None:
    env = gym.make("Pendulum-v1")
    env.reset(seed=0)
    for _ in range(150):
        env.step(np.zeros(1))
    state = _weights_only(capture_environment(env, custom=False))
    fresh = gym.make("Pendulum-v1")
    fresh.reset(seed=5)
    restore_environment(fresh, state)
    truncated = [fresh.step(np.zeros(1))[3] for _ in range(50)]
    assert truncated == [False] * 49 + [True]


def test_a_users_environment_with_get_and_set_state_resumes_its_trajectory() -> None:
    config = EnvironmentConfig(gymnasium_id=None, entry_point="tests.trainer.rl_environments:SavableCorridor")
    envs = EnvironmentSet(config, 3, seed=2)
    actions = [np.array([i % 2, 1, (i // 2) % 2]) for i in range(120)]
    _trajectory(envs, actions[:40])
    state = _weights_only(envs.state_dict())
    expected = _trajectory(envs, actions[40:])
    resumed = EnvironmentSet(config, 3, seed=50)
    resumed.load_state_dict(state)
    assert _trajectory(resumed, actions[40:]) == expected
    assert any(step[4] for step in expected)


def test_a_users_environment_without_them_resumes_freshly_reset(caplog: pytest.LogCaptureFixture) -> None:
    config = EnvironmentConfig(gymnasium_id=None, entry_point="tests.trainer.rl_environments:Corridor")
    envs = EnvironmentSet(config, 2, seed=2)
    _trajectory(envs, [np.array([1, 1])] * 3)
    state = _weights_only(envs.state_dict())
    assert state["environments"] is None
    fresh = EnvironmentSet(config, 2, seed=2)
    before = fresh.observations.copy()
    with caplog.at_level("WARNING"):
        fresh.load_state_dict(state)
    assert "resuming from reset" in caplog.text
    np.testing.assert_array_equal(fresh.observations, before)


def test_an_id_whose_extra_is_not_installed_is_a_config_error() -> None:
    import importlib.util

    if importlib.util.find_spec("Box2D") is not None:
        pytest.skip("Box2D is installed here")
    with pytest.raises(ConfigError, match="cannot be built in this image: Box2D is not installed"):
        EnvironmentSet(EnvironmentConfig(gymnasium_id="LunarLander-v3"), 1, 0)
