"""The training loop of the reinforcement-learning task: time counted in environment steps.

The dataset loop of ``aidc_trainer.training`` counts optimizer steps over epochs of examples; PPO
has no examples, only iterations of rollout-and-update. This loop reuses everything else of
``Trainer`` (resume, checkpoints with every rank's RNG, exports, heartbeat, stop agreement) and
counts ``step`` as environment steps over all ranks: each iteration adds ``envsPerRank x
rolloutSteps x worldSize``. The run takes ``totalSteps`` rounded down to whole iterations (at
least one). Checkpoints also carry every rank's environments, gathered before rank 0 saves.
"""

from __future__ import annotations

import logging
import time

import torch

from aidc_trainer import contract
from aidc_trainer.distributed import StepAgreement, barrier
from aidc_trainer.logs import fields
from aidc_trainer.precision import resolve_precision
from aidc_trainer.tasks import Task, TaskContext, build_task
from aidc_trainer.tasks.reinforcement_learning import ReinforcementLearningTask
from aidc_trainer.training import _CHECKPOINT_DUE, _STOP, Position, RunResult, Trainer, _Throughput

_log = logging.getLogger(__name__)


class PolicyTrainer(Trainer):
    """One rank's share of a reinforcement-learning run."""

    def _build_policy(self) -> tuple[ReinforcementLearningTask, int]:
        """The task and the run's length in environment steps (whole iterations)."""
        precision = resolve_precision(self.config.precision, self.gang.device)
        task = build_task(TaskContext(self.config, self.gang, precision, self.env.data_dir))
        assert isinstance(task, ReinforcementLearningTask)
        per_update = task.steps_per_update
        updates = max(1, task.rl.total_steps // per_update)
        task.set_total_steps(updates)
        _log.info(
            "run planned",
            extra=fields(
                task=self.config.task,
                environment=task.rl.environment.gymnasium_id or task.rl.environment.entry_point,
                gangAttempt=self.env.gang_attempt,
                worldSize=self.gang.world_size,
                backend=self.gang.backend,
                device=str(self.gang.device),
                stepsPerIteration=per_update,
                iterations=updates,
                totalSteps=updates * per_update,
            ),
        )
        return task, updates * per_update

    def _checkpoint(self, task: Task, position: Position) -> None:
        if (
            self.checkpointing
            and self._checkpointed_step != position.step
            and isinstance(task, ReinforcementLearningTask)
        ):
            task.gather_rank_states()  # collective, on the same condition on every rank
        super()._checkpoint(task, position)

    def _iterate(self, task: ReinforcementLearningTask, position: Position, meter: _Throughput) -> None:
        """One PPO iteration and what it reports."""
        started = time.monotonic()
        values = task.train_step(())
        position.step += task.steps_per_update
        episodic = task.episodic_return()  # collective
        rate = task.steps_per_update / max(time.monotonic() - started, 1e-9)
        if episodic is not None:
            values = {**values, "episodicReturn": torch.tensor(episodic)}
        self._log_loss(position.step, values)
        training = {name: float(value) for name, value in values.items() if name != "loss"}
        position.metrics = {
            **{k: v for k, v in position.metrics.items() if k == "evaluationReturn"},
            **training,
            "stepsPerSecond": rate,
        }
        if self.leader:
            meter.add(task.steps_per_update, values["loss"])
            self.metrics.set_training(position.metrics)

    def _evaluate(self, task: Task, position: Position) -> None:
        """The deterministic policy's return, kept beside the training metrics (collective)."""
        evaluation = task.evaluate()
        position.metrics = {**position.metrics, **evaluation}
        position.evaluated_step = position.step
        if self.leader and evaluation:
            self.metrics.set_validation(evaluation)
            _log.info("evaluated", extra=fields(step=position.step, metrics=evaluation))

    def run(self) -> RunResult:
        task, total = self._build_policy()
        position = self._resume(task)
        if self.leader:
            self.metrics.total_steps.set(total)
            self.metrics.serve(self.env.metrics_port)
            self._start_reporter()
        meter = _Throughput(position.step)
        stopped = self._loop(task, position, meter, total)
        if stopped:
            return self._stop_on_request(task, position, meter, total)
        if position.evaluated_step != position.step:
            self._evaluate(task, position)
        self._checkpoint(task, position)
        if self.checkpoint_dir is not None:
            self._export(task, position, contract.EXPORT_FINAL)
            self._export(task, position, contract.EXPORT_BEST)  # one evaluation: best is final
        self._report_exports()
        self._finish_reports(position, meter, total)
        barrier(self.gang)
        return self._result("completed", position, total)

    def _loop(
        self, task: ReinforcementLearningTask, position: Position, meter: _Throughput, total: int
    ) -> bool:
        """Iterate until ``total`` environment steps or an agreed stop; True when stopped."""
        # an iteration is long and reads its metrics anyway: exchanging at each one costs nothing
        agreement = StepAgreement(self.gang, 2, target_seconds=0)
        next_heartbeat = time.monotonic() + self.env.heartbeat_seconds
        last_checkpoint_at = time.monotonic()
        every_steps, every_seconds = self.env.checkpoint_every_steps, self.env.checkpoint_every_seconds
        stopped = False
        loop_started, start_step = time.monotonic(), position.step
        while position.step < total and not stopped:
            self._iterate(task, position, meter)
            due = False
            if self.leader and every_seconds > 0 and time.monotonic() - last_checkpoint_at >= every_seconds:
                due, last_checkpoint_at = True, time.monotonic()
            agreed = agreement.exchange([int(self.preemption.requested), int(due)])
            crossed = (
                every_steps
                and position.step // every_steps > (position.step - task.steps_per_update) // every_steps
            )
            if crossed or agreed[_CHECKPOINT_DUE]:
                self._checkpoint(task, position)
                last_checkpoint_at = time.monotonic()
            stopped = bool(agreed[_STOP])
            if not stopped and self._reporter is not None and time.monotonic() >= next_heartbeat:
                self._reporter.offer(self._heartbeat(position, meter, total))
                next_heartbeat = time.monotonic() + self.env.heartbeat_seconds
        agreement.drain()
        seconds = time.monotonic() - loop_started
        done = position.step - start_step
        self._samples_per_second = done / seconds if done and seconds > 0 else None
        return stopped
