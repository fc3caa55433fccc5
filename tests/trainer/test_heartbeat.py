"""The progress heartbeat: its document, and its delivery to a real HTTP server standing in for
the API server (a JSON merge patch of one annotation of the pod, with the pod's token)."""

from __future__ import annotations

import datetime
import json
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from aidc_trainer import contract
from aidc_trainer.environment import read_environment
from aidc_trainer.heartbeat import HeartbeatReporter, HeartbeatSender, build_heartbeat, progress_patch
from tests.trainer.gang import free_port, run

NOW = datetime.datetime(2025, 3, 4, 5, 6, 7, 890000, tzinfo=datetime.UTC)


def heartbeat(**changes: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "step": 120,
        "total_steps": 400,
        "epoch": 3,
        "loss": 0.123456789,
        "metrics": {"validationAccuracy": 0.9},
        "samples_per_second": 1234.5678,
        "eta_seconds": 61.6,
        "checkpoint_path": "ckpt-000000100.pt",
        "checkpoint_step": 100,
        "model_path": None,
        "now": NOW,
    }
    values.update(changes)
    return build_heartbeat(**values)


def test_the_model_says_where_both_exports_are_and_how_big_the_final_one_is() -> None:
    document = heartbeat(model_path="export/final", model_best_path="export/best", model_bytes=4096)
    assert document["model"] == {"path": "export/final", "bestPath": "export/best", "bytes": 4096}
    assert heartbeat(model_path="export/final")["model"] == {"path": "export/final"}


def test_build_heartbeat_has_exactly_the_contract_fields() -> None:
    document = heartbeat()
    assert tuple(document) == contract.HEARTBEAT_FIELDS
    assert document == {
        "step": 120,
        "totalSteps": 400,
        "epoch": 3,
        "loss": 0.123457,
        "metrics": {"validationAccuracy": 0.9},
        "samplesPerSecond": 1234.57,
        "etaSeconds": 62,
        "checkpoint": {"path": "ckpt-000000100.pt", "step": 100},
        "model": None,
        "time": "2025-03-04T05:06:07Z",
    }


def test_build_heartbeat_never_emits_what_json_cannot_carry() -> None:
    document = heartbeat(
        loss=float("nan"),
        metrics={"validationLoss": float("inf")},
        samples_per_second=None,
        eta_seconds=float("inf"),
        checkpoint_path=None,
        checkpoint_step=None,
        model_path="export/final",
    )
    assert document["loss"] is None and document["metrics"] == {"validationLoss": None}
    assert document["etaSeconds"] is None and document["checkpoint"] is None
    assert document["model"] == {"path": "export/final"}
    json.dumps(document, allow_nan=False)


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class FakeApiServer:
    url: str
    requests: list[Recorded] = field(default_factory=list)
    status: int = 200


@pytest.fixture
def api_server() -> Iterator[FakeApiServer]:
    server_state = FakeApiServer(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_PATCH(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            server_state.requests.append(Recorded("PATCH", self.path, dict(self.headers.items()), body))
            payload = b'{"kind":"Pod"}' if server_state.status == 200 else b'{"kind":"Status","message":"denied"}'
            self.send_response(server_state.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server_state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server_state
    server.shutdown()
    server.server_close()


@pytest.fixture
def serviceaccount(tmp_path: Path) -> Path:
    directory = tmp_path / "serviceaccount"
    directory.mkdir()
    (directory / "token").write_text("token-one\n")
    (directory / "namespace").write_text("team-a\n")
    return directory


def test_sender_patches_only_the_progress_annotation(api_server: FakeApiServer, serviceaccount: Path) -> None:
    env = read_environment(
        {
            "AIDC_API_SERVER": api_server.url,
            "AIDC_SERVICEACCOUNT_DIR": str(serviceaccount),
            contract.ENV_POD_NAME: "mnist-0",
        }
    )
    sender = HeartbeatSender.from_environment(env)
    assert sender is not None
    assert sender.send(heartbeat())
    (serviceaccount / "token").write_text("token-two")  # the kubelet rotated the projected token
    assert sender.send(heartbeat(step=121))

    first, second = api_server.requests
    assert (first.method, first.path) == ("PATCH", "/api/v1/namespaces/team-a/pods/mnist-0")
    assert first.headers["Content-Type"] == "application/merge-patch+json"
    assert first.headers["Authorization"] == "Bearer token-one"
    assert second.headers["Authorization"] == "Bearer token-two"
    patch = json.loads(first.body)
    assert patch == {
        "metadata": {
            "annotations": {
                contract.ANNOTATION_PROGRESS: patch["metadata"]["annotations"][contract.ANNOTATION_PROGRESS]
            }
        }
    }
    assert json.loads(patch["metadata"]["annotations"][contract.ANNOTATION_PROGRESS]) == heartbeat()
    assert patch == progress_patch(heartbeat())


def test_refused_or_unreachable_api_server_is_logged_once_and_not_fatal(
    api_server: FakeApiServer, serviceaccount: Path, caplog: pytest.LogCaptureFixture
) -> None:
    api_server.status = 403
    sender = HeartbeatSender(api_server.url, "team-a", "mnist-0", serviceaccount)
    with caplog.at_level(logging.DEBUG, logger="aidc_trainer"):
        assert not sender.send(heartbeat())
        assert not sender.send(heartbeat())
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "HTTP 403" in warnings[0].fields["error"]  # type: ignore[attr-defined]
    unreachable = HeartbeatSender(f"http://127.0.0.1:{free_port()}", "team-a", "mnist-0", serviceaccount, 0.5)
    assert not unreachable.send(heartbeat())
    assert HeartbeatSender.from_environment(read_environment({})) is None


def test_reporter_sends_in_the_background_and_the_final_one_last(
    api_server: FakeApiServer, serviceaccount: Path
) -> None:
    reporter = HeartbeatReporter(HeartbeatSender(api_server.url, "team-a", "mnist-0", serviceaccount))
    reporter.offer(heartbeat(step=1))
    deadline = datetime.datetime.now() + datetime.timedelta(seconds=10)
    while not api_server.requests and datetime.datetime.now() < deadline:
        threading.Event().wait(0.01)
    reporter.close(heartbeat(step=400, model_path="export/final"))
    bodies = [
        json.loads(json.loads(r.body)["metadata"]["annotations"][contract.ANNOTATION_PROGRESS])
        for r in api_server.requests
    ]
    assert bodies[0]["step"] == 1
    assert bodies[-1]["step"] == 400 and bodies[-1]["model"] == {"path": "export/final"}


CLASSIFIER = {"task": "classifier", "dataset": {"source": "synthetic", "samples": 256}, "epochs": 2}
# one rank x 2 envs x 32 steps = 64 environment steps per iteration, 4 iterations
PPO = {
    "task": "reinforcement-learning",
    "reinforcementLearning": {"environment": {"gymnasiumId": "CartPole-v1"}, "totalSteps": 256, "envsPerRank": 2,
                              "rolloutSteps": 32, "evaluationEpisodes": 1, "ppo": {"minibatches": 2, "epochs": 1}},
}  # fmt: skip


@pytest.mark.trainer
def test_a_training_run_reports_to_the_api_server(
    api_server: FakeApiServer, serviceaccount: Path, tmp_path: Path
) -> None:
    config = CLASSIFIER
    env = {
        "AIDC_API_SERVER": api_server.url,
        "AIDC_SERVICEACCOUNT_DIR": str(serviceaccount),
        contract.ENV_POD_NAME: "job-0",
        contract.ENV_POD_NAMESPACE: "team-b",
        contract.ENV_HEARTBEAT_SECONDS: "0",
    }
    codes, gang = run(tmp_path, config, checkpoint_dir=tmp_path / "ckpt", env=env)
    assert codes == [0], gang.report()
    assert {r.path for r in api_server.requests} == {"/api/v1/namespaces/team-b/pods/job-0"}
    final = json.loads(
        json.loads(api_server.requests[-1].body)["metadata"]["annotations"][contract.ANNOTATION_PROGRESS]
    )
    assert final["step"] == final["totalSteps"] == 14  # 205 examples / 32 -> 7 steps x 2 epochs
    assert final["model"]["path"] == contract.EXPORT_FINAL and final["model"]["bestPath"] == contract.EXPORT_BEST
    assert final["model"]["bytes"] > 0  # the operator sizes the server's start-up probe by it
    assert final["checkpoint"] == {"path": "ckpt-000000014.pt", "step": 14}
    assert 0 <= final["metrics"]["validationAccuracy"] <= 1
    assert len(api_server.requests) >= 2  # periodic ones before the final one


@pytest.mark.trainer
def test_a_reinforcement_learning_run_reports_its_exports_too(
    api_server: FakeApiServer, serviceaccount: Path, tmp_path: Path
) -> None:
    """The PPO trainer ends its own way; its heartbeat names both exports and the final one's size."""
    env = {
        "AIDC_API_SERVER": api_server.url,
        "AIDC_SERVICEACCOUNT_DIR": str(serviceaccount),
        contract.ENV_POD_NAME: "agent-0",
        contract.ENV_POD_NAMESPACE: "team-b",
        contract.ENV_HEARTBEAT_SECONDS: "0",
    }
    codes, gang = run(tmp_path, PPO, checkpoint_dir=tmp_path / "ckpt", env=env)
    assert codes == [0], gang.report()
    final = json.loads(
        json.loads(api_server.requests[-1].body)["metadata"]["annotations"][contract.ANNOTATION_PROGRESS]
    )
    assert final["step"] == final["totalSteps"] == 256
    assert final["model"]["path"] == contract.EXPORT_FINAL and final["model"]["bestPath"] == contract.EXPORT_BEST
    assert final["model"]["bytes"] > 0
