"""The operator and the trainer image each keep a copy of what they agree on; the copies match.

``aidc.contract`` (operator) and ``aidc_trainer.contract`` (trainer image) are plain Python
files with no dependencies, so both import here without kopf or torch. Below their docstrings
the two files are the same text. Every name the trainer declares must exist on the operator's
side with the same value, and every name the operator declares in the shared families
(environment, annotation, labels, layout, heartbeat, exit codes, ports) must exist in the
trainer's copy: a variable the operator injects and the trainer never heard of is drift too.
Every variable the operator puts into a rank's or a model server's environment is a contract
name, and the server reads each one it is given.
"""

from __future__ import annotations

import ast
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from aidc import contract as operator_contract
from aidc_trainer import contract as trainer_contract

SHARED_PREFIXES = ("ENV_", "LABEL_", "ANNOTATION_", "CHECKPOINT_", "EXPORT_", "MODEL_", "EXIT_", "HEARTBEAT_")
SHARED_NAMES = (
    "TORCHRUN_ENV",
    "SERVER_PORT",
    "TRAINER_METRICS_PORT",
    "DEFAULT_RETRYABLE_EXIT_CODES",
    "PERMANENT_EXIT_CODES",
    "GROUP",
)


def constants(module: ModuleType) -> dict[str, object]:
    return {name: getattr(module, name) for name in dir(module) if name.isupper() and not name.startswith("_")}


def _below_docstring(module: ModuleType) -> str:
    text = Path(module.__file__ or "").read_text()
    docstring = ast.parse(text).body[0]
    assert isinstance(docstring, ast.Expr) and isinstance(docstring.value, ast.Constant)
    return "".join(text.splitlines(keepends=True)[docstring.end_lineno or 0 :])


def test_both_copies_are_the_same_text_below_their_docstrings() -> None:
    """Comments travel with the names: a copy edited on one side only fails here, not in a pod."""
    assert _below_docstring(operator_contract) == _below_docstring(trainer_contract)


def test_every_trainer_constant_matches_the_operator() -> None:
    operator, trainer = constants(operator_contract), constants(trainer_contract)
    missing = sorted(set(trainer) - set(operator))
    assert not missing, f"the trainer declares names the operator does not know: {missing}"
    different = {name: (operator[name], trainer[name]) for name in trainer if operator[name] != trainer[name]}
    assert not different, f"operator and trainer disagree (operator, trainer): {different}"


def test_the_trainer_knows_every_shared_operator_constant() -> None:
    shared = {name for name in constants(operator_contract) if name.startswith(SHARED_PREFIXES) or name in SHARED_NAMES}
    missing = sorted(shared - set(constants(trainer_contract)))
    assert not missing, f"the operator declares shared names the trainer copy lacks: {missing}"
    assert len(shared) > 40  # the families above really matched something


def _env_values() -> set[str]:
    return {str(value) for name, value in constants(operator_contract).items() if name.startswith("ENV_")}


def test_the_api_models_carry_the_contract_api_version() -> None:
    pytest.importorskip("pydantic")
    from aidc.api import InferenceService, TrainingJob

    for model in (TrainingJob, InferenceService):
        assert model.model_fields["api_version"].default == operator_contract.API_VERSION


def test_every_variable_of_a_rank_is_a_contract_name() -> None:
    pytest.importorskip("pydantic")
    from aidc.compute.gang import gang_pods
    from aidc.settings import OperatorSettings
    from tests.factories import training_job

    job = training_job(
        spec={"procsPerReplica": 2, "storage": {"checkpoints": {"size": "1Gi"}, "data": {"claimName": "d"}}}
    )
    for pod in gang_pods(job, 0, OperatorSettings()):
        names = {item["name"] for item in pod["spec"]["containers"][0]["env"]}
        assert names - _env_values() == set()
        assert set(operator_contract.TORCHRUN_ENV) <= names


def _served_environment() -> dict[str, Any]:
    from aidc.api.inferenceservice import ServedModel
    from aidc.compute.serving import serving_deployment
    from aidc.settings import OperatorSettings
    from tests.factories import inference_service

    isvc = inference_service(
        spec={
            "batching": {"maxBatchSize": 7, "maxDelayMs": 3},
            "workers": 3,
            "maxRequestBytes": 65536,
            "model": {"fromTrainingJob": {"name": "digits"}, "name": "digits-v1"},
        }
    )
    model = ServedModel(uri="pvc://claim/folder", claim_name="claim", path="folder", task="language-model")
    deployment = serving_deployment(isvc, model, OperatorSettings())
    return {item["name"]: item["value"] for item in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}


def test_every_variable_of_a_model_server_is_a_contract_name_the_server_reads() -> None:
    """The serving pod's environment is the only way the InferenceService's batching reaches the server."""
    pytest.importorskip("pydantic")
    from aidc_trainer.serving.settings import parse_settings

    env = _served_environment()
    assert set(env) - _env_values() == set()
    settings = parse_settings([], env)
    c = operator_contract
    read = (
        c.ENV_MODEL_DIR,
        c.ENV_MODEL_NAME,
        c.ENV_HTTP_PORT,
        c.ENV_MAX_BATCH_SIZE,
        c.ENV_MAX_DELAY_MS,
        c.ENV_MAX_REQUEST_BYTES,
        c.ENV_SERVER_WORKERS,
        c.ENV_OPENAI,
    )
    assert set(env) - set(read) == {c.ENV_PYTHON_UNBUFFERED}
    assert settings.openai == c.OPENAI_REQUIRED  # a language model's server must serve the OpenAI routes
    assert settings.model_dir == Path(env[c.ENV_MODEL_DIR])
    assert settings.port == int(env[c.ENV_HTTP_PORT])
    assert settings.max_request_bytes == int(env[c.ENV_MAX_REQUEST_BYTES]) == 65536
    assert (settings.model_name, settings.max_batch_size, settings.max_delay_ms) == ("digits-v1", 7, 3.0)
    assert settings.workers == 3


@pytest.mark.parametrize("module", [operator_contract, trainer_contract], ids=["operator", "trainer"])
def test_contract_files_import_nothing_but_typing(module: ModuleType) -> None:
    """Both copies must stay importable on the other side (no kopf, no torch)."""
    tree = ast.parse(Path(module.__file__ or "").read_text())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert imported <= {"__future__", "typing"}


def test_the_trainer_uses_the_contract_values() -> None:
    """Spot checks that the trainer's behaviour is wired to the shared constants, not to literals."""
    from aidc_trainer import checkpoint, heartbeat
    from aidc_trainer.environment import read_environment

    env = read_environment(
        {
            operator_contract.ENV_CHECKPOINT_DIR: "/c",
            operator_contract.ENV_METRICS_PORT: "9191",
            operator_contract.ENV_POD_NAME: "p",
            operator_contract.ENV_CHECKPOINT_KEEP: "7",
        }
    )
    assert (str(env.checkpoint_dir), env.metrics_port, env.pod_name, env.checkpoint_keep) == ("/c", 9191, "p", 7)
    patch = heartbeat.progress_patch({})
    assert list(patch["metadata"]["annotations"]) == [operator_contract.ANNOTATION_PROGRESS]
    assert checkpoint.checkpoint_name(3) == "ckpt-000000003.pt"


OPERATOR_TRAINER_CONFIGS = [
    pytest.param({"task": "classifier"}, id="classifier-defaults"),
    pytest.param({"task": "gan", "dataset": {"source": "synthetic", "samples": 1}}, id="gan-one-sample"),
    pytest.param(
        {
            "task": "classifier",
            "dataset": {"source": "npz", "path": "mnist.npz"},
            "maxSteps": 10,
            "gradientClipNorm": 1.0,
            "precision": "bf16",
        },
        id="classifier-npz",
    ),
    pytest.param(
        {
            "task": "language-model",
            "dataset": {"source": "text", "path": "corpus.txt"},
            "languageModel": {"contextLength": 8, "layers": 1, "heads": 1, "embedding": 16},
        },
        id="language-model-smallest",
    ),
    pytest.param({"task": "language-model"}, id="language-model-defaults"),
]


RL_TRAINER_CONFIGS = [
    pytest.param(
        {"task": "reinforcement-learning", "reinforcementLearning": {"environment": {"gymnasiumId": "CartPole-v1"}}},
        id="rl-defaults",
    ),
    pytest.param(
        {
            "task": "reinforcement-learning",
            "learningRate": 0.001,
            "reinforcementLearning": {
                "environment": {"entryPoint": "envs.grid:Grid"},
                "totalSteps": 1,
                "envsPerRank": 1,
                "rolloutSteps": 1,
                "evaluationEpisodes": 0,
                "ppo": {"minibatches": 1, "gamma": 1, "gaeLambda": 0, "clip": 1, "entropyCoef": 0, "valueCoef": 0},
            },
        },
        id="rl-smallest-entry-point",
    ),
]


def test_the_operator_and_the_trainer_know_the_same_tasks() -> None:
    """A task the API server admits but the trainer does not know fails every pod with exit 78."""
    pytest.importorskip("pydantic")
    from typing import get_args

    from aidc.api.trainingjob import Task
    from aidc_trainer.config import TASKS

    assert set(get_args(Task)) == set(TASKS)
    assert "reinforcement-learning" in TASKS


@pytest.mark.parametrize("spec", OPERATOR_TRAINER_CONFIGS + RL_TRAINER_CONFIGS)
def test_every_trainer_config_the_operator_sends_parses_in_the_trainer(spec: dict[str, object]) -> None:
    """What the operator puts into AIDC_TRAINER_CONFIG (its defaults filled in, nulls dropped),
    the trainer must accept: otherwise a job the API server admitted fails with exit 78."""
    pytest.importorskip("pydantic")
    from aidc.api.trainingjob import TrainerConfig as OperatorTrainerConfig
    from aidc_trainer.config import parse_config

    sent = OperatorTrainerConfig.model_validate(spec).model_dump(mode="json", by_alias=True, exclude_none=True)
    parsed = parse_config(sent).to_json()
    for key, value in sent.items():  # every value the operator chose reaches the trainer unchanged
        if isinstance(value, dict):
            assert {k: parsed[key][k] for k in value} == value
        else:
            assert parsed[key] == value


@pytest.mark.parametrize(
    ("task", "source"), [("classifier", "digits"), ("gan", "digits"), ("language-model", "synthetic")]
)
def test_without_a_dataset_each_task_gets_one_it_can_read(task: str, source: str) -> None:
    """The CRD has no default dataset (one default cannot suit images and text): the trainer picks per task."""
    pytest.importorskip("pydantic")
    from aidc.api.trainingjob import TrainerConfig as OperatorTrainerConfig
    from aidc_trainer.config import parse_config

    sent = OperatorTrainerConfig.model_validate({"task": task}).model_dump(
        mode="json", by_alias=True, exclude_none=True
    )
    assert "dataset" not in sent
    assert parse_config(sent).dataset.source == source
