"""Count the reads of tensor values back to the host, per training step (a diagnostic).

On a GPU every such read (``.item()``, ``float(t)``, ``bool(t)``, ``.tolist()``, a copy to the
CPU) waits until the CUDA stream has drained, so a training step that makes one cannot queue the
next step's kernels behind the current ones. The loop is meant to make none outside checkpoint and
report steps; this module is how a test proves it and how the benchmark shows it on a GPU.

On the CPU nothing waits, but the same reads go through the same operators: a scalar read ends
in ``aten._local_scalar_dense`` and a device copy in ``aten._to_copy``, which a dispatch mode sees;
``tolist`` and ``numpy`` read CPU memory without any operator, so a function mode sees those.
``HostReadCounter`` counts both, so the test runs without a GPU. ``CudaSyncCounter`` counts what
CUDA itself reports as synchronizing (``torch.cuda.set_sync_debug_mode``). ``CountedTrainer`` files
the counts under the step that made them and notes which steps checkpointed or reported.
"""

from __future__ import annotations

import contextlib
import warnings
from collections import Counter
from collections.abc import Iterator
from types import TracebackType
from typing import Any

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

from aidc_trainer.distributed import Gang, StepAgreement
from aidc_trainer.sampling import Batch
from aidc_trainer.tasks import Task
from aidc_trainer.training import Position, Trainer, _Loop, _Throughput

_aten = torch.ops.aten
_SCALAR_READS = frozenset(
    {_aten._local_scalar_dense.default, _aten.equal.default, _aten.is_nonzero.default, _aten.item.default}
)
_MEMORY_READS = frozenset({"tolist", "numpy"})  # a host read of CPU memory, without an operator


AGREEMENT = "agreement"  # the key of the agreed flags' reads: host memory on every backend


class _Tally:
    """Counts filed under the key in force (``None``: outside any step)."""

    def __init__(self) -> None:
        self.counts: Counter[int | str | None] = Counter()
        self.key: int | str | None = None

    @contextlib.contextmanager
    def at(self, key: int | str) -> Iterator[None]:
        previous, self.key = self.key, key
        try:
            yield
        finally:
            self.key = previous

    def add(self) -> None:
        self.counts[self.key] += 1


def _to_host(func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    """A copy from a device tensor into host memory."""
    if func is _aten._to_copy.default:
        device = kwargs.get("device")
        return device is not None and torch.device(device).type == "cpu" and args[0].device.type != "cpu"
    if func is _aten.copy_.default:
        return bool(args[0].device.type == "cpu" and args[1].device.type != "cpu")
    return False


class _OperatorReads(TorchDispatchMode):
    def __init__(self, tally: _Tally, outer: _MemoryReads) -> None:
        super().__init__()
        self._tally, self._outer = tally, outer

    def __torch_dispatch__(
        self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None
    ) -> Any:
        kwargs = kwargs or {}
        if not self._outer.inside and (func in _SCALAR_READS or _to_host(func, args, kwargs)):
            self._tally.add()
        return func(*args, **kwargs)


class _MemoryReads(TorchFunctionMode):
    def __init__(self, tally: _Tally) -> None:
        super().__init__()
        self._tally = tally
        self.inside = False  # within a counted tolist/numpy: its own copy is not a second read

    def __torch_function__(
        self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None
    ) -> Any:
        kwargs = kwargs or {}
        if getattr(func, "__name__", "") not in _MEMORY_READS or self.inside:
            return func(*args, **kwargs)
        self._tally.add()
        self.inside = True
        try:
            return func(*args, **kwargs)
        finally:
            self.inside = False


class HostReadCounter(_Tally):
    """Counts every host read of a tensor's values while entered, on any device."""

    def __enter__(self) -> HostReadCounter:
        self._memory = _MemoryReads(self)
        self._operators = _OperatorReads(self, self._memory)
        self._memory.__enter__()
        self._operators.__enter__()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self._operators.__exit__(kind, error, trace)
        self._memory.__exit__(kind, error, trace)


class CudaSyncCounter(_Tally):
    """Counts the operations CUDA reports as synchronizing the host while entered (GPU only)."""

    def __enter__(self) -> CudaSyncCounter:
        self._previous = torch.cuda.get_sync_debug_mode()
        self._warnings = warnings.catch_warnings(record=True)
        self._seen = self._warnings.__enter__()
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        self._original_showwarning = warnings.showwarning
        tally = self

        def count(message: Any, *args: Any, **kwargs: Any) -> None:
            if "synchroniz" in str(message):
                tally.add()

        warnings.showwarning = count
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        torch.cuda.set_sync_debug_mode(self._previous)
        warnings.showwarning = self._original_showwarning
        self._warnings.__exit__(kind, error, trace)


class _FiledAgreement(StepAgreement):
    """The agreement, its reads filed under ``AGREEMENT``: the flags are CPU tensors of the gloo
    control group on every backend, so reading them never waits for a device."""

    def __init__(self, gang: Gang, size: int, tally: _Tally) -> None:
        super().__init__(gang, size)
        self._tally = tally

    def _collect(self) -> list[int]:
        with self._tally.at(AGREEMENT):
            return super()._collect()


class CountedTrainer(Trainer):
    """The trainer, with each step's reads filed under that step and its special steps noted."""

    def __init__(self, *args: Any, tally: _Tally, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.tally = tally
        self.steps: list[int] = []
        self.checkpoint_steps: set[int] = set()
        self.report_steps: set[int] = set()

    def _agreement(self) -> StepAgreement:
        return _FiledAgreement(self.gang, 2, self.tally)

    def _step(self, task: Task, micro_batches: list[Batch], position: Position, loop: _Loop) -> bool:
        step = position.step + 1
        self.steps.append(step)
        with self.tally.at(step):
            return super()._step(task, micro_batches, position, loop)

    def _checkpoint(self, task: Task, position: Position) -> None:
        self.checkpoint_steps.add(position.step)
        super()._checkpoint(task, position)

    def _heartbeat(self, position: Position, meter: _Throughput, total: int) -> dict[str, Any]:
        self.report_steps.add(position.step)
        return super()._heartbeat(position, meter, total)

    def ordinary_steps(self) -> dict[int, int]:
        """Host reads of every step that neither checkpointed nor reported."""
        special = self.checkpoint_steps | self.report_steps
        return {step: self.tally.counts[step] for step in self.steps if step not in special}
