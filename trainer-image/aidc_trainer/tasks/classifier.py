"""The image classifier of the original design: a small CNN, Adam and cross-entropy.

The learning rate warms up and decays on a cosine: with a constant rate the final accuracy on
digits swung between 93% and 97% with the seed; with the decay it stays above 95%.

Validation accuracy picks ``export/best``. Inputs are images in [0, 1] of the dataset's shape
(28x28x1 for digits and synthetic data); outputs are logits, one per class.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

from aidc_trainer.datasets import load_images
from aidc_trainer.distributed import all_reduce_sum
from aidc_trainer.models import build_model
from aidc_trainer.tasks.base import (
    FUSED_ADAM,
    Batch,
    Exported,
    SingleModelTask,
    TaskContext,
    batched,
    shard,
    warmup_cosine,
    wrap_ddp,
)

_EVAL_BATCH = 512


class ClassifierTask(SingleModelTask):
    name = "classifier"
    default_learning_rate = 1e-3
    primary_metric = "validationAccuracy"
    higher_is_better = True

    def __init__(self, context: TaskContext) -> None:
        super().__init__(context)
        self.data = load_images(self.config, context.data_dir)
        c, h, w = self.data.image_shape
        self.architecture: dict[str, Any] = {
            "inputShape": [c, h, w],
            "numClasses": len(self.data.classes),
            "channels": [32, 64, 64],
            "dense": 64,
        }
        torch.manual_seed(self.config.seed)  # same initial weights on every rank
        self.model = build_model(self.name, self.architecture).to(self.device)
        self.ddp = wrap_ddp(self.model, self.device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=self.learning_rate, **FUSED_ADAM)
        self.scaler = context.precision.grad_scaler()
        self.scheduler: torch.optim.lr_scheduler.LambdaLR | None = None
        self._parameters = list(self.model.parameters())

    @property
    def train_set(self) -> TensorDataset:
        return self.data.train

    def set_total_steps(self, total_steps: int) -> None:
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, warmup_cosine(total_steps))

    def _loss(self, batch: Batch) -> torch.Tensor:
        images, labels = (t.to(self.device, non_blocking=True) for t in batch)
        return F.cross_entropy(self.ddp(images).float(), labels)

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        self.model.eval()
        correct = loss_sum = 0.0
        examples = shard(self.data.validation, self.context.gang)
        for batch in batched(examples, _EVAL_BATCH):
            images, labels = (t.to(self.device) for t in batch)
            with self.context.precision.autocast():
                logits = self.model(images).float()
            loss_sum += float(F.cross_entropy(logits, labels, reduction="sum"))
            correct += float((logits.argmax(dim=1) == labels).sum())
        count = len(examples[0]) if examples else 0
        correct, loss_sum, total = all_reduce_sum([correct, loss_sum, float(count)], self.context.gang)
        if total == 0:
            return {}
        return {"validationAccuracy": correct / total, "validationLoss": loss_sum / total}

    def export(self) -> Exported:
        c, h, w = self.data.image_shape
        return Exported(
            state_dict={k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            architecture=dict(self.architecture),
            inputs=[{"name": "input", "datatype": "FP32", "shape": [-1, c, h, w]}],
            outputs=[{"name": "logits", "datatype": "FP32", "shape": [-1, len(self.data.classes)]}],
            classes=list(self.data.classes),
        )
