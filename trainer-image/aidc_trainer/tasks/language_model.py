"""A small decoder-only transformer trained on byte tokens (next-token prediction).

AdamW with a linear warm-up and cosine decay, bf16 autocast on GPUs (``precision: auto``),
gradient accumulation and clipping from the config. ``export/best`` follows the lowest
validation loss; perplexity is reported beside it.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
from torch.utils.data import TensorDataset

from aidc_trainer.datasets import load_tokens
from aidc_trainer.distributed import all_reduce_sum
from aidc_trainer.models import build_model
from aidc_trainer.sharding import shard_model
from aidc_trainer.tasks.base import (
    FUSED_ADAM,
    Batch,
    Exported,
    SingleModelTask,
    TaskContext,
    batched,
    shard,
    warmup_cosine,
)

_EVAL_BATCH = 64


class LanguageModelTask(SingleModelTask):
    name = "language-model"
    default_learning_rate = 3e-4
    primary_metric = "validationLoss"
    higher_is_better = False

    def __init__(self, context: TaskContext) -> None:
        super().__init__(context)
        self.data = load_tokens(self.config, context.data_dir)
        shape = self.config.language_model
        self.architecture: dict[str, Any] = {
            "vocabSize": self.data.vocab_size,
            "contextLength": shape.context_length,
            "layers": shape.layers,
            "heads": shape.heads,
            "embedding": shape.embedding,
        }
        torch.manual_seed(self.config.seed)
        model = build_model(self.name, self.architecture).to(self.device)
        parallelism = self.config.parallelism
        wrapped = shard_model(
            model,
            list(getattr(model, "blocks")),  # noqa: B009 (the transformer blocks, FSDP's units)
            strategy=parallelism.strategy,
            device=self.device,
            precision=context.precision,
            activation_checkpointing=parallelism.activation_checkpointing,
        )
        self.model = model  # sharded in place under FSDP: the optimizer below sees its DTensors
        self.ddp = wrapped.module
        self.gradient_sync = wrapped
        # decay matrices only: biases and norm gains stay free
        decay = [p for p in self.model.parameters() if p.dim() >= 2]
        no_decay = [p for p in self.model.parameters() if p.dim() < 2]
        self.optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
            lr=self.learning_rate,
            betas=(0.9, 0.95),
            **FUSED_ADAM,
        )
        self.scheduler: torch.optim.lr_scheduler.LambdaLR | None = None
        self.scaler = context.precision.grad_scaler()
        self._parameters = list(self.model.parameters())

    @property
    def train_set(self) -> TensorDataset:
        return self.data.train

    def set_total_steps(self, total_steps: int) -> None:
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, warmup_cosine(total_steps))

    def _loss(self, batch: Batch) -> torch.Tensor:
        windows = batch[0].to(self.device, non_blocking=True)
        logits = self.ddp(windows[:, :-1])
        return F.cross_entropy(logits.float().flatten(0, 1), windows[:, 1:].flatten())

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        self.model.eval()
        loss_sum = tokens = 0.0
        batches = batched(shard(self.data.validation, self.context.gang), _EVAL_BATCH)
        forwards = self._evaluation_forwards(len(batches))
        for index in range(forwards):
            # a sharded forward is collective: a rank out of batches runs a filler forward, unused
            windows = self._evaluation_windows(batches, index).to(self.device)
            with self.context.precision.autocast():
                logits = self.model(windows[:, :-1]).float()
            if index >= len(batches):
                continue
            loss_sum += float(
                F.cross_entropy(logits.flatten(0, 1), windows[:, 1:].flatten(), reduction="sum")
            )
            tokens += windows[:, 1:].numel()
        loss_sum, tokens = all_reduce_sum([loss_sum, tokens], self.context.gang)
        if tokens == 0:
            return {}
        loss = loss_sum / tokens
        return {"validationLoss": loss, "validationPerplexity": math.exp(min(loss, 50.0))}

    def _evaluation_forwards(self, batches: int) -> int:
        """Forwards this rank runs: its own batches; under FSDP as many as the rank with the most
        (shards differ by at most one example, so every rank can work it out alone)."""
        validation = self.data.validation
        if not self.sharded or validation is None or len(validation) == 0:
            return batches
        per_rank = -(-len(validation) // self.context.gang.world_size)
        return -(-per_rank // _EVAL_BATCH)

    def _evaluation_windows(self, batches: list[Batch], index: int) -> torch.Tensor:
        if index < len(batches):
            return batches[index][0]
        filler = batches[0][0] if batches else self.data.validation.tensors[0][:1]  # type: ignore[union-attr]
        return filler[:1]

    def _full_state(self) -> dict[str, torch.Tensor]:
        """The whole model on the CPU: gathered from the shards under FSDP (collective; rank 0 gets it)."""
        if not self.sharded:
            return {k: v.detach().cpu() for k, v in self.model.state_dict().items()}
        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        gathered = get_model_state_dict(self.model, options=options)
        return {name: value for name, value in gathered.items() if isinstance(value, torch.Tensor)}

    def export(self) -> Exported:
        return Exported(
            state_dict=self._full_state(),
            architecture=dict(self.architecture),
            inputs=[{"name": "input_ids", "datatype": "INT64", "shape": [-1, -1]}],
            outputs=[{"name": "logits", "datatype": "FP32", "shape": [-1, -1, self.data.vocab_size]}],
        )
