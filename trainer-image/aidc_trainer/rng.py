"""Random number generator state of one rank, in a form a weights-only checkpoint can hold.

Exact resume needs every generator a step draws from (torch, CUDA, NumPy, Python) back where it
was. ``torch.load(weights_only=True)`` refuses arbitrary pickled objects, so NumPy's and Python's
states are stored as tensors and plain numbers rather than as the tuples their libraries return.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch


def seed_rank(seed: int, rank: int) -> None:
    """Seed every generator of this rank; ranks differ so that per-rank noise (GAN) differs."""
    value = seed * 1_000_003 + rank
    random.seed(value)
    np.random.seed(value % 2**32)
    torch.manual_seed(value)


def capture_rng() -> dict[str, Any]:
    """The current state of every generator, as tensors and primitives only."""
    kind, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": str(kind),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "position": int(position),
            "hasGauss": int(has_gauss),
            "cachedGaussian": float(cached_gaussian),
        },
        "python": {
            "version": int(version),
            "internal": torch.tensor(internal, dtype=torch.int64),
            "gaussNext": gauss_next,
        },
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Put every generator back to ``state`` (from ``capture_rng``, possibly via a checkpoint)."""
    torch.set_rng_state(state["torch"].to(torch.uint8).cpu())
    numpy_state = state["numpy"]
    np.random.set_state(
        (
            numpy_state["kind"],
            numpy_state["keys"].numpy().astype(np.uint32),
            numpy_state["position"],
            numpy_state["hasGauss"],
            numpy_state["cachedGaussian"],
        )
    )
    python_state = state["python"]
    internal = tuple(int(value) for value in python_state["internal"].tolist())
    random.setstate((python_state["version"], internal, python_state["gaussNext"]))
    cuda_states = state.get("cuda")
    if cuda_states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.to(torch.uint8).cpu() for s in cuda_states])
