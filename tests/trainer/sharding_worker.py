"""Ranks of the sharding tests, started with torch.multiprocessing.spawn (gloo on CPU)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F  # noqa: N812
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_state_dict,
    set_state_dict,
)

from aidc_trainer.distributed import Gang, Topology
from aidc_trainer.models import LanguageModel
from aidc_trainer.precision import Precision
from aidc_trainer.sharded_checkpoint import load_latest_sharded, save_sharded
from aidc_trainer.sharding import ShardedModel, shard_model

CPU = torch.device("cpu")


def _join(rank: int, world: int, port: int) -> Gang:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    return Gang(Topology(rank, world), "gloo", CPU, None)


def _model(strategy: str, activation_checkpointing: bool = False) -> tuple[LanguageModel, ShardedModel]:
    torch.manual_seed(0)
    model = LanguageModel(64, 16, 2, 2, 32)
    wrapped = shard_model(
        model, list(model.blocks), strategy=strategy, device=CPU, precision=Precision("fp32", "cpu"),
        activation_checkpointing=activation_checkpointing,
    )  # fmt: skip
    return model, wrapped


def _data() -> torch.Tensor:
    return torch.randint(0, 64, (8, 17), generator=torch.Generator().manual_seed(1))


def _step(wrapped: ShardedModel, optimizer: torch.optim.Optimizer, rank: int, world: int) -> float:
    """One optimizer step over two micro-batches of this rank's share, clipped; the gang's mean loss."""
    mine = _data()[rank::world]
    total = 0.0
    for index, batch in enumerate((mine[:1], mine[1:])):
        with wrapped.no_sync() if index == 0 else contextlib.nullcontext():
            loss = F.cross_entropy(wrapped.module(batch[:, :-1]).flatten(0, 1), batch[:, 1:].flatten()) / 2
            loss.backward()
        total += float(loss.detach())
    torch.nn.utils.clip_grad_norm_(list(wrapped.module.parameters()), 0.5)
    optimizer.step()
    optimizer.zero_grad()
    mean = torch.tensor([total])
    dist.all_reduce(mean)
    return float(mean) / world


def _leave() -> None:
    """Leave the gang and end the process at once: the interpreter's teardown of gloo's threads has
    aborted finished workers here ("terminate called without an active exception"), as the trainer's
    entrypoint avoids too."""
    dist.destroy_process_group()
    os._exit(0)


def losses(rank: int, world: int, port: int, strategy: str, checkpointing: bool, out: str) -> None:
    _join(rank, world, port)
    model, wrapped = _model(strategy, checkpointing)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    curve = [_step(wrapped, optimizer, rank, world) for _ in range(4)]
    if rank == 0:
        torch.save(curve, out)
    _leave()


def save_two(rank: int, world: int, port: int, folder: str) -> None:
    """Steps 1 and 2, a sharded checkpoint after each, the full weights beside them for comparison."""
    gang = _join(rank, world, port)
    model, wrapped = _model("FSDP")
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for step in (1, 2):
        _step(wrapped, optimizer, rank, world)
        model_state, optimizer_state = get_state_dict(model, optimizer)
        shards = {"model": model_state, "optimizer": optimizer_state}
        save_sharded(Path(folder), shards, {"step": step}, step=step, keep=3, gang=gang)
        full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        if rank == 0:
            torch.save(full, Path(folder) / f"full-{step}.pt")
    _leave()


def load_newest(rank: int, world: int, port: int, folder: str, out: str) -> None:
    """Resume into ``world`` ranks; rank 0 records which step and whether the weights are the saved ones."""
    gang = _join(rank, world, port)
    model, wrapped = _model("FSDP")
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)

    def template() -> dict[str, object]:
        model_state, optimizer_state = get_state_dict(model, optimizer)
        return {"model": model_state, "optimizer": optimizer_state}

    found = load_latest_sharded(Path(folder), template, gang)
    assert found is not None
    shards = found.shards
    set_state_dict(model, optimizer, model_state_dict=shards["model"], optim_state_dict=shards["optimizer"])
    full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    after = _step(wrapped, optimizer, rank, world)  # the optimizer state came back too: a step works
    if rank == 0:
        step = int(found.plain["step"])
        saved = torch.load(Path(folder) / f"full-{step}.pt", weights_only=True)
        same = all(torch.equal(saved[name], full[name]) for name in saved)
        torch.save({"step": step, "same": same, "name": found.path.name, "after": after}, out)
    _leave()
