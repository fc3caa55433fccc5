"""One rank of the host-read test, started by ``test_step_reads.py`` in each of two processes.

It runs the real trainer loop (``Trainer.run`` through ``CountedTrainer``) with every host read of
a tensor counted and filed under the step that made it, checkpoints every few steps and one
report at the end, and writes what this rank counted to ``OUT.rankN.json``.

Usage: ``python step_reads_worker.py OUT CHECKPOINT_DIR TASK``.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import torch

from aidc_trainer.config import parse_config
from aidc_trainer.distributed import init_gang, leave_gang, read_topology
from aidc_trainer.environment import RunEnvironment
from aidc_trainer.preemption import PreemptionWatch
from aidc_trainer.step_reads import AGREEMENT, CountedTrainer, HostReadCounter

CHECKPOINT_EVERY = 10
CONFIGS: dict[str, dict[str, Any]] = {
    # 256 examples, 2 ranks, 16 per batch: 8 steps per epoch, 24 steps
    "classifier": {"task": "classifier", "dataset": {"source": "synthetic", "samples": 256}, "batchSize": 16},
    "language-model": {
        "task": "language-model",
        "dataset": {"source": "synthetic", "samples": 128},
        "batchSize": 4,
        "gradientClipNorm": 1.0,  # the clip computes a norm on the device: it must not be read back
        "languageModel": {"contextLength": 32, "layers": 1, "heads": 2, "embedding": 32},
    },
}


def main() -> None:
    out, checkpoint_dir, task = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
    torch.set_num_threads(1)
    gang = init_gang(read_topology(), use_cuda=False)
    config = parse_config({**CONFIGS[task], "epochs": 3, "seed": 0})
    env = RunEnvironment(
        checkpoint_dir=checkpoint_dir if gang.is_leader else None,
        checkpoint_every_steps=CHECKPOINT_EVERY,
        checkpoint_every_seconds=0,
        heartbeat_seconds=3600,  # reports at the end only, so the ordinary steps do not depend on timing
        metrics_port=0,
    )
    counter = HostReadCounter()
    trainer = CountedTrainer(config, env, gang, PreemptionWatch(), tally=counter)
    with counter:
        result = trainer.run()
    leave_gang()
    report = {
        "steps": trainer.steps,
        "finalStep": result.step,
        "ordinary": trainer.ordinary_steps(),
        "special": {step: counter.counts[step] for step in sorted(trainer.checkpoint_steps | trainer.report_steps)},
        "checkpointSteps": sorted(trainer.checkpoint_steps),
        "outsideSteps": counter.counts[None],
        "agreement": counter.counts[AGREEMENT],
    }
    Path(f"{out}.rank{gang.rank}.json").write_text(json.dumps(report))


if __name__ == "__main__":
    main()
    sys.stdout.flush()
    os._exit(0)  # as the trainer's entrypoint does: no teardown of gloo's threads
