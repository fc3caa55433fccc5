"""A GAN on the same images: a generator and a discriminator trained against each other.

Each optimizer step first trains the discriminator on real images against generated ones, then
the generator to fool it. Noise is drawn from each rank's own generator (so ranks see different
fakes), which is why exact resume needs every rank's RNG state. What is exported and served is
the generator: latent vectors in, images in [0, 1] out.

``export/best`` follows the lowest Fréchet distance between real validation images and generated
ones, measured on 7x7 average-pooled pixels: a crude quality score, but one that needs no
pretrained network and still falls as samples start to look like the data.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

from aidc_trainer.datasets import load_images
from aidc_trainer.models import build_discriminator, build_model
from aidc_trainer.tasks.base import FUSED_ADAM, Batch, Exported, Task, TaskContext, optimizer_step, wrap_ddp

LATENT_DIM = 64
_EVAL_SAMPLES = 512
_EVAL_SEED = 1234


def frechet_distance(real: np.ndarray, fake: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two sets of feature rows."""
    mu_real, mu_fake = real.mean(axis=0), fake.mean(axis=0)
    cov_real = np.cov(real, rowvar=False)
    cov_fake = np.cov(fake, rowvar=False)
    # trace(sqrt(A B)) = trace(sqrt(sqrt(A) B sqrt(A))), and the inner matrix is symmetric PSD
    values, vectors = np.linalg.eigh(cov_real)
    root = (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T
    inner = np.linalg.eigvalsh(root @ cov_fake @ root)
    trace_root = float(np.sqrt(np.clip(inner, 0, None)).sum())
    return float(((mu_real - mu_fake) ** 2).sum() + np.trace(cov_real) + np.trace(cov_fake) - 2 * trace_root)


class GanTask(Task):
    name = "gan"
    default_learning_rate = 2e-4
    primary_metric = "frechetDistance"
    higher_is_better = False

    def __init__(self, context: TaskContext) -> None:
        super().__init__(context)
        self.data = load_images(self.config, context.data_dir, need_labels=False)
        c, h, w = self.data.image_shape
        self.architecture: dict[str, Any] = {"latentDim": LATENT_DIM, "imageShape": [c, h, w], "width": 64}
        torch.manual_seed(self.config.seed)
        self.generator = build_model(self.name, self.architecture).to(self.device)
        self.discriminator = build_discriminator(self.architecture).to(self.device)
        self.ddp_generator = wrap_ddp(self.generator, self.device)
        self.ddp_discriminator = wrap_ddp(self.discriminator, self.device)
        betas = (0.5, 0.999)
        self.optimizer_g = torch.optim.Adam(
            self.generator.parameters(), lr=self.learning_rate, betas=betas, **FUSED_ADAM
        )
        self.optimizer_d = torch.optim.Adam(
            self.discriminator.parameters(), lr=self.learning_rate, betas=betas, **FUSED_ADAM
        )
        self.scaler = context.precision.grad_scaler()

    @property
    def train_set(self) -> TensorDataset:
        return self.data.train

    def _noise(self, count: int) -> torch.Tensor:
        return torch.randn(count, LATENT_DIM, device=self.device)

    def train_step(self, micro_batches: Sequence[Batch]) -> dict[str, torch.Tensor]:
        precision, count = self.context.precision, len(micro_batches)
        d_total = torch.zeros((), device=self.device)
        g_total = torch.zeros((), device=self.device)
        self.ddp_generator.train()
        self.ddp_discriminator.train()
        # discriminator: real -> 1, generated -> 0, in one forward pass (DDP wants one per backward)
        for index, batch in enumerate(micro_batches):
            real = batch[0].to(self.device, non_blocking=True)
            with torch.no_grad(), precision.autocast():
                fake = self.generator(self._noise(len(real)))
            sync = index == count - 1
            with contextlib.nullcontext() if sync else self.ddp_discriminator.no_sync():
                with precision.autocast():
                    logits = self.ddp_discriminator(torch.cat([real, fake.to(real.dtype)])).float()
                targets = torch.cat([torch.ones(len(real)), torch.zeros(len(real))]).to(self.device)
                d_loss = F.binary_cross_entropy_with_logits(logits, targets) / count
                self.scaler.scale(d_loss).backward()
            d_total += d_loss.detach()
        optimizer_step(
            self.optimizer_d,
            list(self.discriminator.parameters()),
            self.scaler,
            self.config.gradient_clip_norm,
        )
        # generator: make the discriminator say 1; the discriminator is called unwrapped so its
        # gradients from this pass are not all-reduced (they are discarded below)
        for index, batch in enumerate(micro_batches):
            sync = index == count - 1
            with contextlib.nullcontext() if sync else self.ddp_generator.no_sync():
                with precision.autocast():
                    logits = self.discriminator(self.ddp_generator(self._noise(len(batch[0])))).float()
                g_loss = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits)) / count
                self.scaler.scale(g_loss).backward()
            g_total += g_loss.detach()
        optimizer_step(
            self.optimizer_g, list(self.generator.parameters()), self.scaler, self.config.gradient_clip_norm
        )
        self.optimizer_d.zero_grad(set_to_none=True)
        self.scaler.update()
        return {"loss": g_total, "generatorLoss": g_total, "discriminatorLoss": d_total}

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        if not self.context.gang.is_leader:
            return {}  # only rank 0 reports; the score needs no other rank
        self.generator.eval()
        reference = (self.data.validation or self.data.train).tensors[0][:_EVAL_SAMPLES]
        latent = torch.randn(len(reference), LATENT_DIM, generator=torch.Generator().manual_seed(_EVAL_SEED))
        fake = self.generator(latent.to(self.device)).float().cpu()

        def features(images: torch.Tensor) -> np.ndarray:
            return F.adaptive_avg_pool2d(images, 7).flatten(1).double().numpy()

        return {"frechetDistance": frechet_distance(features(reference), features(fake))}

    def state_dict(self) -> dict[str, Any]:
        return {
            "generator": self.generator.state_dict(),
            "discriminator": self.discriminator.state_dict(),
            "optimizerGenerator": self.optimizer_g.state_dict(),
            "optimizerDiscriminator": self.optimizer_d.state_dict(),
            "scaler": self.scaler.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.load_state_dict(state["generator"])
        self.discriminator.load_state_dict(state["discriminator"])
        self.optimizer_g.load_state_dict(state["optimizerGenerator"])
        self.optimizer_d.load_state_dict(state["optimizerDiscriminator"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])

    def export(self) -> Exported:
        c, h, w = self.data.image_shape
        return Exported(
            state_dict={k: v.detach().cpu() for k, v in self.generator.state_dict().items()},
            architecture=dict(self.architecture),
            inputs=[{"name": "latent", "datatype": "FP32", "shape": [-1, LATENT_DIM]}],
            outputs=[{"name": "image", "datatype": "FP32", "shape": [-1, c, h, w]}],
        )
