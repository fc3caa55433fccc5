"""Trainer benchmark: the aidc trainer against a minimal hand-written DDP loop, side by side.

1. Throughput (samples/s) of the digits classifier on 2 gloo ranks on this machine. Both sides do
   the same work: DDP, Adam (the fused kernel on both: the trainer's choice, so the ratio shows the
   loop's overhead and not an optimizer's speed), the trainer's warm-up-cosine schedule and the same
   validation after every epoch, timed on both sides. The trainer runs with checkpoints off and
   with a checkpoint every 20 steps; a row of the loop with the default Adam shows what the kernel
   alone is worth. Both sides run with malloc keeping freed memory, as the trainer's entry point
   sets it (``aidc_trainer.allocator``); a row of the loop with glibc's default malloc shows what
   that is worth. Runs alternate mode by mode, so background load hits every mode alike.
2. Host reads per training step of the real trainer loop on the CPU (``aidc_trainer.step_reads``).
3. Checkpoint save and load seconds (the trainer's own atomic writer and weights-only loader)
   for the classifier and the language model, small and GPT-2-small shaped.
4. With CUDA: the language model on one GPU (nccl, bf16): host-device syncs per step of the real
   trainer loop (``torch.cuda.set_sync_debug_mode``), and tokens/s and MFU of the trainer's loop
   against a hand-written loop with the same model, optimizer and schedule. Without CUDA it prints
   that it was skipped (``--lm-on-cpu`` runs the same code on a tiny model on the CPU, to check it).

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

from aidc_trainer.allocator import keep_freed_memory
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


MODES = {
    "loop": "hand-written DDP loop",
    "loop-default-adam": "hand-written loop, default Adam kernel",
    "loop-default-malloc": "hand-written loop, glibc's default malloc",
    "aidc": "aidc trainer, checkpoints off",
    "aidc-ckpt20": "aidc trainer, checkpoint every 20 steps",
}


@torch.no_grad()
def validate(model: torch.nn.Module, validation: Any, world: int, rank: int) -> dict[str, float]:
    """The classifier task's validation: this rank's share in batches of 512, sums all-reduced."""
    model.eval()
    images, labels = (t[rank::world] for t in validation.tensors)
    sums = torch.zeros(3, dtype=torch.float64)
    for start in range(0, len(images), 512):
        logits = model(images[start : start + 512]).float()
        sums[0] += float(F.cross_entropy(logits, labels[start : start + 512], reduction="sum"))
        sums[1] += float((logits.argmax(dim=1) == labels[start : start + 512]).sum())
    sums[2] = len(images)
    dist.all_reduce(sums)
    model.train()
    return {"validationLoss": float(sums[0] / sums[2]), "validationAccuracy": float(sums[1] / sums[2])}


def hand_written_loop(config: TrainerConfig, fused: bool) -> dict[str, float]:
    """What a person writes in an afternoon: DataLoader, DistributedSampler, DDP, Adam, a schedule,
    validation after each epoch."""
    from torch.nn.parallel import DistributedDataParallel
    from torch.utils.data import DataLoader, DistributedSampler

    from aidc_trainer.tasks.base import warmup_cosine

    dist.init_process_group("gloo")
    world, rank = dist.get_world_size(), dist.get_rank()
    data = load_images(config, None)
    torch.manual_seed(config.seed)
    model = DistributedDataParallel(build_model("classifier", CLASSIFIER_ARCHITECTURE))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, fused=fused)
    sampler: DistributedSampler[int] = DistributedSampler(data.train, shuffle=True, seed=config.seed)
    loader = DataLoader(data.train, batch_size=config.batch_size, sampler=sampler)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(len(loader) * config.epochs))
    samples, started, cpu_started = 0, time.monotonic(), time.process_time()
    for epoch in range(config.epochs):
        sampler.set_epoch(epoch)
        for images, labels in loader:
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(model(images), labels).backward()
            optimizer.step()
            schedule.step()
            samples += len(images) * world
        validate(model.module, data.validation, world, rank)
    seconds, cpu_seconds = time.monotonic() - started, time.process_time() - cpu_started
    dist.destroy_process_group()
    return {"samplesPerSecond": samples / seconds, "samplesPerCpuSecond": samples / cpu_seconds, "seconds": seconds}


def _cpu_timed_trainer() -> type:
    from aidc_trainer.training import Trainer

    class CpuTimedTrainer(Trainer):
        """The trainer, with the CPU seconds of its epochs (validation included) noted."""

        cpu_seconds, samples = 0.0, 0

        def _train(self, *args: Any) -> bool:
            started = time.process_time()
            try:
                return bool(super()._train(*args))  # type: ignore[misc]
            finally:
                self.cpu_seconds = time.process_time() - started
                self.samples = args[-1].samples  # the _Loop: samples of the whole gang

    return CpuTimedTrainer


def aidc_trainer_loop(config: TrainerConfig, checkpoint_dir: Path | None) -> dict[str, float]:
    """The aidc trainer's own loop, as a pod runs it (no API server; rank 0 holds the claim)."""
    from aidc_trainer.distributed import init_gang, leave_gang, read_topology
    from aidc_trainer.environment import RunEnvironment
    from aidc_trainer.preemption import PreemptionWatch

    gang = init_gang(read_topology(), use_cuda=False)
    env = RunEnvironment(
        checkpoint_dir=checkpoint_dir if gang.is_leader else None,
        checkpoint_every_steps=20 if checkpoint_dir else 0,
        checkpoint_every_seconds=0,
        metrics_port=0,
    )
    started = time.monotonic()
    trainer = _cpu_timed_trainer()(config, env, gang, PreemptionWatch())
    result = trainer.run()
    leave_gang()
    # an older checkout's trainer has no _train to time: its CPU figure is left out
    per_cpu = trainer.samples / trainer.cpu_seconds if trainer.cpu_seconds else None
    return {
        "samplesPerSecond": result.samples_per_second or 0.0,
        "samplesPerCpuSecond": per_cpu,
        "seconds": time.monotonic() - started,
    }


def worker(mode: str, out: Path, epochs: int, batch_size: int) -> None:
    if mode not in ("loop-default-malloc", "aidc-before"):  # as the trainer's entry point (aidc_trainer.cli)
        keep_freed_memory()
    torch.set_num_threads(1)
    config = digits_config(epochs, batch_size)
    if mode.startswith("loop"):
        result = hand_written_loop(config, fused=mode != "loop-default-adam")
    else:
        checkpoints = out.with_suffix(".ckpt") if mode == "aidc-ckpt20" else None  # aidc, aidc-before: off
        result = aidc_trainer_loop(config, checkpoints)
        if checkpoints is not None and int(os.environ["RANK"]) == 0:
            shutil.rmtree(checkpoints, ignore_errors=True)
    if int(os.environ["RANK"]) == 0:
        out.write_text(json.dumps(result))
    # as the trainer's entry point does: no interpreter teardown, whose destruction of gloo's threads
    # aborted about one run in ten ("terminate called without an active exception", exit 134)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def run_gang(
    mode: str, epochs: int, batch_size: int, world: int, scratch: Path, before: Path | None = None
) -> dict[str, float]:
    """One gang of ``world`` ranks in ``mode``; ``aidc-before`` imports the trainer from ``before``."""
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
        if mode == "aidc-before" and before is not None:
            env["PYTHONPATH"] = os.pathsep.join([str(before / "trainer-image"), env.get("PYTHONPATH", "")])
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


# --- host reads and the language model (GPU) -------------------------------------------------------


def counted_run(config: TrainerConfig, device: str, scratch: Path) -> dict[str, Any]:
    """The real trainer loop on a gang of one with its host reads (CPU) or syncs (CUDA) counted per
    step; a checkpoint every 20 steps, reports at the end only."""
    from aidc_trainer.distributed import Topology, init_gang, leave_gang
    from aidc_trainer.environment import RunEnvironment
    from aidc_trainer.preemption import PreemptionWatch
    from aidc_trainer.step_reads import AGREEMENT, CountedTrainer, CudaSyncCounter, HostReadCounter

    gang = init_gang(Topology(), use_cuda=device == "cuda")
    env = RunEnvironment(
        checkpoint_dir=scratch / f"counted-{config.task}",
        checkpoint_every_steps=20,
        checkpoint_every_seconds=0,
        heartbeat_seconds=3600,
        metrics_port=0,
    )
    counter = CudaSyncCounter() if device == "cuda" else HostReadCounter()
    trainer = CountedTrainer(config, env, gang, PreemptionWatch(), tally=counter)
    with counter:
        trainer.run()
    leave_gang()
    shutil.rmtree(scratch / f"counted-{config.task}", ignore_errors=True)
    ordinary = trainer.ordinary_steps()
    checkpoints = sorted(trainer.checkpoint_steps)
    return {
        "ordinary steps": len(ordinary),
        "reads on ordinary steps": sum(ordinary.values()),
        "most on one ordinary step": max(ordinary.values(), default=0),
        "reads per checkpoint step": sum(counter.counts[s] for s in checkpoints) / max(1, len(checkpoints)),
        "agreement reads (host memory)": counter.counts[AGREEMENT],
        "outside steps (validation, reports)": counter.counts[None],
    }


def lm_config(shape: dict[str, int], batch: int, steps: int, precision: str) -> TrainerConfig:
    """The built-in language model on synthetic text: ``steps`` steps in one epoch, no validation."""
    return parse_config(
        {
            "task": "language-model",
            "dataset": {"source": "synthetic", "samples": batch * steps},
            "batchSize": batch,
            "epochs": 1,
            "precision": precision,
            "validationFraction": 0.0,
            "languageModel": {key: shape[key] for key in ("contextLength", "layers", "heads", "embedding")},
        }
    )


def trainer_tokens_per_second(config: TrainerConfig, device: str) -> float:
    """Tokens/s of the whole trainer loop (Trainer.run on a gang of one, checkpoints off)."""
    from aidc_trainer.distributed import Topology, init_gang, leave_gang
    from aidc_trainer.environment import RunEnvironment
    from aidc_trainer.preemption import PreemptionWatch
    from aidc_trainer.training import Trainer

    gang = init_gang(Topology(), use_cuda=device == "cuda")
    result = Trainer(config, RunEnvironment(metrics_port=0), gang, PreemptionWatch()).run()
    leave_gang()
    return (result.samples_per_second or 0.0) * config.language_model.context_length


def loop_tokens_per_second(config: TrainerConfig, device: str) -> float:
    """Tokens/s of a hand-written loop with the trainer's model, data, AdamW (fused, decay on
    matrices), schedule and autocast: shuffled windows on the device, one step per batch."""
    from aidc_trainer.datasets import load_tokens
    from aidc_trainer.tasks.base import warmup_cosine

    data = load_tokens(config, None)
    windows = data.train.tensors[0].to(device)
    architecture = {"vocabSize": data.vocab_size, **{k: v for k, v in config.to_json()["languageModel"].items()}}
    torch.manual_seed(config.seed)
    model = build_model("language-model", architecture).to(device)
    groups = [
        {"params": [p for p in model.parameters() if p.dim() >= 2], "weight_decay": 0.1},
        {"params": [p for p in model.parameters() if p.dim() < 2], "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW(groups, lr=3e-4, betas=(0.9, 0.95), fused=True)
    steps = len(windows) // config.batch_size
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(steps))
    autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=config.precision == "bf16")
    synchronize = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    synchronize()
    started = time.monotonic()
    order = torch.randperm(len(windows), device=device)
    for step in range(steps):
        batch = windows[order[step * config.batch_size : (step + 1) * config.batch_size]]
        with autocast:
            logits = model(batch[:, :-1])
        F.cross_entropy(logits.float().flatten(0, 1), batch[:, 1:].flatten()).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        schedule.step()
    synchronize()
    return steps * config.batch_size * config.language_model.context_length / (time.monotonic() - started)


def language_model_section(device: str, shape: dict[str, int], batch: int, steps: int, scratch: Path) -> None:
    """Syncs per step of the trainer loop, then tokens/s and MFU: loop and trainer alternate, best of 2."""
    precision = "bf16" if device == "cuda" else "fp32"
    counted = counted_run(lm_config(shape, batch, min(steps, 60), precision), device, scratch)
    what = "host-device syncs (CUDA sync debug mode)" if device == "cuda" else "host reads (CPU count)"
    table(f"Language model: {what} in the trainer loop", ["", "count"], [[k, f"{v:g}"] for k, v in counted.items()])
    config = lm_config(shape, batch, steps, precision)
    rates: dict[str, list[float]] = {"loop": [], "trainer": []}
    for _ in range(2):
        rates["loop"].append(loop_tokens_per_second(config, device))
        rates["trainer"].append(trainer_tokens_per_second(config, device))
    layers, width, context = shape["layers"], shape["embedding"], shape["contextLength"]
    probe = build_model("language-model", {"vocabSize": 256, **shape})
    parameters = sum(p.numel() for p in probe.parameters()) - probe.positions.weight.numel()  # type: ignore[union-attr]
    flops_per_token = 6 * parameters + 12 * layers * context * width  # PaLM appendix B, with attention
    name = torch.cuda.get_device_name() if device == "cuda" else "CPU"
    peak = next((value for key, value in PEAK_BF16.items() if key in name), None) if device == "cuda" else None
    best_loop = max(rates["loop"])
    rows = []
    for label, key in (("hand-written loop (same model, fused AdamW)", "loop"), ("aidc trainer loop", "trainer")):
        rate = max(rates[key])
        mfu = f"{flops_per_token * rate / peak:.1%}" if peak else "n/a"
        rows.append([label, f"{rate:,.0f}", f"{rate / best_loop:.3f}x", mfu])
    table(
        f"Language model tokens/s on {name} ({precision}, {parameters / 1e6:.1f}M non-embedding params, "
        f"batch {batch} x {context}, {steps} steps, best of 2; peak {peak / 1e12 if peak else float('nan'):.0f} "
        "TFLOP/s)",
        ["loop", "tokens/s", "of the loop", "MFU"],
        rows,
    )


# --- main ----------------------------------------------------------------------------------------


def table(title: str, header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(header[i]), *(len(r[i]) for r in rows)) for i in range(len(header))]
    print(f"\n{title}")
    print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))


def throughput(args: argparse.Namespace, scratch: Path) -> None:
    modes = dict(MODES)
    if args.before:  # the trainer of an older checkout, same benchmark, alternating with the rest
        modes["aidc-before"] = f"aidc trainer from {args.before}, checkpoints off"
    runs: dict[str, list[dict[str, Any]]] = {mode: [] for mode in modes}
    for _ in range(args.repeats):  # alternate, so background load hits every mode alike
        for mode, found in runs.items():
            found.append(run_gang(mode, args.epochs, args.batch_size, args.world_size, scratch, args.before))
    print("samples/s of each run:", json.dumps({m: [round(r["samplesPerSecond"]) for r in f] for m, f in runs.items()}))
    rows = []
    loop = runs["loop"]
    for mode, label in modes.items():
        wall = [r["samplesPerSecond"] for r in runs[mode]]
        paired = [r["samplesPerSecond"] / base["samplesPerSecond"] for r, base in zip(runs[mode], loop, strict=True)]
        cpu = [r["samplesPerCpuSecond"] for r in runs[mode] if r.get("samplesPerCpuSecond")]
        base_cpu = statistics.median(r["samplesPerCpuSecond"] for r in loop)
        rows.append(
            [
                label,
                f"{max(wall):,.0f}",
                f"{max(wall) / max(r['samplesPerSecond'] for r in loop):.3f}x",
                f"{statistics.median(wall):,.0f}",
                f"{statistics.median(wall) / statistics.median(r['samplesPerSecond'] for r in loop):.3f}x",
                f"{statistics.median(paired):.3f}x",
                f"{statistics.median(cpu) / base_cpu:.3f}x" if cpu else "n/a",
            ]
        )
    table(
        f"Throughput: digits classifier, samples/s of the whole gang, {args.repeats} runs each; validation "
        "after every epoch run and timed on both sides",
        ["run", "best", "of loop's best", "median", "of loop's median", "median paired", "per CPU-second"],
        rows,
    )
    print(
        "median paired: the median over repeats of (this run / the loop's run of the same round); "
        "per CPU-second: samples per CPU-second of rank 0's process over the epochs, median, of the loop's"
    )


def checkpoints(args: argparse.Namespace, scratch: Path) -> None:
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--worker")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--world-size", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="fewer epochs and repeats, no GPT-2-sized checkpoint")
    parser.add_argument("--gpu-steps", type=int, default=200)
    parser.add_argument("--lm-on-cpu", action="store_true", help="run the GPU section's code on a tiny LM on the CPU")
    parser.add_argument("--before", type=Path, help="a checkout whose trainer runs as one more mode")
    parser.add_argument("--only", choices=["throughput", "reads", "checkpoints", "lm"], action="append")
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.out, args.epochs, args.batch_size)
        return
    if args.quick:
        args.epochs, args.repeats = 2, 1
    sections = set(args.only or ["throughput", "reads", "checkpoints", "lm"])

    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    print(
        f"torch {torch.__version__}, {os.cpu_count()} CPUs (load average {load}), world size {args.world_size} "
        f"(gloo), digits, batch {args.batch_size} per rank, {args.epochs} epochs, {args.repeats} runs each"
    )
    with tempfile.TemporaryDirectory(prefix="aidc-bench-") as scratch_name:
        scratch = Path(scratch_name)
        if "throughput" in sections:
            throughput(args, scratch)
        if "reads" in sections:
            torch.set_num_threads(1)
            counted = counted_run(digits_config(2, args.batch_size), "cpu", scratch)
            table(
                "Host reads of tensor values per step, the trainer loop on the CPU (digits, 1 rank, 2 epochs)",
                ["", "count"],
                [[k, f"{v:g}"] for k, v in counted.items()],
            )
        if "checkpoints" in sections:
            checkpoints(args, scratch)
        if "lm" in sections:
            if torch.cuda.is_available():
                shape = LM_SHAPES["language model (GPT-2 small shape: 12x768)"]
                language_model_section("cuda", shape, 16, args.gpu_steps, scratch)
            elif args.lm_on_cpu:
                tiny = {"vocabSize": 256, "contextLength": 64, "layers": 2, "heads": 2, "embedding": 64}
                language_model_section("cpu", tiny, 8, 40, scratch)
            else:
                print(
                    "\nNo CUDA device: the language model's GPU section (syncs per step, tokens/s against a "
                    "hand-written loop, MFU) was skipped. --lm-on-cpu runs its code on a tiny model on the CPU."
                )


if __name__ == "__main__":
    main()
