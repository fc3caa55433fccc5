"""What each rank's AIDC_TRAINER_CONFIG carries: the spec's trainer block with the API server's
defaults, camelCase, nulls left out, so the trainer can tell "unset" (its own default) from a value."""

from __future__ import annotations

import json
from typing import Any

import pytest

from aidc import contract
from aidc.compute.gang import gang_pods
from aidc.settings import OperatorSettings
from tests.factories import training_job

CARTPOLE = {"environment": {"gymnasiumId": "CartPole-v1"}}
PPO_DEFAULTS = {
    "clip": 0.2,
    "gaeLambda": 0.95,
    "gamma": 0.99,
    "epochs": 4,
    "minibatches": 4,
    "entropyCoef": 0.01,
    "valueCoef": 0.5,
    "maxGradNorm": 0.5,
    "clipValueLoss": True,
}


def sent_configs(trainer: dict[str, Any], replicas: int = 2) -> list[dict[str, Any]]:
    """The decoded AIDC_TRAINER_CONFIG of every pod of the first gang."""
    job = training_job(spec={"replicas": replicas, "trainer": trainer})
    configs = []
    for pod in gang_pods(job, 0, OperatorSettings()):
        env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}
        configs.append(json.loads(env[contract.ENV_TRAINER_CONFIG]))
    return configs


def test_every_rank_gets_the_same_reinforcement_learning_block_with_the_contract_defaults() -> None:
    configs = sent_configs({"task": "reinforcement-learning", "reinforcementLearning": CARTPOLE})
    assert len(configs) == 2 and configs[0] == configs[1]
    assert configs[0]["task"] == "reinforcement-learning" and configs[0]["seed"] == 0
    assert configs[0]["reinforcementLearning"] == {
        "environment": {"gymnasiumId": "CartPole-v1"},
        "totalSteps": 100000,
        "envsPerRank": 4,
        "rolloutSteps": 128,
        "evaluationEpisodes": 10,
        "ppo": PPO_DEFAULTS,
    }


@pytest.mark.parametrize(
    ("block", "expected"),
    [
        pytest.param(
            {"environment": {"entryPoint": "envs.grid:Grid"}, "totalSteps": 7, "ppo": {"minibatches": 2}},
            {
                "environment": {"entryPoint": "envs.grid:Grid"},
                "totalSteps": 7,
                "ppo": {**PPO_DEFAULTS, "minibatches": 2},
            },
            id="entry-point-and-overrides",
        ),
        pytest.param(
            {**CARTPOLE, "evaluationEpisodes": 0, "ppo": {"gamma": 1, "entropyCoef": 0}},
            {**CARTPOLE, "evaluationEpisodes": 0, "ppo": {**PPO_DEFAULTS, "gamma": 1.0, "entropyCoef": 0.0}},
            id="zeros-are-sent-not-dropped",
        ),
    ],
)
def test_the_users_values_reach_the_trainer_over_the_defaults(block: dict[str, Any], expected: dict[str, Any]) -> None:
    sent = sent_configs({"task": "reinforcement-learning", "reinforcementLearning": block}, replicas=1)[0]
    rl = sent["reinforcementLearning"]
    assert {key: rl[key] for key in expected} == expected
    assert "gymnasiumId" not in rl["environment"] or "entryPoint" not in rl["environment"]


@pytest.mark.parametrize(
    ("trainer", "rate"),
    [
        ({"task": "reinforcement-learning", "reinforcementLearning": CARTPOLE}, None),
        ({"task": "reinforcement-learning", "reinforcementLearning": CARTPOLE, "learningRate": 0.001}, 0.001),
        ({"task": "classifier"}, None),
    ],
)
def test_an_unset_learning_rate_stays_unset_so_the_task_picks_its_own(
    trainer: dict[str, Any], rate: float | None
) -> None:
    sent = sent_configs(trainer, replicas=1)[0]
    assert sent.get("learningRate") == rate
    assert ("learningRate" in sent) == (rate is not None)


def test_other_tasks_send_no_reinforcement_learning_block_and_rl_sends_no_dataset() -> None:
    assert "reinforcementLearning" not in sent_configs({"task": "classifier"}, replicas=1)[0]
    rl = sent_configs({"task": "reinforcement-learning", "reinforcementLearning": CARTPOLE}, replicas=1)[0]
    assert "dataset" not in rl and "languageModel" not in rl


@pytest.mark.parametrize(("parallelism", "mounted"), [(None, [True, False, False]), ("FSDP", [True, True, True])])
def test_the_checkpoint_claim_is_mounted_on_rank_0_under_ddp_and_on_every_rank_under_fsdp(
    parallelism: str | None, mounted: list[bool]
) -> None:
    """FSDP writes each checkpoint from every rank (its shards), DDP from rank 0 alone."""
    trainer: dict[str, Any] = {"task": "language-model"}
    if parallelism:
        trainer["parallelism"] = {"strategy": parallelism}
    job = training_job(spec={"replicas": 3, "trainer": trainer, "storage": {"checkpoints": {"size": "1Gi"}}})
    pods = gang_pods(job, 0, OperatorSettings())
    claims = [[v for v in p["spec"]["volumes"] if v.get("persistentVolumeClaim")] for p in pods]
    assert [bool(c) for c in claims] == mounted
    mounts = [{m["mountPath"] for m in p["spec"]["containers"][0]["volumeMounts"]} for p in pods]
    assert [contract.CHECKPOINT_MOUNT in m for m in mounts] == mounted
    configs = [
        json.loads({e["name"]: e.get("value") for e in p["spec"]["containers"][0]["env"]}[contract.ENV_TRAINER_CONFIG])
        for p in pods
    ]
    assert all(c.get("parallelism", {}).get("strategy") == parallelism for c in configs if parallelism)
