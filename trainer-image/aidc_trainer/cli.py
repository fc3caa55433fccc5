"""``python -m aidc_trainer`` / ``aidc-train``: one rank of a training run, start to exit code.

It works in the three ways a pod may start it: directly as one rank (``RANK``/``WORLD_SIZE``/
``MASTER_*`` from the operator), as a worker of an external torchrun (``LOCAL_RANK`` set), or as
the launcher of this pod's workers when ``NPROC_PER_NODE > 1``. With none of those variables it
trains alone, which is how tests and laptops use it.

Exit codes are the operator contract: 0 done, 143 stopped by SIGTERM after a checkpoint
(retryable), 78 bad config and 65 bad data (permanent), 1 for anything unexpected.
"""

from __future__ import annotations

import argparse
import faulthandler
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from aidc_trainer import contract
from aidc_trainer.allocator import keep_freed_memory
from aidc_trainer.config import parse_config
from aidc_trainer.environment import read_environment
from aidc_trainer.errors import ConfigError, TrainerError
from aidc_trainer.launch import launch_local_workers, local_workers
from aidc_trainer.logs import configure_logging, fields
from aidc_trainer.preemption import PreemptionWatch
from aidc_trainer.termination import write_termination_message

if TYPE_CHECKING:
    from aidc_trainer.distributed import Gang
    from aidc_trainer.training import RunResult

_log = logging.getLogger("aidc_trainer.cli")


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="aidc-train", description="Train a built-in aidc task (DDP).")
    parser.add_argument("--config", help=f"trainer config JSON (default: ${contract.ENV_TRAINER_CONFIG})")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run this process's part of the job; returns the exit code."""
    arguments = _arguments(argv)
    # a native crash (a collective library's abort, a segfault) prints every thread's Python stack
    faulthandler.enable()
    if local_workers() > 1:
        configure_logging(0)
        return launch_local_workers()
    keep_freed_memory()  # before torch allocates: every step reuses the last one's memory

    from aidc_trainer.distributed import init_gang, leave_gang, read_topology

    try:
        topology = read_topology()
    except ValueError as error:
        configure_logging(0)
        _log.error(str(error))
        return contract.EXIT_CONFIG_ERROR
    configure_logging(topology.rank)
    preemption = PreemptionWatch()
    preemption.install()
    termination_log = read_environment({}).termination_log
    # workers of one pod share its termination log: local rank 0 writes the summary, others only
    # their own failure (a torchrun worker that crashed is the news)
    summarises = topology.local_rank == 0
    joined = False
    try:
        environment = read_environment()
        termination_log = environment.termination_log
        raw = arguments.config or os.environ.get(contract.ENV_TRAINER_CONFIG)
        if not raw:
            raise ConfigError(
                f"no trainer config: set {contract.ENV_TRAINER_CONFIG} (JSON with at least a task)"
            )
        config = parse_config(raw)

        from aidc_trainer.training import Trainer

        trainer_class = Trainer
        if config.task == "reinforcement-learning":
            from aidc_trainer.rl.training import PolicyTrainer

            trainer_class = PolicyTrainer
        gang = init_gang(topology)
        joined = True
        result = trainer_class(config, environment, gang, preemption).run()
        # the outcome is recorded before the gang is torn down: a collective library that
        # crashes on the way out must not take the summary with it
        code = _report(result, termination_log if summarises else None)
        _part_ways(gang)
    except TrainerError as error:
        _log.error(str(error), extra=fields(exitCode=error.exit_code, reason=error.reason))
        write_termination_message(termination_log, error.exit_code, error.reason, str(error))
        return error.exit_code
    except Exception as error:
        _log.exception("training crashed", extra=fields(exitCode=1, reason="Crashed"))
        write_termination_message(termination_log, 1, "Crashed", f"{type(error).__name__}: {error}")
        return 1
    finally:
        if joined:
            leave_gang()
    return code


def _part_ways(gang: Gang) -> None:
    """The end of a finished run: the summary is written, a peer that is gone is only a warning."""
    from aidc_trainer.distributed import part_ways

    try:
        part_ways(gang)
    except Exception as error:
        _log.warning("a peer did not reach the end of the run", extra=fields(error=str(error)))


def _report(result: RunResult, termination_log: Path | None) -> int:
    """Log the run's outcome and write the pod's summary; returns the exit code."""
    rate = None if result.samples_per_second is None else round(result.samples_per_second, 1)
    if result.outcome == "preempted":
        code, reason, message = contract.EXIT_PREEMPTED, "Preempted", "stopped on SIGTERM after a checkpoint"
    else:
        code, reason, message = contract.EXIT_OK, "Completed", "training completed"
    _log.info(message, extra=fields(exitCode=code, step=result.step, metrics=result.metrics))
    if termination_log is not None:
        write_termination_message(
            termination_log,
            code,
            reason,
            message,
            step=result.step,
            totalSteps=result.total_steps,
            epoch=result.epoch,
            metrics=result.metrics,
            checkpoint=result.checkpoint,
            model=result.model,
            samplesPerSecond=rate,
        )
    return code


def entrypoint() -> None:
    """Console-script wrapper: exit with ``main``'s code.

    The process ends at once, without the interpreter's teardown: the outcome is on record, and the
    destructors of a collective library's threads are a known way to abort after it (exit 134).
    """
    code = main()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
