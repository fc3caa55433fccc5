"""Exports rebuild from their manifest alone; the small pure pieces around a run's end (the
termination message, the metrics endpoint, the torchrun command line) say what they should."""

from __future__ import annotations

import datetime
import json
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import torch

from aidc_trainer import contract
from aidc_trainer.export import build_manifest, load_exported, write_export
from aidc_trainer.launch import local_workers, torchrun_arguments
from aidc_trainer.metrics import TrainerMetrics
from aidc_trainer.models import build_model
from aidc_trainer.tasks import Exported
from aidc_trainer.termination import termination_message
from tests.trainer.gang import free_port

NOW = datetime.datetime(2025, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)
ARCHITECTURES: dict[str, dict[str, Any]] = {
    "classifier": {"inputShape": [1, 28, 28], "numClasses": 10, "channels": [32, 64, 64], "dense": 64},
    "gan": {"latentDim": 64, "imageShape": [1, 28, 28], "width": 64},
    "language-model": {"vocabSize": 256, "contextLength": 16, "layers": 1, "heads": 2, "embedding": 16},
}


def test_classifier_matches_the_original_design() -> None:
    model = build_model("classifier", ARCHITECTURES["classifier"])
    layers = [type(m).__name__ for m in model.modules() if not list(m.children())]
    assert layers == [
        "Conv2d",
        "ReLU",
        "MaxPool2d",
        "Conv2d",
        "ReLU",
        "MaxPool2d",
        "Conv2d",
        "ReLU",
        "Flatten",
        "Linear",
        "ReLU",
        "Linear",
    ]
    assert [m.out_channels for m in model.modules() if isinstance(m, torch.nn.Conv2d)] == [32, 64, 64]
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


@pytest.mark.parametrize("task", sorted(ARCHITECTURES))
def test_export_round_trip(task: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    trained = build_model(task, ARCHITECTURES[task]).eval()
    exported = Exported(
        state_dict={k: v.detach().clone() for k, v in trained.state_dict().items()},
        architecture=ARCHITECTURES[task],
        inputs=[{"name": "input", "datatype": "FP32", "shape": [-1, 1, 28, 28]}],
        outputs=[{"name": "logits", "datatype": "FP32", "shape": [-1, 10]}],
        classes=[str(d) for d in range(10)] if task == "classifier" else [],
    )
    manifest = build_manifest(
        task, exported, metrics={"validationAccuracy": 0.97}, step=360, epoch=8, job="mnist", now=NOW
    )
    write_export(tmp_path / contract.EXPORT_FINAL, exported.state_dict, manifest)
    write_export(tmp_path / contract.EXPORT_FINAL, exported.state_dict, {**manifest, "step": 361})  # replaced
    assert sorted(p.name for p in (tmp_path / contract.EXPORT_DIR).iterdir()) == ["final"]

    module, found = load_exported(tmp_path / contract.EXPORT_FINAL)
    assert found["step"] == 361
    assert set(found) == {
        "format",
        "task",
        "architecture",
        "inputs",
        "outputs",
        "classes",
        "metrics",
        "step",
        "epoch",
        "createdAt",
        "job",
    }
    assert (found["format"], found["createdAt"], found["job"]) == ("aidc.model/v1", "2025-01-02T03:04:05Z", "mnist")
    assert not module.training
    sample = {
        "classifier": torch.rand(2, 1, 28, 28),
        "gan": torch.randn(2, 64),
        "language-model": torch.randint(0, 256, (2, 16)),
    }[task]
    with torch.no_grad():
        assert torch.equal(module(sample), trained(sample))
    weights = torch.load(tmp_path / contract.EXPORT_FINAL / contract.MODEL_WEIGHTS, weights_only=True)
    assert isinstance(weights, dict) and all(isinstance(v, torch.Tensor) for v in weights.values())


def test_load_exported_refuses_a_foreign_manifest(tmp_path: Path) -> None:
    (tmp_path / contract.MODEL_MANIFEST).write_text(json.dumps({"format": "other"}))
    with pytest.raises(ValueError, match=r"aidc\.model/v1"):
        load_exported(tmp_path)


def test_termination_message_is_one_line_under_4_kib() -> None:
    line = termination_message(65, "InvalidData", "x" * 10_000, step=3)
    assert "\n" not in line and len(line.encode()) <= 4096
    entry = json.loads(line)
    assert (entry["exitCode"], entry["reason"], entry["step"]) == (65, "InvalidData", 3)
    assert entry["message"].startswith("xxx") and entry["message"].endswith("...")


def test_metrics_endpoint_serves_the_trainer_series() -> None:
    metrics = TrainerMetrics("mnist")
    port = free_port()
    server = metrics.serve(port)
    try:
        metrics.step.set(42)
        metrics.samples.inc(640)
        metrics.loss.set(0.25)
        metrics.observe_checkpoint("save", 0.3)
        metrics.set_validation({"validationAccuracy": 0.97})
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    finally:
        server[0].shutdown()
    assert 'aidc_trainer_step{job_name="mnist"} 42.0' in text
    assert 'aidc_trainer_samples_total{job_name="mnist"} 640.0' in text
    assert 'aidc_trainer_loss{job_name="mnist"} 0.25' in text
    assert 'aidc_trainer_checkpoint_seconds_count{job_name="mnist",operation="save"} 1.0' in text
    assert 'aidc_trainer_validation_metric{job_name="mnist",metric="validationAccuracy"} 0.97' in text
    assert TrainerMetrics("x").serve(0) is None


def test_torchrun_command_line_comes_from_the_pet_variables() -> None:
    env = {
        "PET_NNODES": "4",
        "PET_NPROC_PER_NODE": "8",
        "PET_NODE_RANK": "2",
        "PET_MASTER_ADDR": "job-0.job.ns.svc",
        "PET_MASTER_PORT": "29500",
        "NPROC_PER_NODE": "8",
    }
    assert torchrun_arguments(env) == [
        "--nnodes",
        "4",
        "--nproc-per-node",
        "8",
        "--node-rank",
        "2",
        "--master-addr",
        "job-0.job.ns.svc",
        "--master-port",
        "29500",
        "--max-restarts",
        "0",
        "--module",
        "aidc_trainer",
    ]
    assert local_workers(env) == 8
    assert local_workers({**env, "LOCAL_RANK": "3"}) == 1  # already a torchrun worker
    assert local_workers({}) == 1
