"""What a built-in task is to the training loop, and the pieces the tasks share.

The loop owns time (steps, epochs, checkpoints, stops, reports); a task owns the mathematics
(models, losses, optimizers) behind five verbs: take an optimizer step over a few micro-batches,
evaluate, give and take its state, and export what should be served. Adding a task means
writing those, nothing about checkpoints or preemption.
"""

from __future__ import annotations

import contextlib
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol, cast

import torch
from torch import nn
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import TensorDataset

from aidc_trainer.config import TrainerConfig
from aidc_trainer.distributed import Gang
from aidc_trainer.precision import Precision

Batch = tuple[torch.Tensor, ...]

# Adam and AdamW run their fused kernel (CPU and CUDA): its step counters live on the parameters'
# device, so a step reads nothing back to the host. The default kernels read every parameter's
# counter with ``.item()`` each step and, under a GradScaler, read the found-inf flag too (a GPU
# sync per step); the fused one takes the scaler's tensors as they are.
FUSED_ADAM: dict[str, Any] = {"fused": True}


@dataclass(frozen=True)
class TaskContext:
    """What a task may know about the run it is part of."""

    config: TrainerConfig
    gang: Gang
    precision: Precision
    data_dir: Path | None = None


@dataclass(frozen=True)
class Exported:
    """What ``export`` hands to the manifest writer: weights plus everything to rebuild the module."""

    state_dict: dict[str, torch.Tensor]
    architecture: dict[str, Any]
    inputs: list[dict[str, Any]]
    outputs: list[dict[str, Any]]
    classes: list[str] = field(default_factory=list)
    # writes the weights into the export folder in a format of its own (a pretrained model's
    # save_pretrained folders) instead of ``state_dict`` as model.pt
    files: Callable[[Path], None] | None = None


class Task(ABC):
    """One built-in training task; subclasses set the class variables and the abstract methods."""

    name: ClassVar[str]
    default_learning_rate: ClassVar[float]
    # the validation metric that picks export/best, and which way is better (None: no such metric)
    primary_metric: ClassVar[str | None] = None
    higher_is_better: ClassVar[bool] = True

    def __init__(self, context: TaskContext) -> None:
        self.context = context
        self.config = context.config
        self.device = context.gang.device
        self.learning_rate = self.config.learning_rate or self.default_learning_rate

    @property
    @abstractmethod
    def train_set(self) -> TensorDataset:
        """The examples the sampler shards over the ranks."""

    def set_total_steps(self, total_steps: int) -> None:
        """Called once the run's length is known, before any state is loaded (schedules)."""
        del total_steps

    @abstractmethod
    def train_step(self, micro_batches: Sequence[Batch]) -> dict[str, torch.Tensor]:
        """One optimizer step over ``micro_batches`` (gradient accumulation); returns detached
        scalar tensors, ``loss`` among them (left on the device: no sync per step)."""

    @abstractmethod
    def evaluate(self) -> dict[str, float]:
        """Validation metrics (collective: every rank calls it; rank 0's answer is used)."""

    @abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """Models, optimizers, schedulers and scaler (tensors and plain values only)."""

    @abstractmethod
    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what ``state_dict`` returned (tensors may arrive on the CPU)."""

    @abstractmethod
    def export(self) -> Exported:
        """The module to serve (collective when the model is sharded: every rank calls it)."""

    @property
    def sharded(self) -> bool:
        """Whether the model is sharded over the gang (FSDP): checkpoints are then written by every
        rank, as ``shard_state`` and ``plain_state``, instead of ``state_dict`` by rank 0."""
        return False

    def shard_state(self) -> dict[str, Any]:
        """This rank's shards of the models and optimizers (DTensors, for torch.distributed.checkpoint)."""
        raise NotImplementedError(f"task {self.name} is not sharded")

    def load_shard_state(self, shards: dict[str, Any]) -> None:
        """Restore what ``shard_state`` returned, read back in this gang's layout."""
        raise NotImplementedError(f"task {self.name} is not sharded")

    def plain_state(self) -> dict[str, Any]:
        """What a sharded checkpoint keeps whole beside the shards (schedules, scaler)."""
        raise NotImplementedError(f"task {self.name} is not sharded")

    def load_plain_state(self, state: dict[str, Any]) -> None:
        raise NotImplementedError(f"task {self.name} is not sharded")


class GradientSync(Protocol):
    """What gradient accumulation asks of a wrapper: DDP, or ``ShardedModel`` for both strategies."""

    def no_sync(self) -> AbstractContextManager[Any]: ...


class SingleModelTask(Task):
    """A task that trains one model with one optimizer, LR schedule and grad scaler (classifier, LM).

    Subclasses set ``model`` (and ``ddp``, what the forward calls: its DDP wrapper, or the model
    itself when FSDP sharded it in place), ``optimizer``, ``scaler``, ``_parameters`` and (in
    ``set_total_steps``) ``scheduler``, and define the loss of one batch. A sharded subclass sets
    ``gradient_sync`` to its ``ShardedModel``.
    """

    model: nn.Module
    ddp: nn.Module
    gradient_sync: GradientSync | None = None
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR | None
    scaler: torch.amp.GradScaler
    _parameters: list[nn.Parameter]

    @abstractmethod
    def _loss(self, batch: Batch) -> torch.Tensor:
        """The loss of one micro-batch, through ``ddp``."""

    def train_step(self, micro_batches: Sequence[Batch]) -> dict[str, torch.Tensor]:
        self.ddp.train()
        sync = self.gradient_sync or cast(GradientSync, self.ddp)
        loss = accumulate(sync, micro_batches, self._loss, self.scaler, self.context.precision)
        optimizer_step(self.optimizer, self._parameters, self.scaler, self.config.gradient_clip_norm)
        self.scaler.update()
        if self.scheduler is not None:
            self.scheduler.step()
        return {"loss": loss}

    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "scaler": self.scaler.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.load_plain_state(state)

    @property
    def sharded(self) -> bool:
        return self.config.parallelism.sharded

    def shard_state(self) -> dict[str, Any]:
        model_state, optimizer_state = get_state_dict(self.model, self.optimizer)
        return {"model": model_state, "optimizer": optimizer_state}

    def load_shard_state(self, shards: dict[str, Any]) -> None:
        set_state_dict(
            self.model, self.optimizer, model_state_dict=shards["model"], optim_state_dict=shards["optimizer"]
        )

    def plain_state(self) -> dict[str, Any]:
        return {
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "scaler": self.scaler.state_dict(),
        }

    def load_plain_state(self, state: dict[str, Any]) -> None:
        if self.scheduler is not None and state.get("scheduler"):
            self.scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])


def warmup_cosine(total_steps: int) -> Callable[[int], float]:
    """Learning-rate factor: linear warm-up over 10% of the steps (at most 200), cosine to 10%.

    Decaying to a small rate at the end is what makes the last epoch's weights (the exported
    ``final`` model) about as good as the best epoch's, rather than a noisy sample around it.
    """
    warmup = max(1, min(200, total_steps // 10))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def wrap_ddp(module: nn.Module, device: torch.device) -> DistributedDataParallel:
    """DDP around a module already on ``device`` (one device per process)."""
    return DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None)


def accumulate(
    wrapper: GradientSync,
    micro_batches: Sequence[Batch],
    loss_of: Callable[[Batch], torch.Tensor],
    scaler: torch.amp.GradScaler,
    precision: Precision,
) -> torch.Tensor:
    """Backward over every micro-batch, reducing gradients over the gang only on the last one.

    Returns the mean loss (detached). Each loss is divided by the number of micro-batches so the
    accumulated gradient is the mean, as one big batch would give.
    """
    total: torch.Tensor | None = None
    count = len(micro_batches)
    for index, batch in enumerate(micro_batches):
        sync = index == count - 1
        with contextlib.nullcontext() if sync else wrapper.no_sync():
            with precision.autocast():
                loss = loss_of(batch)
                if count > 1:  # a division by one is exact: skip its kernel and autograd node
                    loss = loss / count
            scaler.scale(loss).backward()
        part = loss.detach().float()
        total = part if total is None else total + part
    assert total is not None, "no micro-batches"
    return total


def optimizer_step(
    optimizer: torch.optim.Optimizer,
    parameters: Sequence[nn.Parameter],
    scaler: torch.amp.GradScaler,
    clip_norm: float | None,
) -> None:
    """Unscale, clip (if asked), step and clear the gradients of one optimizer."""
    if clip_norm is not None:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(parameters, clip_norm)
    scaler.step(optimizer)
    optimizer.zero_grad(set_to_none=True)


def shard(dataset: TensorDataset | None, gang: Gang) -> Batch:
    """This rank's share of ``dataset`` (every world-size-th example, no padding or duplicates)."""
    if dataset is None:
        return ()
    return tuple(tensor[gang.rank :: gang.world_size] for tensor in dataset.tensors)


def batched(tensors: Batch, size: int) -> list[Batch]:
    """Split equally long tensors into consecutive batches of ``size``."""
    length = len(tensors[0]) if tensors else 0
    return [tuple(t[start : start + size] for t in tensors) for start in range(0, length, size)]
