"""Trainer benchmark: the aidc trainer against a minimal hand-written DDP loop, side by side.

1. Throughput (samples/s) of the digits classifier on 2 gloo ranks on this machine: the
   hand-written loop (DataLoader + DistributedSampler + DDP + Adam, nothing else) and the aidc
   trainer (same model, data, batch size and epochs; it also validates after every epoch,
   agrees on stop flags every step and keeps its progress meter). Runs alternate, best of N.
2. Checkpoint save and load seconds (the trainer's own atomic writer and weights-only loader)
   for the classifier and the language model, small and GPT-2-small shaped.
3. With CUDA: the language model on one GPU with nccl and bf16, tokens/s and MFU, for both the
   trainer's task and a hand-written loop.

Prints tables; asserts nothing. ``python benchmarks/trainer/bench_trainer.py [--quick]``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F  # noqa: N812 (the torch convention)

from aidc_trainer.checkpoint import load_latest, save_checkpoint
from aidc_trainer.config import TrainerConfig, parse_config
from aidc_trainer.datasets import load_images
from aidc_trainer.models import build_model

CLASSIFIER_ARCHITECTURE = {"inputShape": [1, 28, 28], "numClasses": 10, "channels": [32, 64, 64], "dense": 64}
LM_SHAPES = {
    "language model (default: 4x256)": {
        "vocabSize": 256,
        "contextLength": 128,
        "layers": 4,
        "heads": 4,
        "embedding": 256,
    },
    "language model (GPT-2 small shape: 12x768)": {
        "vocabSize": 256,
        "contextLength": 1024,
        "layers": 12,
        "heads": 12,
        "embedding": 768,
    },
}
# dense bf16 tensor-core peaks (FLOP/s) by device name fragment, for MFU
PEAK_BF16 = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "L4": 121e12, "A10": 125e12}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# --- workers (one per rank, started by this same file) ------------------------------------------


def digits_config(epochs: int, batch_size: int) -> TrainerConfig:
    return parse_config(
        {"task": "classifier", "dataset": {"source": "digits"}, "epochs": epochs, "batchSize": batch_size, "seed": 0}
    )


def hand_written_loop(config: TrainerConfig) -> dict[str, float]:
    """What a person writes in an afternoon: DataLoader, DistributedSampler, DDP, Adam."""
    from torch.nn.parallel import DistributedDataParallel
    from torch.utils.data import DataLoader, DistributedSampler

    dist.init_process_group("gloo")
    world = dist.get_world_size()
    data = load_images(config, None)
    torch.manual_seed(config.seed)
    model = DistributedDataParallel(build_model("classifier", CLASSIFIER_ARCHITECTURE))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    sampler: DistributedSampler[int] = DistributedSampler(data.train, shuffle=True, seed=config.seed)
    loader = DataLoader(data.train, batch_size=config.batch_size, sampler=sampler)
    samples, started = 0, time.monotonic()
    for epoch in range(config.epochs):
        sampler.set_epoch(epoch)
        for images, labels in loader:
            optimizer.zero_grad()
            F.cross_entropy(model(images), labels).backward()
            optimizer.step()
            samples += len(images) * world
    seconds = time.monotonic() - started
    dist.destroy_process_group()
    return {"samplesPerSecond": samples / seconds, "seconds": seconds}


def aidc_trainer_loop(config: TrainerConfig) -> dict[str, float]:
    """The aidc trainer's own loop, as a pod runs it (no checkpoint directory, no API server)."""
    from aidc_trainer.distributed import init_gang, leave_gang, read_topology
    from aidc_trainer.environment import RunEnvironment
    from aidc_trainer.preemption import PreemptionWatch
    from aidc_trainer.training import Trainer

    gang = init_gang(read_topology(), use_cuda=False)
    started = time.monotonic()
    result = Trainer(config, RunEnvironment(metrics_port=0), gang, PreemptionWatch()).run()
    leave_gang()
    return {"samplesPerSecond": result.samples_per_second or 0.0, "seconds": time.monotonic() - started}


def worker(mode: str, out: Path, epochs: int, batch_size: int) -> None:
    torch.set_num_threads(1)
    config = digits_config(epochs, batch_size)
    result = hand_written_loop(config) if mode == "baseline" else aidc_trainer_loop(config)
    if int(os.environ["RANK"]) == 0:
        out.write_text(json.dumps(result))


def run_gang(mode: str, epochs: int, batch_size: int, world: int, scratch: Path) -> dict[str, float]:
    out = scratch / f"{mode}.json"
    port = str(free_port())
    processes = []
    for rank in range(world):
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AIDC_", "PET_"))}
        env.update(
            RANK=str(rank),
            WORLD_SIZE=str(world),
            LOCAL_RANK="0",
            MASTER_ADDR="127.0.0.1",
            MASTER_PORT=port,
            OMP_NUM_THREADS="1",
            CUDA_VISIBLE_DEVICES="",
        )
        command = [
            sys.executable,
            __file__,
            "--worker",
            mode,
            "--out",
            str(out),
            "--epochs",
            str(epochs),
            "--batch-size",
            str(batch_size),
        ]
        processes.append(subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
    errors = [p.communicate(timeout=900)[1].decode(errors="replace") for p in processes]
    if any(p.returncode for p in processes):
        raise RuntimeError(f"{mode} failed:\n" + "\n".join(errors)[-3000:])
    return json.loads(out.read_text())  # type: ignore[no-any-return]


# --- checkpoints ---------------------------------------------------------------------------------


def checkpoint_timings(task: str, architecture: dict[str, Any], scratch: Path) -> dict[str, float]:
    """One optimizer step (so Adam's state exists), then save and load through the trainer's code."""
    torch.manual_seed(0)
    model = build_model(task, architecture)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    if task == "classifier":
        loss = F.cross_entropy(model(torch.rand(8, 1, 28, 28)), torch.randint(0, 10, (8,)))
    else:
        tokens = torch.randint(0, 256, (1, 65))
        loss = F.cross_entropy(model(tokens[:, :-1]).flatten(0, 1), tokens[:, 1:].flatten())
    loss.backward()
    optimizer.step()
    directory = scratch / f"ckpt-{task}-{architecture.get('layers', 0)}"
    state = {"epoch": 0, "position": 0, "task": {"model": model.state_dict(), "optimizer": optimizer.state_dict()}}
    saved = save_checkpoint(directory, state, step=1, keep=1)
    size = saved.path.stat().st_size
    started = time.monotonic()
    found = load_latest(directory)
    assert found is not None
    model.load_state_dict(found[1]["task"]["model"])
    optimizer.load_state_dict(found[1]["task"]["optimizer"])
    load = time.monotonic() - started
    shutil.rmtree(directory)
    parameters = sum(p.numel() for p in model.parameters())
    return {"parameters": parameters, "megabytes": size / 1e6, "save": saved.seconds, "load": load}


# --- GPU -----------------------------------------------------------------------------------------


def gpu_language_model(steps: int) -> list[tuple[str, float, float | None]]:
    """Tokens/s and MFU of the GPT-2-small-shaped LM on one GPU, bf16: trainer task vs plain loop."""
    from aidc_trainer.distributed import Topology, init_gang, leave_gang
    from aidc_trainer.precision import resolve_precision
    from aidc_trainer.tasks import TaskContext, build_task

    shape = LM_SHAPES["language model (GPT-2 small shape: 12x768)"]
    batch, context = 16, shape["contextLength"]
    name = torch.cuda.get_device_name()
    peak = next((value for key, value in PEAK_BF16.items() if key in name), None)
    layers, width = shape["layers"], shape["embedding"]
    config = parse_config(
        {
            "task": "language-model",
            "dataset": {"source": "synthetic", "samples": batch * (steps + 10)},
            "batchSize": batch,
            "precision": "bf16",
            "validationFraction": 0.0,
            "languageModel": {"contextLength": context, "layers": layers, "heads": shape["heads"], "embedding": width},
        }
    )
    gang = init_gang(Topology(), use_cuda=True)
    task = build_task(TaskContext(config, gang, resolve_precision("bf16", gang.device)))
    task.set_total_steps(steps)
    windows = task.train_set.tensors[0]
    model = task.model  # type: ignore[attr-defined]
    parameters = sum(p.numel() for p in model.parameters()) - model.positions.weight.numel()
    flops_per_token = 6 * parameters + 12 * layers * context * width  # PaLM appendix B, with attention
    results = []

    def measure(label: str, step: Any) -> None:
        for index in range(3):  # warm-up: kernels, allocator
            step(windows[index * batch : (index + 1) * batch])
        torch.cuda.synchronize()
        started = time.monotonic()
        for index in range(steps):
            step(windows[(index % 8) * batch : (index % 8 + 1) * batch])
        torch.cuda.synchronize()
        tokens_per_second = steps * batch * context / (time.monotonic() - started)
        mfu = flops_per_token * tokens_per_second / peak if peak else None
        results.append((label, tokens_per_second, mfu))

    measure("aidc trainer task (DDP, bf16 autocast)", lambda b: task.train_step([(b,)]))
    plain = build_model("language-model", task.architecture).to(gang.device)  # type: ignore[attr-defined]
    optimizer = torch.optim.AdamW(plain.parameters(), lr=3e-4, fused=True)

    def plain_step(b: torch.Tensor) -> None:
        b = b.to(gang.device, non_blocking=True)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits = plain(b[:, :-1])
        F.cross_entropy(logits.float().flatten(0, 1), b[:, 1:].flatten()).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    measure("hand-written loop (no DDP, fused AdamW)", plain_step)
    leave_gang()
    print(
        f"\nGPU: {name}; LM {parameters / 1e6:.1f}M non-embedding params, batch {batch} x {context} tokens, "
        f"peak bf16 {peak / 1e12 if peak else float('nan'):.0f} TFLOP/s"
    )
    return results


# --- main ----------------------------------------------------------------------------------------


def table(title: str, header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(header[i]), *(len(r[i]) for r in rows)) for i in range(len(header))]
    print(f"\n{title}")
    print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--worker")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--world-size", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="fewer epochs and repeats, no GPT-2-sized checkpoint")
    parser.add_argument("--gpu-steps", type=int, default=30)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.out, args.epochs, args.batch_size)
        return
    if args.quick:
        args.epochs, args.repeats = 2, 1

    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    print(
        f"torch {torch.__version__}, {os.cpu_count()} CPUs (load average {load}), world size {args.world_size} "
        f"(gloo), digits, batch {args.batch_size} per rank, {args.epochs} epochs, {args.repeats} runs each"
    )
    with tempfile.TemporaryDirectory(prefix="aidc-bench-") as scratch_name:
        scratch = Path(scratch_name)
        rates: dict[str, list[float]] = {"baseline": [], "aidc": []}
        for _ in range(args.repeats):  # alternate, so background load hits both alike
            for mode, found in rates.items():
                found.append(run_gang(mode, args.epochs, args.batch_size, args.world_size, scratch)["samplesPerSecond"])
        rows = []
        for label, pick in (("best", max), ("median", statistics.median)):
            base, ours = pick(rates["baseline"]), pick(rates["aidc"])
            rows.append([label, f"{base:,.0f}", f"{ours:,.0f}", f"{ours / base:.2f}x"])
        table(
            "Throughput: digits classifier, training samples/s over the whole gang",
            [f"of {args.repeats} runs", "hand-written DDP loop", "aidc trainer", "aidc / hand-written"],
            rows,
        )

        rows = []
        cases: list[tuple[str, str, dict[str, Any]]] = [("classifier", "classifier", CLASSIFIER_ARCHITECTURE)]
        cases += [(label, "language-model", shape) for label, shape in LM_SHAPES.items()]
        if args.quick:
            cases = cases[:2]
        for label, task, architecture in cases:
            timing = checkpoint_timings(task, architecture, scratch)
            rows.append(
                [
                    label,
                    f"{timing['parameters'] / 1e6:.2f}M",
                    f"{timing['megabytes']:.1f}",
                    f"{timing['save']:.3f}",
                    f"{timing['load']:.3f}",
                ]
            )
        table(
            "Checkpoints (model + AdamW state; atomic write with fsync; weights-only load into the model)",
            ["model", "params", "MB", "save s", "load s"],
            rows,
        )

    if torch.cuda.is_available():
        results = gpu_language_model(args.gpu_steps)
        table(
            "Language model on GPU (nccl, bf16)",
            ["loop", "tokens/s", "MFU"],
            [[label, f"{rate:,.0f}", f"{mfu:.1%}" if mfu is not None else "n/a"] for label, rate, mfu in results],
        )
    else:
        print("\nNo CUDA device: the nccl/bf16 language-model run and its MFU are skipped.")


if __name__ == "__main__":
    main()
