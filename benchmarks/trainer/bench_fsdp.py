"""FSDP against DDP, side by side: the bytes of model state each rank holds, and tokens per second.

1. CPU (gloo), the built-in language model at 1, 2 and 4 ranks under DDP and FSDP: the bytes of
   parameters, gradients and optimizer state (AdamW) on the rank that holds the most, measured from
   the tensors after a real optimizer step (``aidc_trainer.sharding.state_bytes_per_rank``), and the
   gang's tokens/s over the same steps. Target: FSDP's state per rank at most 1/N of DDP's + 10 %.
2. With CUDA (one GPU, nccl, bf16): a model of about 1 B parameters under FSDP, tokens/s, MFU
   against the GPU's dense bf16 peak (``--peak-tflops``) and peak memory. Runs only where CUDA is.

Prints tables; asserts nothing. ``python benchmarks/trainer/bench_fsdp.py [--quick]``.
"""

from __future__ import annotations

import argparse
import os
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F  # noqa: N812 (the torch convention)

from aidc_trainer.models import build_model
from aidc_trainer.precision import resolve_precision
from aidc_trainer.sharding import shard_model, state_bytes_per_rank

CPU_SHAPE = {"vocabSize": 256, "contextLength": 128, "layers": 4, "heads": 4, "embedding": 256}
# about 1.1 B parameters: 24 blocks of width 2048 (12 x 2048^2 each) and a 32k vocabulary
GPU_SHAPE = {"vocabSize": 32000, "contextLength": 2048, "layers": 22, "heads": 16, "embedding": 2048}
MIB = 1 << 20


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _worker(rank: int, world: int, port: int, strategy: str, steps: int, batch: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    device = torch.device("cpu")
    torch.manual_seed(0)
    model = build_model("language-model", CPU_SHAPE)
    precision = resolve_precision("fp32", device)
    wrapped = shard_model(model, list(getattr(model, "blocks")), strategy=strategy, device=device, precision=precision)  # noqa: B009
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    tokens = torch.randint(0, CPU_SHAPE["vocabSize"], (batch, CPU_SHAPE["contextLength"] + 1))

    def step() -> None:
        logits = wrapped.module(tokens[:, :-1])
        F.cross_entropy(logits.flatten(0, 1), tokens[:, 1:].flatten()).backward()
        optimizer.step()

    step()  # warm-up; the optimizer state exists from here
    sizes = state_bytes_per_rank(model, optimizer)
    optimizer.zero_grad(set_to_none=False)
    dist.barrier()
    started = time.perf_counter()
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=False)
        step()
    dist.barrier()
    seconds = time.perf_counter() - started
    most = torch.tensor([sizes["parameters"], sizes["gradients"], sizes["optimizerState"]], dtype=torch.float64)
    dist.all_reduce(most, op=dist.ReduceOp.MAX)
    if rank == 0:
        rate = world * batch * CPU_SHAPE["contextLength"] * steps / seconds
        torch.save({"bytes": most.tolist(), "tokensPerSecond": rate}, out)
    dist.destroy_process_group()
    os._exit(0)  # no interpreter teardown: it has aborted finished gloo workers (see the trainer's cli)


def measure(world: int, strategy: str, steps: int, batch: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as folder:
        out = str(Path(folder) / "result.pt")
        mp.spawn(_worker, args=(world, _free_port(), strategy, steps, batch, out), nprocs=world)
        return dict(torch.load(out, weights_only=True))


def cpu_table(quick: bool) -> None:
    steps, batch = (3, 4) if quick else (10, 8)
    params = sum(p.numel() for p in build_model("language-model", CPU_SHAPE).parameters())
    print(f"\nCPU, gloo: language model {CPU_SHAPE} ({params / 1e6:.2f} M parameters), AdamW fp32, "
          f"batch {batch} x {CPU_SHAPE['contextLength']} tokens per rank, {steps} steps")  # fmt: skip
    header = (
        "strategy",
        "ranks",
        "params MiB",
        "grads MiB",
        "optim MiB",
        "state MiB",
        "of DDP's",
        "target",
        "tokens/s",
    )
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for world in (1, 2, 4):
        ddp_total = None
        for strategy in ("DDP", "FSDP"):
            result = measure(world, strategy, steps, batch)
            parameters, gradients, optimizer = result["bytes"]
            total = parameters + gradients + optimizer
            ddp_total = total if strategy == "DDP" else ddp_total
            share = total / ddp_total if ddp_total else float("nan")
            target = "" if strategy == "DDP" else ("met" if share <= 1 / world + 0.10 else "NOT met")
            target += f" (<= {1 / world + 0.10:.2f})" if strategy == "FSDP" else ""
            cells = (strategy, world, f"{parameters / MIB:.2f}", f"{gradients / MIB:.2f}", f"{optimizer / MIB:.2f}",
                     f"{total / MIB:.2f}", f"{share:.3f}", target, f"{result['tokensPerSecond']:.0f}")  # fmt: skip
            print("| " + " | ".join(str(c) for c in cells) + " |", flush=True)


def gpu_table(peak_tflops: float, steps: int) -> None:
    if not torch.cuda.is_available():
        print("\nGPU: no CUDA here; the 1 B FSDP row runs on a machine with a GPU")
        return
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()))
    dist.init_process_group("nccl", rank=0, world_size=1)
    device = torch.device("cuda", 0)
    torch.cuda.set_device(device)
    precision = resolve_precision("bf16", device)
    model = build_model("language-model", GPU_SHAPE).to(device)
    params = sum(p.numel() for p in model.parameters())
    wrapped = shard_model(model, list(getattr(model, "blocks")), strategy="FSDP", device=device, precision=precision,  # noqa: B009
                          activation_checkpointing=True)  # fmt: skip
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    batch, context = 4, GPU_SHAPE["contextLength"]
    tokens = torch.randint(0, GPU_SHAPE["vocabSize"], (batch, context + 1), device=device)

    def step() -> None:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits = wrapped.module(tokens[:, :-1])
        F.cross_entropy(logits.float().flatten(0, 1), tokens[:, 1:].flatten()).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(2):
        step()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    rate = batch * context * steps / seconds
    layers, width = GPU_SHAPE["layers"], GPU_SHAPE["embedding"]
    # 6 N per token for the matrices, plus attention's 12 L d T; activation checkpointing recomputes
    # the forward (not counted: MFU counts the model's FLOPs, not the hardware's)
    flops_per_token = 6 * params + 12 * layers * width * context
    mfu = rate * flops_per_token / (peak_tflops * 1e12)
    name = torch.cuda.get_device_name(0)
    print(f"\nGPU, {name}, nccl, bf16 params + fp32 reduce, activation checkpointing, fused AdamW")
    print("| model | params | tokens/s | MFU | peak memory GiB |\n|---|---|---|---|---|")
    print(f"| {GPU_SHAPE} | {params / 1e9:.2f} B | {rate:.0f} | {100 * mfu:.1f} % (of {peak_tflops:.0f} TFLOPS) | "
          f"{torch.cuda.max_memory_allocated() / (1 << 30):.1f} |")  # fmt: skip
    dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps (a smoke run)")
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="dense bf16 peak (H100/H200 SXM: 989)")
    parser.add_argument("--gpu-steps", type=int, default=10)
    arguments = parser.parse_args()
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs")
    cpu_table(arguments.quick)
    gpu_table(arguments.peak_tflops, arguments.gpu_steps)


if __name__ == "__main__":
    main()
