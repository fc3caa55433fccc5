"""The training loop: steps and epochs, checkpoints, stops, reports, exports.

Time belongs here, mathematics to the task. Every rank runs this loop in lock step; decisions that
must be the same everywhere are either deterministic (step counts, epochs) or agreed through
``StepAgreement`` (a stop request from any rank, a time-based checkpoint from rank 0's clock).
Only rank 0 touches the checkpoint directory, the exports, the heartbeat and the metrics
endpoint; under FSDP every rank writes its shards of a checkpoint into the directory too
(sharded_checkpoint.py), and every rank joins the gathering of the exported model.

Resume is exact on a fixed world size: the checkpoint holds the task's state, every rank's RNG
state and the position inside the epoch, and the sampler's order is a function of seed and epoch,
so the steps after a resume repeat those of an uninterrupted run bit for bit (on CPU).
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch.utils.data import TensorDataset

from aidc_trainer import contract
from aidc_trainer.checkpoint import SavedCheckpoint, load_latest, remove_stale_temporaries, save_checkpoint
from aidc_trainer.config import TrainerConfig
from aidc_trainer.distributed import (
    Gang,
    StepAgreement,
    all_reduce_sum,
    barrier,
    broadcast_object,
    broadcast_state,
    gather_to_leader,
)
from aidc_trainer.environment import RunEnvironment
from aidc_trainer.errors import ConfigError, DataError
from aidc_trainer.export import build_manifest, folder_bytes, write_export
from aidc_trainer.heartbeat import HeartbeatReporter, HeartbeatSender, build_heartbeat
from aidc_trainer.logs import fields
from aidc_trainer.metrics import TrainerMetrics
from aidc_trainer.precision import resolve_precision
from aidc_trainer.preemption import PreemptionWatch
from aidc_trainer.rng import capture_rng, restore_rng, seed_rank
from aidc_trainer.sampling import Batch, ResumableSampler, batches_per_epoch, iterate_batches
from aidc_trainer.sharded_checkpoint import (
    load_latest_sharded,
    newest_plain,
    remove_stale_staging,
    save_sharded,
)
from aidc_trainer.tasks import Task, TaskContext, build_task

_log = logging.getLogger(__name__)


@contextlib.contextmanager
def _fitting_checkpoint() -> Iterator[None]:
    """A saved state that does not fit this config's model is a config error, not a crash."""
    try:
        yield
    except (RuntimeError, KeyError, ValueError) as error:
        raise ConfigError(
            f"the latest checkpoint does not fit the model of this config ({type(error).__name__}: "
            f"{str(error).splitlines()[0] if str(error) else ''}); "
            "use a new checkpoint directory for a changed model"
        ) from error


_STOP, _CHECKPOINT_DUE = 0, 1  # positions in the agreed flags
_GPU_RESIDENT_BYTES = 1 << 30  # datasets below this move to the GPU once instead of per batch


@dataclass
class Position:
    """Where the run stands; all of it goes into every checkpoint."""

    step: int = 0
    epoch: int = 0  # epoch in progress, from 0
    consumed: int = 0  # micro-batches this rank has taken from the current epoch
    metrics: dict[str, float] = field(default_factory=dict)
    best: float | None = None
    evaluated_step: int = -1  # step at which ``metrics`` were measured


@dataclass(frozen=True)
class RunResult:
    """How a run ended, for the exit code and the termination message."""

    outcome: Literal["completed", "preempted"]
    step: int
    total_steps: int
    epoch: int
    metrics: dict[str, float]
    checkpoint: str | None
    model: str | None
    samples_per_second: float | None = None  # over this attempt's training loop, whole gang


class _Throughput:
    """Samples per second and mean loss between two reports (rank 0's view)."""

    def __init__(self, start_step: int) -> None:
        self.started = self.since = time.monotonic()
        self.start_step = start_step
        self.samples = 0
        self.loss_sum: torch.Tensor | None = None
        self.loss_count = 0

    def add(self, samples: int, loss: torch.Tensor) -> None:
        self.samples += samples
        self.loss_sum = loss if self.loss_sum is None else self.loss_sum + loss
        self.loss_count += 1

    def take(self) -> tuple[float | None, float | None, int]:
        """(mean loss, samples/s, samples) since the last take; the one place the loss is read back
        from the device (a GPU sync), at report time only."""
        now = time.monotonic()
        samples = self.samples
        rate = samples / (now - self.since) if samples and now > self.since else None
        loss = (
            float(self.loss_sum) / self.loss_count if self.loss_sum is not None and self.loss_count else None
        )
        self.since, self.samples, self.loss_sum, self.loss_count = now, 0, None, 0
        return loss, rate, samples


@dataclass
class _Loop:
    """What the steps of one attempt share besides the position: the clocks, meter and agreement."""

    total: int
    meter: _Throughput
    agreement: StepAgreement
    next_heartbeat: float
    last_checkpoint_at: float
    started: float = field(default_factory=time.monotonic)
    samples: int = 0  # by the whole gang, this attempt


class Trainer:
    """One rank's share of a training run."""

    def __init__(
        self, config: TrainerConfig, env: RunEnvironment, gang: Gang, preemption: PreemptionWatch
    ) -> None:
        self.config = config
        self.env = env
        self.gang = gang
        self.preemption = preemption
        self.leader = gang.is_leader
        self.sharded = config.parallelism.sharded
        # DDP: only rank 0 has the claim; the others must still join the collectives of a checkpoint.
        # FSDP: every rank writes its shards, so every rank needs the claim
        self.checkpointing = self._agree_on_checkpointing(env)
        self.checkpoint_dir = env.checkpoint_dir if self.leader or self.sharded else None
        self.exports = self.leader and self.checkpointing  # rank 0 writes exports and manifests
        self.last_checkpoint: SavedCheckpoint | None = None  # rank 0 only
        self._checkpointed_step = -1  # every rank: the step of the newest checkpoint
        self.model_path: str | None = None
        self.model_best_path: str | None = None
        self.model_bytes: int | None = None
        self.metrics = TrainerMetrics(env.job_name)
        self._reporter: HeartbeatReporter | None = None
        self._samples_per_second: float | None = None

    # --- setup -------------------------------------------------------------------------------

    def _agree_on_checkpointing(self, env: RunEnvironment) -> bool:
        if not self.sharded:
            return bool(broadcast_object(self.leader and env.checkpoint_dir is not None, self.gang))
        (ranks_with_claim,) = all_reduce_sum([float(env.checkpoint_dir is not None)], self.gang)
        if 0 < ranks_with_claim < self.gang.world_size:
            raise ConfigError(
                "parallelism.strategy FSDP writes checkpoints from every rank, but only "
                f"{int(ranks_with_claim)} of {self.gang.world_size} ranks have a checkpoint directory"
            )
        return ranks_with_claim > 0

    def _build(self) -> tuple[Task, TensorDataset, ResumableSampler, int, int]:
        """The task, its (possibly GPU-resident) training set and sampler, steps per epoch and in total."""
        precision = resolve_precision(self.config.precision, self.gang.device)
        task = build_task(TaskContext(self.config, self.gang, precision, self.env.data_dir))
        dataset = task.train_set
        if len(dataset) < self.gang.world_size:
            raise DataError(
                f"{len(dataset)} training examples cannot be shared by {self.gang.world_size} ranks"
            )
        if self.gang.device.type == "cuda":
            size = sum(t.numel() * t.element_size() for t in dataset.tensors)
            if size < _GPU_RESIDENT_BYTES:
                dataset = TensorDataset(*(t.to(self.gang.device) for t in dataset.tensors))
        sampler = ResumableSampler(
            dataset, num_replicas=self.gang.world_size, rank=self.gang.rank, seed=self.config.seed
        )
        accumulation = self.config.gradient_accumulation_steps
        steps_per_epoch = batches_per_epoch(sampler, self.config.batch_size) // accumulation
        if steps_per_epoch == 0:
            raise DataError(
                f"each rank gets {sampler.num_samples} examples per epoch, fewer than batchSize "
                f"{self.config.batch_size} x gradientAccumulationSteps {accumulation}"
            )
        total = steps_per_epoch * self.config.epochs
        if self.config.max_steps is not None:
            total = min(total, self.config.max_steps)
        task.set_total_steps(total)
        _log.info(
            "run planned",
            extra=fields(
                task=self.config.task,
                gangAttempt=self.env.gang_attempt,
                worldSize=self.gang.world_size,
                backend=self.gang.backend,
                device=str(self.gang.device),
                precision=precision.name,
                trainExamples=len(dataset),
                stepsPerEpoch=steps_per_epoch,
                totalSteps=total,
            ),
        )
        return task, dataset, sampler, steps_per_epoch, total

    def _resume(self, task: Task) -> Position:
        """Load the newest usable checkpoint on rank 0 and hand its state to every rank."""
        if self.sharded:
            return self._resume_sharded(task)
        loaded = None
        if self.checkpoint_dir is not None:
            remove_stale_temporaries(self.checkpoint_dir)
            started = time.monotonic()
            found = load_latest(self.checkpoint_dir)
            if found is not None:
                path, state = found
                loaded = state
                self.last_checkpoint = SavedCheckpoint(path, int(state["step"]), time.monotonic() - started)
        has_state = broadcast_object(loaded is not None, self.gang) if self.checkpointing else False
        if not has_state:
            seed_rank(self.config.seed, self.gang.rank)
            return Position()
        started = time.monotonic()
        state = broadcast_state(loaded, self.gang)
        self._check_saved_task(state)
        with _fitting_checkpoint():
            task.load_state_dict(state["task"])
        return self._resumed_position(state, started)

    def _resume_sharded(self, task: Task) -> Position:
        """Every rank reads its shards of the newest usable sharded checkpoint, resharding as needed."""
        if not self.checkpointing or self.checkpoint_dir is None:
            seed_rank(self.config.seed, self.gang.rank)
            return Position()
        misfit = None
        if self.leader:
            remove_stale_staging(self.checkpoint_dir)
            misfit = self._misfit(newest_plain(self.checkpoint_dir))
        misfit = broadcast_object(misfit, self.gang)
        if misfit:  # checked first: DCP cannot tell a changed model from a torn checkpoint
            raise ConfigError(misfit)
        started = time.monotonic()
        with _fitting_checkpoint():
            found = load_latest_sharded(self.checkpoint_dir, task.shard_state, self.gang)
        if found is None:
            seed_rank(self.config.seed, self.gang.rank)
            return Position()
        self._check_saved_task(found.plain)
        with _fitting_checkpoint():
            task.load_shard_state(found.shards)
            task.load_plain_state(found.plain["task"])
        if self.leader:
            self.last_checkpoint = SavedCheckpoint(found.path, int(found.plain["step"]), 0.0)
        return self._resumed_position(found.plain, started)

    def _misfit(self, plain: dict[str, Any] | None) -> str | None:
        """Why the newest sharded checkpoint cannot be this config's (another task or model shape)."""
        saved = (plain or {}).get("config") or {}
        if not saved:
            return None
        current = self.config.to_json()
        for key in ("task", "languageModel"):
            if saved.get(key) != current[key]:
                return (
                    f"the latest checkpoint has {key} {json.dumps(saved.get(key))}, this config "
                    f"{json.dumps(current[key])}; use a new checkpoint directory for a changed model"
                )
        return None

    def _check_saved_task(self, state: dict[str, Any]) -> None:
        saved_task = state.get("config", {}).get("task")
        if saved_task != self.config.task:
            raise ConfigError(
                f"the checkpoint directory holds a {saved_task} run; this config trains {self.config.task}"
            )

    def _resumed_position(self, state: dict[str, Any], started: float) -> Position:
        """Where the loaded state left the run; every rank's RNG restored when the gang kept its size."""
        position = Position(
            step=int(state["step"]),
            epoch=int(state["epoch"]),
            consumed=int(state["position"]),
            metrics={str(k): float(v) for k, v in state.get("metrics", {}).items()},
            best=state.get("best"),
            evaluated_step=int(state.get("evaluatedStep", -1)),
        )
        self._checkpointed_step = position.step
        saved_world = int(state.get("worldSize", self.gang.world_size))
        rng_states = state.get("rng") or []
        if saved_world == self.gang.world_size and len(rng_states) == self.gang.world_size:
            restore_rng(rng_states[self.gang.rank])
        else:
            # a different gang size cannot replay the same order; keep the examples seen, not the order
            examples = position.consumed * self.config.batch_size * saved_world
            accumulation = self.config.gradient_accumulation_steps
            position.consumed = (
                examples // (self.config.batch_size * self.gang.world_size) // accumulation * accumulation
            )
            seed_rank(self.config.seed + position.step, self.gang.rank)
            _log.warning(
                "world size changed since the checkpoint; resuming approximately",
                extra=fields(savedWorldSize=saved_world, worldSize=self.gang.world_size),
            )
        load_seconds = (
            time.monotonic() - started + (self.last_checkpoint.seconds if self.last_checkpoint else 0)
        )
        self.metrics.observe_checkpoint("load", load_seconds)
        _log.info(
            "resumed from checkpoint",
            extra=fields(
                path=str(self.last_checkpoint.path) if self.last_checkpoint else None,
                step=position.step,
                epoch=position.epoch,
                consumed=position.consumed,
                seconds=round(load_seconds, 3),
            ),
        )
        return position

    # --- checkpoints and exports -------------------------------------------------------------

    def _checkpoint(self, task: Task, position: Position) -> None:
        """Save a checkpoint of this step (collective: every rank sends its RNG state)."""
        if not self.checkpointing:
            return
        if self._checkpointed_step == position.step:
            return  # already saved at this step (a stop right after a scheduled checkpoint, a resume)
        self._checkpointed_step = position.step
        rng_states = gather_to_leader(capture_rng(), self.gang)
        if self.sharded and self.checkpoint_dir is not None:
            plain = self._checkpoint_state(task.plain_state(), position, rng_states) if self.leader else None
            saved = save_sharded(
                self.checkpoint_dir, task.shard_state(), plain,
                step=position.step, keep=self.env.checkpoint_keep, gang=self.gang,
            )  # fmt: skip
            if self.leader:
                self._saved(saved)
            return
        if self.checkpoint_dir is None:
            return
        state = self._checkpoint_state(task.state_dict(), position, rng_states)
        keep = self.env.checkpoint_keep
        self._saved(save_checkpoint(self.checkpoint_dir, state, step=position.step, keep=keep))

    def _checkpoint_state(
        self, task_state: dict[str, Any], position: Position, rng_states: list[Any] | None
    ) -> dict[str, Any]:
        return {
            "epoch": position.epoch,
            "position": position.consumed,
            "worldSize": self.gang.world_size,
            "task": task_state,
            "rng": rng_states,
            "metrics": dict(position.metrics),
            "evaluatedStep": position.evaluated_step,
            "best": position.best,
            "config": self.config.to_json(),
            "gangAttempt": self.env.gang_attempt,
            "createdAt": datetime.datetime.now(datetime.UTC).isoformat(),
        }

    def _saved(self, saved: SavedCheckpoint) -> None:
        self.last_checkpoint = saved
        self.metrics.observe_checkpoint("save", saved.seconds)
        _log.info(
            "checkpoint saved",
            extra=fields(path=str(saved.path), step=saved.step, seconds=round(saved.seconds, 3)),
        )

    def _export(self, task: Task, position: Position, where: str) -> None:
        """Write ``export/final`` or ``export/best`` (rank 0 with a checkpoint directory only; under
        FSDP every rank joins the gathering of the weights)."""
        if not self.exports and not (self.sharded and self.checkpointing):
            return
        exported = task.export()
        if not self.exports or self.checkpoint_dir is None:
            return
        manifest = build_manifest(
            self.config.task,
            exported,
            metrics=position.metrics,
            step=position.step,
            epoch=min(position.epoch + 1, self.config.epochs),
            job=self.env.job_name,
            now=datetime.datetime.now(datetime.UTC),
        )
        write_export(self.checkpoint_dir / where, exported.state_dict, manifest, exported.files)
        _log.info("model exported", extra=fields(path=str(self.checkpoint_dir / where), step=position.step))

    def _evaluate(self, task: Task, position: Position) -> None:
        """Validate (collective), and on rank 0 refresh ``export/best`` when the metric improved."""
        metrics = task.evaluate()
        position.metrics = metrics
        position.evaluated_step = position.step  # on every rank: it decides whether to evaluate again
        if self.leader:
            self.metrics.set_validation(metrics)
            epoch = position.epoch + 1
            _log.info("validated", extra=fields(step=position.step, epoch=epoch, metrics=metrics))
        # on every rank (the metrics are all-reduced, so all agree): a sharded export is collective
        name = task.primary_metric
        if name is None or name not in metrics:
            return
        value = metrics[name]
        better = position.best is None or (
            value > position.best if task.higher_is_better else value < position.best
        )
        if better:
            position.best = value
            self._export(task, position, contract.EXPORT_BEST)

    # --- reporting ---------------------------------------------------------------------------

    def _heartbeat(self, position: Position, meter: _Throughput, total: int) -> dict[str, Any]:
        loss, rate, samples = meter.take()
        self.metrics.samples.inc(samples)  # counted here rather than per step: no work per step
        done = position.step - meter.start_step
        elapsed = time.monotonic() - meter.started
        eta = (total - position.step) * elapsed / done if done > 0 else None
        checkpoint = self.last_checkpoint if self.exports else None
        heartbeat = build_heartbeat(
            step=position.step,
            total_steps=total,
            epoch=min(position.epoch + 1, self.config.epochs),
            loss=loss,
            metrics=position.metrics,
            samples_per_second=rate,
            eta_seconds=eta,
            checkpoint_path=checkpoint.path.name if checkpoint else None,
            checkpoint_step=checkpoint.step if checkpoint else None,
            model_path=self.model_path,
            model_best_path=self.model_best_path,
            model_bytes=self.model_bytes,
            now=datetime.datetime.now(datetime.UTC),
        )
        self.metrics.step.set(position.step)
        self.metrics.epoch.set(heartbeat["epoch"])
        if loss is not None:
            self.metrics.loss.set(loss)
        if rate is not None:
            self.metrics.samples_per_second.set(rate)
        return heartbeat

    def _log_loss(self, step: int, values: dict[str, torch.Tensor]) -> None:
        """Test hook: append this step's exact losses (``repr`` of a float round-trips)."""
        if self.env.loss_log is None or not self.leader:
            return
        line = {"step": step, **{name: repr(float(value)) for name, value in values.items()}}
        with self.env.loss_log.open("a") as handle:
            handle.write(json.dumps(line) + "\n")

    # --- the loop ----------------------------------------------------------------------------

    def run(self) -> RunResult:
        task, dataset, sampler, steps_per_epoch, total = self._build()
        position = self._resume(task)
        if self.leader:
            self.metrics.total_steps.set(total)
            self.metrics.serve(self.env.metrics_port)
            self._start_reporter()
        now = time.monotonic()
        loop = _Loop(
            total=total,
            meter=_Throughput(position.step),
            agreement=self._agreement(),
            next_heartbeat=now + self.env.heartbeat_seconds,
            last_checkpoint_at=now,
        )
        stopped = self._train(task, dataset, sampler, steps_per_epoch, position, loop)
        loop.agreement.drain()
        seconds = time.monotonic() - loop.started
        self._samples_per_second = loop.samples / seconds if loop.samples and seconds > 0 else None

        if stopped:
            return self._stop_on_request(task, position, loop.meter, total)

        if position.evaluated_step != position.step:
            self._evaluate(task, position)  # the run ended mid-epoch (maxSteps): measure what is exported
        self._checkpoint(task, position)
        self._export_final(task, position)
        self._finish_reports(position, loop.meter, total)
        barrier(self.gang)
        return self._result("completed", position, total)

    def _agreement(self) -> StepAgreement:
        """How the gang agrees on stops and time-based checkpoints (its two flags)."""
        return StepAgreement(self.gang, 2)

    def _train(
        self,
        task: Task,
        dataset: TensorDataset,
        sampler: ResumableSampler,
        steps_per_epoch: int,
        position: Position,
        loop: _Loop,
    ) -> bool:
        """The epochs of this attempt, each validated at its end; True when the gang agreed to stop."""
        accumulation = self.config.gradient_accumulation_steps
        while position.step < loop.total:
            sampler.set_epoch(position.epoch)
            sampler.skip_next(position.consumed * self.config.batch_size)
            batches: Iterator[Batch] = iterate_batches(dataset, sampler, self.config.batch_size)
            for _ in range(steps_per_epoch - position.consumed // accumulation):
                if self._step(task, [next(batches) for _ in range(accumulation)], position, loop):
                    return True
                if position.step >= loop.total:
                    break
            if position.consumed // accumulation >= steps_per_epoch:
                self._evaluate(task, position)
                position.epoch += 1
                position.consumed = 0
        return False

    def _step(self, task: Task, micro_batches: list[Batch], position: Position, loop: _Loop) -> bool:
        """One optimizer step and the control work after it; True when the gang agreed to stop.

        Outside checkpoint and report steps nothing here reads a tensor back to the host: the loss
        stays on the device in the meter until a heartbeat takes it, and the agreed flags are host
        memory whose all-reduce was started steps earlier.
        """
        values = task.train_step(micro_batches)
        position.step += 1
        position.consumed += len(micro_batches)
        self._log_loss(position.step, values)
        samples = sum(len(batch[0]) for batch in micro_batches) * self.gang.world_size
        loop.samples += samples
        if self.leader:
            loop.meter.add(samples, values["loss"])
        agreed = loop.agreement.exchange([int(self.preemption.requested), int(self._checkpoint_due(loop))])
        every_steps = self.env.checkpoint_every_steps
        if (every_steps and position.step % every_steps == 0) or agreed[_CHECKPOINT_DUE]:
            self._checkpoint(task, position)
            loop.last_checkpoint_at = time.monotonic()
        if agreed[_STOP]:
            return True
        if self._reporter is not None and time.monotonic() >= loop.next_heartbeat:
            self._reporter.offer(self._heartbeat(position, loop.meter, loop.total))
            loop.next_heartbeat = time.monotonic() + self.env.heartbeat_seconds
        return False

    def _checkpoint_due(self, loop: _Loop) -> bool:
        """Rank 0's clock asks for a time-based checkpoint (which the gang then agrees on)."""
        every = self.env.checkpoint_every_seconds
        if not self.leader or every <= 0 or time.monotonic() - loop.last_checkpoint_at < every:
            return False
        loop.last_checkpoint_at = time.monotonic()
        return True

    def _stop_on_request(self, task: Task, position: Position, meter: _Throughput, total: int) -> RunResult:
        """SIGTERM: a checkpoint, the last reports, and the gang leaves together (exit 143)."""
        self._checkpoint(task, position)
        _log.log(
            logging.WARNING if self.leader else logging.INFO,
            "stopped on request; checkpoint saved" if self.checkpointing else "stopped on request",
            extra=fields(step=position.step, signal=self.preemption.signal_name),
        )
        self._finish_reports(position, meter, total)
        barrier(self.gang)
        return self._result("preempted", position, total)

    def _export_final(self, task: Task, position: Position) -> None:
        self._export(task, position, contract.EXPORT_FINAL)
        best = self.checkpoint_dir / contract.EXPORT_BEST if self.checkpoint_dir is not None else None
        if broadcast_object(self.exports and best is not None and not best.exists(), self.gang):
            self._export(task, position, contract.EXPORT_BEST)  # no validation metric: best is final
        self._report_exports()

    def _report_exports(self) -> None:
        """What the heartbeat says of the exports: where both are, and the final one's size."""
        if self.exports:
            self.model_path = contract.EXPORT_FINAL
        if self.exports and self.checkpoint_dir is not None:
            self.model_bytes = folder_bytes(self.checkpoint_dir / contract.EXPORT_FINAL)
            if (self.checkpoint_dir / contract.EXPORT_BEST / contract.MODEL_MANIFEST).is_file():
                self.model_best_path = contract.EXPORT_BEST

    def _start_reporter(self) -> None:
        self._reporter = HeartbeatReporter(HeartbeatSender.from_environment(self.env))

    def _finish_reports(self, position: Position, meter: _Throughput, total: int) -> None:
        if self._reporter is not None:
            self._reporter.close(self._heartbeat(position, meter, total))

    def _result(
        self, outcome: Literal["completed", "preempted"], position: Position, total: int
    ) -> RunResult:
        checkpoint = self.last_checkpoint if self.exports else None
        return RunResult(
            outcome=outcome,
            step=position.step,
            total_steps=total,
            epoch=min(position.epoch + 1, self.config.epochs),
            metrics=dict(position.metrics),
            checkpoint=checkpoint.path.name if checkpoint else None,
            model=self.model_path,
            samples_per_second=self._samples_per_second,
        )
