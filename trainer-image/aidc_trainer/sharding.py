"""How a model is spread over the gang: DDP (a full replica per rank) or FSDP2 (sharded).

DDP keeps the parameters, gradients and optimizer state whole on every rank and all-reduces the
gradients. FSDP2 (``torch.distributed.fsdp.fully_shard``) keeps 1/N of each on every rank: each
transformer block is one unit whose parameters are all-gathered for its forward and backward and
whose gradients are reduce-scattered; the root unit holds what is left (embeddings, final norm,
head). On GPUs with bf16 the block computes in bf16 and reduces in fp32; on CPU all is fp32.

Both wrappers answer the same two questions of the loop: ``no_sync()`` for the micro-batches of a
gradient accumulation that must not communicate, and ``module`` for the forward.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Final

import torch
from torch import nn
from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard
from torch.nn.parallel import DistributedDataParallel

from aidc_trainer.precision import Precision

STRATEGIES: Final = ("DDP", "FSDP")


@dataclass
class ShardedModel:
    """A model wrapped for the gang: ``module`` is what the forward calls."""

    module: nn.Module
    strategy: str

    @property
    def sharded(self) -> bool:
        return self.strategy == "FSDP"

    @contextlib.contextmanager
    def no_sync(self) -> Iterator[None]:
        """Accumulate gradients locally: DDP skips its all-reduce, FSDP its reduce-scatter."""
        if isinstance(self.module, DistributedDataParallel):
            with self.module.no_sync():
                yield
            return
        if isinstance(self.module, FSDPModule):
            self.module.set_requires_gradient_sync(False)
            try:
                yield
            finally:
                self.module.set_requires_gradient_sync(True)
            return
        yield


def mixed_precision(precision: Precision) -> MixedPrecisionPolicy:
    """bf16 parameters with fp32 gradient reduction where the run is bf16; fp32 otherwise."""
    if precision.name == "bf16":
        return MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    return MixedPrecisionPolicy()


def checkpoint_activations(blocks: Sequence[nn.Module]) -> None:
    """Recompute each block's activations in the backward instead of keeping them (memory for time)."""
    for block in blocks:
        block.forward = functools.partial(
            torch.utils.checkpoint.checkpoint, block.forward, use_reentrant=False
        )


def shard_model(
    model: nn.Module,
    blocks: Sequence[nn.Module],
    *,
    strategy: str,
    device: torch.device,
    precision: Precision,
    activation_checkpointing: bool = False,
) -> ShardedModel:
    """Wrap ``model`` (already on ``device``) for the gang; ``blocks`` are its transformer blocks."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}")
    if activation_checkpointing:
        checkpoint_activations(blocks)
    if strategy == "DDP":
        ids = [device.index] if device.type == "cuda" else None
        return ShardedModel(DistributedDataParallel(model, device_ids=ids), strategy)
    policy = mixed_precision(precision)
    for block in blocks:
        fully_shard(block, mp_policy=policy)
    fully_shard(model, mp_policy=policy)
    return ShardedModel(model, strategy)


def state_bytes_per_rank(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, int]:
    """Bytes this rank holds of parameters, gradients and optimizer state (local shards only)."""

    def local(tensor: torch.Tensor) -> torch.Tensor:
        to_local = getattr(tensor, "to_local", None)
        return to_local() if callable(to_local) else tensor

    def size(tensor: torch.Tensor) -> int:
        part = local(tensor)
        return part.numel() * part.element_size()

    parameters = sum(size(p) for p in model.parameters())
    gradients = sum(size(p.grad) for p in model.parameters() if p.grad is not None)
    optimizer_state = sum(
        size(value)
        for state in optimizer.state.values()
        for value in state.values()
        if isinstance(value, torch.Tensor) and value.dim() > 0
    )
    return {"parameters": parameters, "gradients": gradients, "optimizerState": optimizer_state}
