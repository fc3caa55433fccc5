"""Several workers in one pod: start them through ``torch.distributed.run`` (torchrun).

The operator runs one pod per replica. With ``procsPerReplica > 1`` the pod's single entrypoint
must become N ranks, so when ``NPROC_PER_NODE`` is above one and this process is not already a
torchrun worker (no ``LOCAL_RANK``), it turns itself into the torchrun launcher with the
``PET_*`` values the operator injected. Gang restarts belong to the operator, so torchrun never
restarts workers itself (``--max-restarts 0``).

torchrun forwards SIGTERM to its workers, waits for them to checkpoint, and exits nonzero; the
launcher maps that back to the exit code the operator understands (the first worker failure's
code, or 143 after a SIGTERM).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

from aidc_trainer import contract
from aidc_trainer.logs import fields

_log = logging.getLogger(__name__)


def _setting(env: Mapping[str, str], torchrun_name: str, plain_name: str, default: str) -> str:
    return env.get(torchrun_name) or env.get(plain_name) or default


def local_workers(env: Mapping[str, str] | None = None) -> int:
    """How many workers this pod should run (1 when already inside torchrun)."""
    env = os.environ if env is None else env
    if "LOCAL_RANK" in env:
        return 1
    return int(_setting(env, contract.ENV_PET_NPROC_PER_NODE, contract.ENV_NPROC_PER_NODE, "1"))


def torchrun_arguments(env: Mapping[str, str]) -> list[str]:
    """The torchrun command line for this pod, from the ``PET_*`` (else plain) variables."""
    return [
        "--nnodes",
        _setting(env, contract.ENV_PET_NNODES, contract.ENV_NNODES, "1"),
        "--nproc-per-node",
        _setting(env, contract.ENV_PET_NPROC_PER_NODE, contract.ENV_NPROC_PER_NODE, "1"),
        "--node-rank",
        _setting(env, contract.ENV_PET_NODE_RANK, contract.ENV_NODE_RANK, "0"),
        "--master-addr",
        _setting(env, contract.ENV_PET_MASTER_ADDR, contract.ENV_MASTER_ADDR, "127.0.0.1"),
        "--master-port",
        _setting(env, contract.ENV_PET_MASTER_PORT, contract.ENV_MASTER_PORT, "29500"),
        "--max-restarts",
        "0",
        "--module",
        "aidc_trainer",
    ]


def launch_local_workers(env: Mapping[str, str] | None = None) -> int:
    """Run this pod's workers under torchrun and return the exit code the pod should end with."""
    from torch.distributed import run as torchrun
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    env = os.environ if env is None else env
    arguments = torchrun_arguments(env)
    _log.info("starting local workers with torchrun", extra=fields(arguments=arguments))
    try:
        torchrun.run(torchrun.parse_args(arguments))
    except ChildFailedError as error:
        _, failure = error.get_first_failure()
        code = failure.exitcode
        return 128 - code if code < 0 else code  # a negative code is the signal that killed it
    except SignalException as error:
        return 128 + int(error.sigval)
    return contract.EXIT_OK
