"""The networks of the built-in tasks, rebuilt from a plain ``architecture`` dictionary.

The architecture dictionary travels in the exported manifest, so the model server (same image)
rebuilds exactly the module that was trained with ``build_model(task, architecture)`` and loads a
weights-only state dict into it: no pickled code crosses from training to serving.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from aidc_trainer.errors import ConfigError, DataError


class ImageClassifier(nn.Module):
    """conv 32 3x3 / max-pool / conv 64 3x3 / max-pool / conv 64 3x3 / dense 64 / dense classes."""

    def __init__(
        self,
        input_shape: tuple[int, int, int],
        num_classes: int,
        channels: tuple[int, int, int] = (32, 64, 64),
        dense: int = 64,
    ) -> None:
        super().__init__()
        c, h, w = input_shape
        side = [(h - 2) // 2, (w - 2) // 2]
        side = [(s - 2) // 2 - 2 for s in side]
        if min(side) < 1:
            raise DataError(f"images of {h}x{w} are too small for the classifier (at least 18x18)")
        self.features = nn.Sequential(
            nn.Conv2d(c, channels[0], 3),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(channels[0], channels[1], 3),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(channels[1], channels[2], 3),
            nn.ReLU(),
            nn.Flatten(),
        )
        self.head = nn.Sequential(
            nn.Linear(channels[2] * side[0] * side[1], dense), nn.ReLU(), nn.Linear(dense, num_classes)
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits (N, classes) for images (N, C, H, W) in [0, 1]."""
        return self.head(self.features(images))  # type: ignore[no-any-return]


class Generator(nn.Module):
    """Latent vector -> image in [0, 1]: dense, then two stride-2 transposed convolutions."""

    def __init__(self, latent_dim: int, image_shape: tuple[int, int, int], width: int = 64) -> None:
        super().__init__()
        c, h, w = image_shape
        self.image_shape = image_shape
        self.seed_shape = (width * 2, math.ceil(h / 4), math.ceil(w / 4))
        self.project = nn.Sequential(nn.Linear(latent_dim, math.prod(self.seed_shape)), nn.LeakyReLU(0.2))
        self.upsample = nn.Sequential(
            nn.ConvTranspose2d(width * 2, width, 4, stride=2, padding=1),
            nn.LeakyReLU(0.2),
            nn.ConvTranspose2d(width, c, 4, stride=2, padding=1),
        )

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        images = self.upsample(self.project(latent).view(-1, *self.seed_shape))
        if tuple(images.shape[-2:]) != self.image_shape[1:]:
            images = F.interpolate(images, size=self.image_shape[1:], mode="bilinear", align_corners=False)
        return torch.sigmoid(images)


class Discriminator(nn.Module):
    """Image -> one logit (real vs generated): two stride-2 convolutions and a dense layer."""

    def __init__(self, image_shape: tuple[int, int, int], width: int = 64) -> None:
        super().__init__()
        c, h, w = image_shape
        self.net = nn.Sequential(
            nn.Conv2d(c, width, 4, stride=2, padding=1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(width, width * 2, 4, stride=2, padding=1),
            nn.LeakyReLU(0.2),
            nn.Flatten(),
            nn.Linear(width * 2 * (h // 4) * (w // 4), 1),
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images).squeeze(-1)  # type: ignore[no-any-return]


class DecoderBlock(nn.Module):
    """Pre-norm transformer block: causal self-attention and a 4x MLP, each with a residual."""

    def __init__(self, embedding: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(embedding)
        self.qkv = nn.Linear(embedding, 3 * embedding)
        self.proj = nn.Linear(embedding, embedding)
        self.norm2 = nn.LayerNorm(embedding)
        self.mlp = nn.Sequential(
            nn.Linear(embedding, 4 * embedding), nn.GELU(), nn.Linear(4 * embedding, embedding)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.heads_of(x)
        return self.after_attention(x, F.scaled_dot_product_attention(q, k, v, is_causal=True))

    def heads_of(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Queries, keys and values of ``x`` (N, T, E), each (N, heads, T, E / heads)."""
        batch, length, embedding = x.shape
        q, k, v = self.qkv(self.norm1(x)).split(embedding, dim=-1)
        shape = (batch, length, self.heads, embedding // self.heads)
        return q.view(shape).transpose(1, 2), k.view(shape).transpose(1, 2), v.view(shape).transpose(1, 2)

    def after_attention(self, x: torch.Tensor, attended: torch.Tensor) -> torch.Tensor:
        """The block's output from its input and what its heads attended to (N, heads, T, E / heads)."""
        batch, length, embedding = x.shape
        x = x + self.proj(attended.transpose(1, 2).reshape(batch, length, embedding))
        return x + self.mlp(self.norm2(x))  # type: ignore[no-any-return]


class LanguageModel(nn.Module):
    """A small decoder-only transformer over byte tokens, output head tied to the embedding."""

    def __init__(self, vocab_size: int, context_length: int, layers: int, heads: int, embedding: int) -> None:
        super().__init__()
        self.context_length = context_length
        self.tokens = nn.Embedding(vocab_size, embedding)
        self.positions = nn.Embedding(context_length, embedding)
        self.blocks = nn.ModuleList(DecoderBlock(embedding, heads) for _ in range(layers))
        self.norm = nn.LayerNorm(embedding)
        self.head = nn.Linear(embedding, vocab_size, bias=False)
        self.head.weight = self.tokens.weight
        self.apply(self._init)

    @staticmethod
    def _init(module: nn.Module) -> None:
        if isinstance(module, nn.Linear | nn.Embedding):
            nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Next-token logits (N, T, vocab) for int64 tokens (N, T), T <= context length."""
        length = tokens.shape[1]
        if length > self.context_length:
            raise ValueError(f"sequence of {length} tokens exceeds the context length {self.context_length}")
        positions = torch.arange(length, device=tokens.device)
        x = self.tokens(tokens) + self.positions(positions)
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x))  # type: ignore[no-any-return]

    def parameter_count(self, *, exclude_embeddings: bool = False) -> int:
        total = sum(p.numel() for p in self.parameters())
        return total - self.positions.weight.numel() if exclude_embeddings else total


def _shape(value: Any, name: str) -> tuple[int, int, int]:
    if not isinstance(value, list | tuple) or len(value) != 3:
        raise ConfigError(f"architecture.{name} must be [C, H, W], got {value!r}")
    c, h, w = (int(v) for v in value)
    return c, h, w


def build_model(task: str, architecture: Mapping[str, Any]) -> nn.Module:
    """The module a task trains and serves, from its manifest's ``architecture``.

    classifier: ``{inputShape, numClasses, channels, dense}``; gan (the generator, which is what
    is served): ``{latentDim, imageShape, width}``; language-model: ``{vocabSize, contextLength,
    layers, heads, embedding}``; reinforcement-learning (the actor-critic): ``{observationDim,
    actionDim, discrete, hidden}``.
    """
    if task == "classifier":
        return ImageClassifier(
            _shape(architecture["inputShape"], "inputShape"),
            int(architecture["numClasses"]),
            tuple(int(c) for c in architecture.get("channels", (32, 64, 64))),  # type: ignore[arg-type]
            int(architecture.get("dense", 64)),
        )
    if task == "gan":
        return Generator(
            int(architecture["latentDim"]),
            _shape(architecture["imageShape"], "imageShape"),
            int(architecture.get("width", 64)),
        )
    if task == "language-model":
        return LanguageModel(
            int(architecture["vocabSize"]),
            int(architecture["contextLength"]),
            int(architecture["layers"]),
            int(architecture["heads"]),
            int(architecture["embedding"]),
        )
    if task == "reinforcement-learning":
        from aidc_trainer.rl.policy import build_policy

        return build_policy(architecture)
    raise ConfigError(f"unknown task {task!r}")


def build_discriminator(architecture: Mapping[str, Any]) -> nn.Module:
    """The GAN's critic (trained, checkpointed, not exported)."""
    return Discriminator(_shape(architecture["imageShape"], "imageShape"), int(architecture.get("width", 64)))
