"""Errors that end a run with a code the operator can act on.

Bad input must never be retried (the same input fails again), so it exits with a sysexits code
from the contract that the operator treats as permanent; everything else is a crash and may be
retried. Each error carries a one-line message for the log and the pod's termination message.
"""

from __future__ import annotations

from aidc_trainer import contract


class TrainerError(Exception):
    """A failure with a known exit code and a message a user can act on."""

    exit_code: int = 1
    reason: str = "Error"


class ConfigError(TrainerError):
    """The trainer config is invalid: unknown task, unknown key, a value out of range."""

    exit_code = contract.EXIT_CONFIG_ERROR
    reason = "InvalidConfig"


class DataError(TrainerError):
    """The dataset is missing or has a shape the task cannot take."""

    exit_code = contract.EXIT_DATA_ERROR
    reason = "InvalidData"
