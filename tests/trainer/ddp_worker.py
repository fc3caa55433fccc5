"""One rank of a collective test, started by ``test_distributed.py`` in each of two processes.

It uses the trainer's own pieces (gang, task, sampler, collectives) and writes what rank 0 saw
to a JSON file: per-rank parameter digests after a few steps of every task, the same for the
classifier with DDP's gradient sync disabled (the control: ranks must drift), and the results of
the collective helpers. Everything runs in one gang because starting processes that import torch
is the expensive part.

Usage: ``python ddp_worker.py OUT``.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any

import torch

from aidc_trainer.config import parse_config
from aidc_trainer.distributed import (
    Gang,
    StepAgreement,
    broadcast_state,
    gather_to_leader,
    init_gang,
    leave_gang,
    read_topology,
)
from aidc_trainer.precision import resolve_precision
from aidc_trainer.rng import seed_rank
from aidc_trainer.sampling import ResumableSampler, iterate_batches
from aidc_trainer.tasks import TaskContext, build_task

STEPS = 6
CONFIGS: dict[str, dict[str, Any]] = {
    "classifier": {"task": "classifier", "dataset": {"source": "synthetic", "samples": 256}, "batchSize": 16},
    "gan": {"task": "gan", "dataset": {"source": "synthetic", "samples": 256}, "batchSize": 16},
    "language-model": {
        "task": "language-model",
        "dataset": {"source": "synthetic", "samples": 128},
        "batchSize": 8,
        "languageModel": {"contextLength": 32, "layers": 1, "heads": 2, "embedding": 32},
    },
}


def digest(state: Any) -> str:
    """A hash of every tensor in a nested state, in a stable order."""
    hasher = hashlib.sha256()

    def visit(value: Any, path: str) -> None:
        if isinstance(value, torch.Tensor):
            hasher.update(path.encode())
            hasher.update(value.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
        elif isinstance(value, dict):
            for key in sorted(value, key=str):
                visit(value[key], f"{path}.{key}")

    visit(state, "")
    return hasher.hexdigest()


def train(gang: Gang, mode: str) -> Any:
    unsynced = mode.endswith("-unsynced")
    config = parse_config(CONFIGS[mode.removesuffix("-unsynced")])
    task = build_task(TaskContext(config, gang, resolve_precision("fp32", gang.device)))
    task.set_total_steps(STEPS)
    seed_rank(config.seed, gang.rank)
    models = {k: v for k, v in task.state_dict().items() if k in ("model", "generator", "discriminator")}
    before = digest(models)
    sampler = ResumableSampler(task.train_set, num_replicas=gang.world_size, rank=gang.rank, seed=config.seed)
    batches = iterate_batches(task.train_set, sampler, config.batch_size)
    for _ in range(STEPS):
        batch = next(batches)
        if unsynced:
            with task.ddp.no_sync():  # type: ignore[attr-defined]
                task.train_step([batch])
        else:
            task.train_step([batch])
    models = {k: v for k, v in task.state_dict().items() if k in ("model", "generator", "discriminator")}
    return gather_to_leader({"before": before, "after": digest(models)}, gang)


def collectives(gang: Gang) -> dict[str, Any]:
    state: dict[str, Any] | None = None
    if gang.is_leader:
        state = {
            "weights": torch.arange(12, dtype=torch.float32).reshape(3, 4),
            "half": torch.tensor([1.5, -2.25], dtype=torch.bfloat16),
            "mask": torch.tensor([True, False, True]),
            "count": torch.tensor(7),
            "nested": [{"rng": torch.randint(0, 255, (5,), dtype=torch.uint8)}, ("text", 3, None, 2.5)],
        }
    received = broadcast_state(state, gang)
    summary = {
        "weights": received["weights"].tolist(),
        "half": [float(v) for v in received["half"].float()],
        "halfDtype": str(received["half"].dtype),
        "mask": received["mask"].tolist(),
        "count": int(received["count"]),
        "countShape": list(received["count"].shape),
        "nestedTuple": list(received["nested"][1]),
        "rngDigest": digest({"rng": received["nested"][0]["rng"]}),
    }
    # rank 1 raises the stop flag at step 3. Exchanging every step, everyone reads it at step 4
    # (one step late); spaced 4 steps apart (exchanges at steps 1, 2, 6, 10), at step 10
    seen = {"everyStep": agree(gang, StepAgreement(gang, 2, target_seconds=0), steps=6)}
    spaced = StepAgreement(gang, 2, target_seconds=3600, max_interval=4)
    seen["spaced"] = agree(gang, spaced, steps=12)
    gathered = gather_to_leader({"summary": summary, "flags": seen}, gang)
    leader_digest = digest({"rng": state["nested"][0]["rng"]}) if state else None
    return {"ranks": gathered, "leaderRngDigest": leader_digest}


def agree(gang: Gang, agreement: StepAgreement, steps: int) -> list[list[int]]:
    """What this rank reads at each step, and from the final drain, when rank 1 raises a flag at step 3."""
    seen = [agreement.exchange([int(gang.rank == 1 and step == 3), 0]) for step in range(1, steps + 1)]
    return [*seen, agreement.drain()]


def main() -> None:
    out = Path(sys.argv[1])
    torch.set_num_threads(1)
    gang = init_gang(read_topology(), use_cuda=False)
    result = {"collectives": collectives(gang)}
    for mode in (*CONFIGS, "classifier-unsynced"):
        result[mode] = train(gang, mode)
    leave_gang()
    if gang.is_leader:
        out.write_text(json.dumps(result))


if __name__ == "__main__":
    main()
    # as the trainer's entrypoint does: no interpreter teardown, whose destruction of gloo's threads
    # has aborted a finished worker here ("terminate called without an active exception")
    sys.stdout.flush()
    os._exit(0)
