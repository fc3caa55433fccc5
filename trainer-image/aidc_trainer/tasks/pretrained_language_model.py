"""Fine-tuning a pretrained Hugging Face causal LM from a claim, whole or with LoRA adapters.

The model and tokenizer come from ``languageModel.pretrained.path`` on the data claim (offline).
The loss is next-token cross-entropy on the labelled tokens (``finetune_data``: every token of
plain text, the response of a prompt/response pair). DDP or FSDP (one unit per decoder layer, the
classes the model names in ``_no_split_modules``), accumulation and clipping as for the built-in
model. The export is a folder the model server loads: the merged model and its tokenizer in
``model/`` (safetensors), and with LoRA the adapters alone in ``adapter/``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
from torch.utils.data import TensorDataset

from aidc_trainer.datasets import resolve_path
from aidc_trainer.distributed import all_reduce_sum
from aidc_trainer.finetune_data import IGNORED, load_finetune_data
from aidc_trainer.pretrained import load_pretrained, save_for_serving, transformer_blocks, with_lora
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

_EVAL_BATCH = 16


def token_loss(logits: torch.Tensor, labels: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy of each position's prediction of the next labelled token."""
    return F.cross_entropy(
        logits[:, :-1].float().flatten(0, 1),
        labels[:, 1:].flatten(),
        ignore_index=IGNORED,
        reduction=reduction,
    )


class PretrainedLanguageModelTask(SingleModelTask):
    name = "language-model"
    default_learning_rate = 3e-4
    primary_metric = "validationLoss"
    higher_is_better = False

    def __init__(self, context: TaskContext) -> None:
        super().__init__(context)
        pretrained = self.config.language_model.pretrained
        assert pretrained is not None
        self.source = resolve_path(pretrained.path, context.data_dir)
        self.lora = pretrained.lora
        self.tokenizer, model = load_pretrained(self.source)
        self.data = load_finetune_data(self.config, context.data_dir, self.tokenizer)
        torch.manual_seed(self.config.seed)
        if self.lora is not None:
            model = with_lora(model, self.lora)
        model = model.to(self.device)
        parallelism = self.config.parallelism
        wrapped = shard_model(
            model,
            transformer_blocks(model),
            strategy=parallelism.strategy,
            device=self.device,
            precision=context.precision,
            activation_checkpointing=parallelism.activation_checkpointing,
        )
        self.model = model
        self.ddp = wrapped.module
        self.gradient_sync = wrapped
        self._parameters = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(
            self._parameters, lr=self.learning_rate, weight_decay=0.0, **FUSED_ADAM
        )
        self.scheduler: torch.optim.lr_scheduler.LambdaLR | None = None
        self.scaler = context.precision.grad_scaler()
        self.model_config: Any = getattr(model, "config")  # noqa: B009 (a transformers PretrainedConfig)
        self.vocab_size = int(self.model_config.vocab_size)

    @property
    def train_set(self) -> TensorDataset:
        return self.data.train

    def set_total_steps(self, total_steps: int) -> None:
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, warmup_cosine(total_steps))

    def _loss(self, batch: Batch) -> torch.Tensor:
        ids, labels, mask = (t.to(self.device, non_blocking=True) for t in batch)
        return token_loss(self.ddp(input_ids=ids, attention_mask=mask).logits, labels)

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        self.model.eval()
        loss_sum = tokens = 0.0
        batches = batched(shard(self.data.validation, self.context.gang), _EVAL_BATCH)
        for index in range(self._evaluation_forwards(len(batches))):
            # a sharded forward is collective: a rank out of batches repeats a forward, unused
            ids, labels, mask = (t.to(self.device) for t in self._evaluation_batch(batches, index))
            with self.context.precision.autocast():
                logits = self.model(input_ids=ids, attention_mask=mask).logits
            if index < len(batches):
                loss_sum += float(token_loss(logits, labels, reduction="sum"))
                tokens += float((labels[:, 1:] != IGNORED).sum())
        self.model.train()
        loss_sum, tokens = all_reduce_sum([loss_sum, tokens], self.context.gang)
        if tokens == 0:
            return {}
        loss = loss_sum / tokens
        return {"validationLoss": loss, "validationPerplexity": math.exp(min(loss, 50.0))}

    def _evaluation_forwards(self, batches: int) -> int:
        validation = self.data.validation
        if not self.sharded or validation is None:
            return batches
        per_rank = -(-len(validation) // self.context.gang.world_size)
        return -(-per_rank // _EVAL_BATCH)

    def _evaluation_batch(self, batches: list[Batch], index: int) -> Batch:
        if index < len(batches):
            return batches[index]
        if batches:
            return batches[0]
        assert self.data.validation is not None
        return tuple(t[:1] for t in self.data.validation.tensors)

    def _full_state(self) -> dict[str, torch.Tensor]:
        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        if not self.sharded:
            return {k: v.detach().cpu() for k, v in self.model.state_dict().items()}
        gathered = get_model_state_dict(self.model, options=options)
        return {name: value for name, value in gathered.items() if isinstance(value, torch.Tensor)}

    def export(self) -> Exported:
        state = self._full_state()
        lora, source = self.lora, self.source

        def write(destination: Path) -> None:
            save_for_serving(state, lora, source, destination)

        architecture: dict[str, Any] = {
            "format": "transformers",
            "modelType": str(getattr(self.model_config, "model_type", "")),
            "vocabSize": self.vocab_size,
            "contextLength": self.config.language_model.context_length,
            "lora": self.lora is not None,
        }
        return Exported(
            state_dict={},
            architecture=architecture,
            inputs=[{"name": "input_ids", "datatype": "INT64", "shape": [-1, -1]}],
            outputs=[{"name": "logits", "datatype": "FP32", "shape": [-1, -1, self.vocab_size]}],
            files=write,
        )
