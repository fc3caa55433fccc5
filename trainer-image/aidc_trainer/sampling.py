"""Which examples each rank sees, in which order, and how to pick up mid-epoch.

``DistributedSampler`` gives every rank a disjoint shard whose order depends only on the seed and
the epoch, so the order of a resumed epoch can be recomputed rather than stored; the checkpoint
records how many batches of it were consumed and the sampler skips them.

Batches are cut by indexing the in-memory tensors once per batch instead of going through a
``DataLoader``: one gather instead of a per-example fetch and stack, and no hidden draw from the
global RNG when an iterator is created (which would make a resumed run diverge from an
uninterrupted one).
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch.utils.data import DistributedSampler, TensorDataset

Batch = tuple[torch.Tensor, ...]


class ResumableSampler(DistributedSampler[int]):
    """A ``DistributedSampler`` whose next pass can start after ``skip`` examples."""

    def __init__(self, dataset: TensorDataset, *, num_replicas: int, rank: int, seed: int) -> None:
        super().__init__(
            dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=False
        )
        self._skip = 0

    def skip_next(self, examples: int) -> None:
        """Make the next pass begin after its first ``examples`` indices (once)."""
        self._skip = examples

    def __iter__(self) -> Iterator[int]:
        indices = list(super().__iter__())
        skip, self._skip = self._skip, 0
        return iter(indices[skip:])


def batches_per_epoch(sampler: ResumableSampler, batch_size: int) -> int:
    """Batches one rank takes per epoch (the last one may be short)."""
    return math.ceil(sampler.num_samples / batch_size)


def iterate_batches(dataset: TensorDataset, sampler: ResumableSampler, batch_size: int) -> Iterator[Batch]:
    """This rank's batches for the current pass of ``sampler``."""
    device = dataset.tensors[0].device  # the dataset may live on the GPU already
    indices = torch.tensor(list(sampler), dtype=torch.int64, device=device)
    for start in range(0, len(indices), batch_size):
        chosen = indices[start : start + batch_size]
        yield tuple(tensor[chosen] for tensor in dataset.tensors)
