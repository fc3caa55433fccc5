"""The API models: examples parse, invalid input is rejected with a readable message."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel, ValidationError

from aidc.api import InferenceService, TrainingJob, describe_validation_error
from aidc.api.base import ApiModel
from tests.api.cases import INFERENCE_SERVICE, INVALID, TRAINING_JOB, VALID

ROOT = Path(__file__).resolve().parents[2]
KINDS: dict[str, type[ApiModel]] = {"TrainingJob": TrainingJob, "InferenceService": InferenceService}


def parse(body: dict[str, Any]) -> ApiModel:
    return KINDS[body["kind"]].model_validate(body)


def example_documents() -> list[tuple[str, dict[str, Any]]]:
    return [
        (f"{path.name}#{i}", doc)
        for path in sorted((ROOT / "examples").glob("*.yaml"))
        for i, doc in enumerate(yaml.safe_load_all(path.read_text()))
        if doc
    ]


def test_there_are_examples_of_both_kinds() -> None:
    kinds = {doc["kind"] for _, doc in example_documents()}
    assert kinds == {"TrainingJob", "InferenceService"}


@pytest.mark.parametrize(("name", "doc"), example_documents(), ids=[n for n, _ in example_documents()])
def test_every_example_parses(name: str, doc: dict[str, Any]) -> None:
    model = parse(doc)
    # round trip: what the operator would write back is what the user wrote, plus defaults
    again = parse(model.to_wire())
    assert again == model


@pytest.mark.parametrize(("case", "body", "words"), INVALID, ids=[c for c, _, _ in INVALID])
def test_invalid_resources_are_rejected_with_the_field_named(case: str, body: dict[str, Any], words: list[str]) -> None:
    with pytest.raises(ValidationError) as caught:
        parse(body)
    message = describe_validation_error(caught.value)
    for word in words:
        assert word in message, f"{case}: {word!r} not in {message!r}"
    assert "https://" not in message and "Traceback" not in message


@pytest.mark.parametrize(("case", "body"), VALID, ids=[c for c, _ in VALID])
def test_the_valid_cases_of_the_table_parse(case: str, body: dict[str, Any]) -> None:
    parse(body)


def test_error_message_names_the_path_of_nested_list_items() -> None:
    body = {**TRAINING_JOB, "spec": {**TRAINING_JOB["spec"], "env": [{"name": "A"}, {"name": ""}]}}
    with pytest.raises(ValidationError) as caught:
        parse(body)
    assert describe_validation_error(caught.value).startswith("spec.env[1].name:")


def test_defaults_are_filled_like_the_api_server_would() -> None:
    job = TrainingJob.model_validate(TRAINING_JOB)
    assert job.spec.failure_policy.retryable_exit_codes == [137, 143]
    assert job.spec.run_policy.clean_pod_policy == "Running"
    assert job.spec.storage.checkpoints is None
    assert InferenceService.model_validate(INFERENCE_SERVICE).spec.batching.max_delay_ms == 5


def test_models_are_frozen() -> None:
    job = TrainingJob.model_validate(TRAINING_JOB)
    with pytest.raises(ValidationError):
        job.spec.replicas = 3  # type: ignore[misc]


def _all_models(root: type[BaseModel]) -> set[type[BaseModel]]:
    from aidc.crdgen.schema import nested_models

    return nested_models(root)


@pytest.mark.parametrize("kind", [TrainingJob, InferenceService])
def test_every_field_has_a_description(kind: type[BaseModel]) -> None:
    missing = [
        f"{model.__name__}.{name}"
        for model in _all_models(kind)
        for name, field in model.model_fields.items()
        if not field.description
    ]
    assert missing == []


@pytest.mark.parametrize(
    ("override", "words"),
    [
        ({"restartPolicy": "Always"}, "spec.podTemplate.spec: restartPolicy cannot be overridden"),
        ({"containers": [{"image": "sidecar"}]}, "spec.podTemplate.spec: containers must be a list of objects"),
    ],
)
def test_pod_template_overrides_the_api_server_cannot_check(override: dict[str, Any], words: str) -> None:
    body = {**TRAINING_JOB, "spec": {**TRAINING_JOB["spec"], "podTemplate": {"spec": override}}}
    with pytest.raises(ValidationError) as caught:
        parse(body)
    assert describe_validation_error(caught.value).startswith(words)
