"""The digits classifier behind KServe's ModelServer: the peer ``bench_server.py`` measures against.

Runs in the benchmark's own KServe environment (``.cache/bench-kserve-venv``, PyPI's kserve), never
in the project's. The model is the same export rebuilt by the same loader as aidc's server, and the
forward pass is the same (softmax and argmax of the logits, one torch thread); everything around it
(FastAPI, uvicorn, KServe's v2 parsing and encoding) is what a KServe user would run.

    python kserve_digits.py --model_dir DIR --model_name digits --http_port 8080
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch
from kserve import InferOutput, InferRequest, InferResponse, Model, ModelServer
from kserve import model_server as kserve_model_server

from aidc_trainer.export import load_exported


class Digits(Model):  # type: ignore[misc]
    """A KServe model as its documentation writes one: load in ``load``, infer in ``predict``."""

    def __init__(self, name: str, model_dir: Path) -> None:
        super().__init__(name)
        self.model_dir = model_dir
        self.module: torch.nn.Module | None = None
        self.load()

    def load(self) -> bool:
        self.module = load_exported(self.model_dir, torch.device("cpu"))[0].eval()
        self.ready = True
        return True

    def predict(self, payload: InferRequest, headers: dict[str, str] | None = None) -> InferResponse:
        assert self.module is not None
        images = torch.from_numpy(payload.inputs[0].as_numpy())
        with torch.inference_mode():
            probabilities = torch.softmax(self.module(images).float(), dim=-1)
            predicted = probabilities.argmax(dim=-1)
        outputs = []
        for name, datatype, tensor in (
            ("probabilities", "FP32", probabilities),
            ("predicted_class", "INT64", predicted),
        ):
            output = InferOutput(name, list(tensor.shape), datatype)
            output.set_data_from_numpy(tensor.numpy(), binary_data=False)
            outputs.append(output)
        return InferResponse(response_id=payload.id or "", model_name=self.name, infer_outputs=outputs)


def main() -> None:
    parser = argparse.ArgumentParser(parents=[kserve_model_server.parser], conflict_handler="resolve")
    parser.add_argument("--model_dir", type=Path, required=True)
    parser.add_argument("--model_name", default="digits")
    arguments: Any
    arguments, _ = parser.parse_known_args()
    server = ModelServer(http_port=arguments.http_port, workers=1, enable_grpc=False)
    server.start([Digits(arguments.model_name, arguments.model_dir)])


if __name__ == "__main__":
    main()
