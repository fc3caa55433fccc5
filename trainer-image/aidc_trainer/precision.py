"""Numeric precision of a run: which autocast dtype, and whether gradients need loss scaling.

``auto`` picks bf16 on GPUs that support it (same range as fp32, so no loss scaling and no
overflow surprises) and fp32 elsewhere. fp16 needs a GradScaler and only makes sense on CUDA;
asked for on a CPU it falls back to fp32 with a warning rather than failing a job that was
merely scheduled on the wrong node type.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import Any

import torch

from aidc_trainer.logs import fields

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Precision:
    """The resolved precision: ``fp32``, ``bf16`` or ``fp16`` on one device type."""

    name: str
    device_type: str

    @property
    def dtype(self) -> torch.dtype | None:
        return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.name)

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """The forward-pass context: autocast to the reduced dtype, or nothing for fp32."""
        dtype = self.dtype
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=dtype)

    def grad_scaler(self) -> torch.amp.GradScaler:
        """A loss scaler that is a no-op unless the run is fp16 on CUDA."""
        enabled = self.name == "fp16" and self.device_type == "cuda"
        return torch.amp.GradScaler(self.device_type, enabled=enabled)


def resolve_precision(requested: str, device: torch.device) -> Precision:
    """Turn the config's ``precision`` into what this device will actually run."""
    if device.type == "cuda":
        bf16 = torch.cuda.is_bf16_supported()
        if requested == "auto":
            return Precision("bf16" if bf16 else "fp32", "cuda")
        if requested == "bf16" and not bf16:
            _log.warning(
                "this GPU has no bf16; training in fp16 with loss scaling", extra=fields(requested=requested)
            )
            return Precision("fp16", "cuda")
        return Precision(requested, "cuda")
    if requested == "fp16":
        _log.warning("fp16 needs a GPU; training in fp32", extra=fields(requested=requested))
        return Precision("fp32", device.type)
    return Precision("fp32" if requested == "auto" else requested, device.type)
