"""The gang from one rank's point of view: who am I, how do I talk to the others.

A rank learns its place from the variables torchrun and the operator set (``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT``). Without them it is a gang of
one, which still gets a real process group so that every code path (DDP, collectives, the
checkpoint broadcast) is the same one a 64-rank job runs.

Control traffic (stop flags, the checkpoint broadcast, RNG gathering) goes over a gloo group on
the CPU even when the data path is nccl: it is tiny, it must not force a GPU sync, and gloo can
carry Python objects.
"""

from __future__ import annotations

import datetime
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

import torch
import torch.distributed as dist

from aidc_trainer import contract


@dataclass(frozen=True)
class Topology:
    """Where this process sits in the gang."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1

    @property
    def is_leader(self) -> bool:
        return self.rank == 0


def read_topology(env: Mapping[str, str] | None = None) -> Topology:
    """This process's ranks from the environment; a gang of one when nothing is set."""
    env = os.environ if env is None else env
    world_size = int(env.get(contract.ENV_WORLD_SIZE) or 1)
    rank = int(env.get(contract.ENV_RANK) or 0)
    local_rank = int(env.get("LOCAL_RANK") or 0)
    local_world_size = int(env.get(contract.ENV_LOCAL_WORLD_SIZE) or 1)
    if not 0 <= rank < world_size:
        raise ValueError(f"RANK {rank} is outside WORLD_SIZE {world_size}")
    return Topology(rank, world_size, local_rank, local_world_size)


@dataclass
class Gang:
    """The initialised process groups of this rank and the device its tensors live on."""

    topology: Topology
    backend: str
    device: torch.device
    control_group: dist.ProcessGroup | None  # None: the default group (already gloo)

    @property
    def rank(self) -> int:
        return self.topology.rank

    @property
    def world_size(self) -> int:
        return self.topology.world_size

    @property
    def is_leader(self) -> bool:
        return self.topology.is_leader


def init_gang(topology: Topology, *, use_cuda: bool | None = None, timeout_seconds: float = 1800) -> Gang:
    """Join the gang: nccl with one GPU per local rank when CUDA is there, gloo otherwise."""
    cuda = torch.cuda.is_available() if use_cuda is None else use_cuda
    if cuda:
        device = torch.device("cuda", topology.local_rank % max(torch.cuda.device_count(), 1))
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        device = torch.device("cpu")
        backend = "gloo"
    timeout = datetime.timedelta(seconds=timeout_seconds)
    if topology.world_size == 1:
        # No rendezvous to reach: an in-memory store makes a real group of one.
        store = dist.HashStore()  # type: ignore[attr-defined]
        dist.init_process_group(backend, store=store, rank=0, world_size=1, timeout=timeout)
    else:
        dist.init_process_group(
            backend,
            init_method="env://",
            rank=topology.rank,
            world_size=topology.world_size,
            timeout=timeout,
            device_id=device if cuda else None,
        )
    control = (
        cast(dist.ProcessGroup, dist.new_group(backend="gloo", timeout=timeout))
        if backend != "gloo"
        else None
    )
    return Gang(topology=topology, backend=backend, device=device, control_group=control)


def part_ways(gang: Gang, timeout_seconds: float = 60) -> None:
    """Wait at the end of a finished run until every rank is done with the gang's collectives.

    A rank that exits while a peer still reads from it kills the peer: gloo aborts the process
    (SIGABRT, exit 134) when a connection closes under an operation. The wait is bounded: a peer
    that went away makes it raise after ``timeout_seconds``.
    """
    if gang.world_size > 1:
        dist.monitored_barrier(group=gang.control_group, timeout=datetime.timedelta(seconds=timeout_seconds))


def leave_gang() -> None:
    """Tear down the process groups (safe to call when none was set up)."""
    if dist.is_initialized():
        dist.destroy_process_group()


def barrier(gang: Gang) -> None:
    """Wait until every rank is here (over the control group, so no GPU work is involved)."""
    if gang.world_size > 1:
        dist.barrier(group=gang.control_group)


class StepAgreement:
    """Agree on control flags (stop now, checkpoint now) at step boundaries without waiting.

    Each rank contributes its flags and all ranks see the element-wise maximum. An exchange is an
    all-reduce started at one step and read at the next exchange step, so the answer has long
    arrived when it is read: no step waits for a collective, and every rank reads the same answer
    at the same step, which is all a stop needs. A flag raised between exchanges is kept until the
    next one.

    Exchanging every step costs a collective per step (milliseconds on a busy CPU host, next to
    steps of tens of milliseconds), so exchanges are spaced to about ``target_seconds`` of
    training, at most ``max_interval`` steps apart. The leader measures its step time and proposes
    the spacing through the exchange itself (others propose 0, the maximum is the leader's), so
    every rank learns the next exchange step from the same answer. A flag is seen within two
    spacings: a few tenths of a second, or two steps when steps are long. ``target_seconds=0``
    exchanges every step.
    """

    def __init__(self, gang: Gang, size: int, *, target_seconds: float = 0.2, max_interval: int = 16) -> None:
        self._gang = gang
        self._size = size  # the callers' flags; one slot more carries the proposed spacing
        self._target = target_seconds
        self._max_interval = max_interval
        self._raised = [0] * size  # flags offered since the last exchange
        self._interval = self._countdown = 1
        self._last_exchange = time.monotonic()
        self._pending: tuple[dist.Work | None, torch.Tensor] | None = None

    def exchange(self, flags: list[int]) -> list[int]:
        """Offer this step's flags; return the flags agreed at the previous exchange on an exchange
        step (zeros at the first), zeros on the steps between."""
        self._raised = [max(old, new) for old, new in zip(self._raised, flags, strict=True)]
        self._countdown -= 1
        if self._countdown > 0:
            return [0] * self._size
        proposal = self._proposal() if self._gang.is_leader else 0
        agreed = self._collect()
        tensor = torch.tensor([*self._raised, proposal], dtype=torch.int32)
        work = None
        if self._gang.world_size > 1:
            work = dist.all_reduce(
                tensor, op=dist.ReduceOp.MAX, group=self._gang.control_group, async_op=True
            )
        self._pending = (work, tensor)
        self._raised = [0] * self._size
        self._countdown = self._interval
        return agreed

    def drain(self) -> list[int]:
        """Finish the outstanding exchange (every rank must call this the same number of times)."""
        return self._collect()

    def _proposal(self) -> int:
        """Steps between exchanges that make about ``target_seconds`` at the leader's step time."""
        now = time.monotonic()
        seconds_per_step = (now - self._last_exchange) / self._interval
        self._last_exchange = now
        if self._target <= 0 or seconds_per_step <= 0:
            return 1
        return max(1, min(self._max_interval, int(self._target / seconds_per_step)))

    def _collect(self) -> list[int]:
        if self._pending is None:
            return [0] * self._size
        work, tensor = self._pending
        self._pending = None
        if work is not None:
            work.wait()
        # host memory on every backend (the gloo control group): this read waits for no device
        *agreed, interval = (int(value) for value in tensor.tolist())
        self._interval = max(1, interval)
        return agreed


def all_reduce_sum(values: list[float], gang: Gang) -> list[float]:
    """Sum a few numbers over every rank (float64 on the CPU control group: exact and cheap)."""
    tensor = torch.tensor(values, dtype=torch.float64)
    if gang.world_size > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM, group=gang.control_group)
    return [float(value) for value in tensor.tolist()]


def gather_to_leader(value: Any, gang: Gang) -> list[Any] | None:
    """Collect one picklable value per rank on rank 0 (None elsewhere)."""
    if gang.world_size == 1:
        return [value]
    gathered: list[Any] | None = [None] * gang.world_size if gang.is_leader else None
    dist.gather_object(value, gathered, dst=0, group=gang.control_group)
    return gathered


@dataclass(frozen=True)
class _TensorSlot:
    """Stands in for a tensor in the pickled skeleton of a broadcast state."""

    index: int
    shape: tuple[int, ...]
    dtype: torch.dtype


def _strip(value: Any, tensors: list[torch.Tensor]) -> Any:
    if isinstance(value, torch.Tensor):
        tensors.append(value.detach().cpu().contiguous())
        return _TensorSlot(len(tensors) - 1, tuple(value.shape), value.dtype)
    if isinstance(value, dict):
        return {key: _strip(item, tensors) for key, item in value.items()}
    if isinstance(value, list):
        return [_strip(item, tensors) for item in value]
    if isinstance(value, tuple):
        return tuple(_strip(item, tensors) for item in value)
    return value


def _fill(value: Any, tensors: list[torch.Tensor]) -> Any:
    if isinstance(value, _TensorSlot):
        return tensors[value.index]
    if isinstance(value, dict):
        return {key: _fill(item, tensors) for key, item in value.items()}
    if isinstance(value, list):
        return [_fill(item, tensors) for item in value]
    if isinstance(value, tuple):
        return tuple(_fill(item, tensors) for item in value)
    return value


def broadcast_state(state: Any, gang: Gang) -> Any:
    """Send rank 0's nested state (dicts, lists, tensors, numbers) to every rank.

    Only rank 0 may read checkpoints (the claim is ReadWriteOnce), so it loads and the others
    receive. The structure travels pickled; the tensors travel as one flat buffer per dtype
    rather than pickled, which keeps a large optimizer state from being copied several times.
    Returns CPU tensors on every rank.
    """
    if gang.world_size == 1:
        return state
    tensors: list[torch.Tensor] = []
    skeleton = [_strip(state, tensors) if gang.is_leader else None]
    dist.broadcast_object_list(skeleton, src=0, group=gang.control_group)
    slots: list[_TensorSlot] = []
    _collect_slots(skeleton[0], slots)
    slots.sort(key=lambda slot: slot.index)
    received: list[torch.Tensor] = [torch.empty(0)] * len(slots)
    for dtype in sorted({slot.dtype for slot in slots}, key=str):
        members = [slot for slot in slots if slot.dtype == dtype]
        sizes = [int(torch.Size(slot.shape).numel()) for slot in members]
        if gang.is_leader:
            flat = torch.cat([tensors[slot.index].reshape(-1) for slot in members])
        else:
            flat = torch.empty(sum(sizes), dtype=dtype)
        # ship raw bytes: gloo lacks some dtypes (bool, some float8/bfloat16 builds)
        dist.broadcast(flat.view(torch.uint8), src=0, group=gang.control_group)
        for slot, part in zip(members, torch.split(flat, sizes), strict=True):
            received[slot.index] = part.reshape(slot.shape).clone()
    return _fill(skeleton[0], received)


def _collect_slots(value: Any, slots: list[_TensorSlot]) -> None:
    if isinstance(value, _TensorSlot):
        slots.append(value)
    elif isinstance(value, dict):
        for item in value.values():
            _collect_slots(item, slots)
    elif isinstance(value, list | tuple):
        for item in value:
            _collect_slots(item, slots)


def broadcast_object(value: Any, gang: Gang) -> Any:
    """Send one small picklable value from rank 0 to every rank."""
    if gang.world_size == 1:
        return value
    box = [value if gang.is_leader else None]
    dist.broadcast_object_list(box, src=0, group=gang.control_group)
    return cast(Any, box[0])
