"""What the pod's environment tells a rank, besides the trainer config and the rendezvous.

The operator injects these variables (names in ``contract``); the few that only the trainer
reads (API server and service-account overrides, the termination log, the test-only loss log)
are named here. A malformed value is a config error: the operator wrote it, or a user did
through ``spec.env``, and retrying will not fix it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from aidc_trainer import contract
from aidc_trainer.errors import ConfigError

# Trainer-only variables (not part of the operator contract).
ENV_API_SERVER: Final = "AIDC_API_SERVER"
ENV_SERVICEACCOUNT_DIR: Final = "AIDC_SERVICEACCOUNT_DIR"
ENV_TERMINATION_LOG: Final = "AIDC_TERMINATION_LOG"
# Test hook: one JSON line per optimizer step with the step's loss, so a test can compare an
# interrupted-and-resumed run against an uninterrupted one bit for bit.
ENV_LOSS_LOG: Final = "AIDC_LOSS_LOG"

SERVICEACCOUNT_DIR: Final = "/var/run/secrets/kubernetes.io/serviceaccount"
TERMINATION_LOG: Final = "/dev/termination-log"


@dataclass(frozen=True)
class RunEnvironment:
    """Settings of one run that come from the environment rather than from the trainer config."""

    checkpoint_dir: Path | None = None
    data_dir: Path | None = None
    checkpoint_every_steps: int = 0
    checkpoint_every_seconds: float = 600.0
    checkpoint_keep: int = 3
    heartbeat_seconds: float = 5.0
    job_name: str = "local"
    pod_name: str | None = None
    pod_namespace: str | None = None
    gang_attempt: int = 0
    metrics_port: int = contract.TRAINER_METRICS_PORT
    api_server: str | None = None
    serviceaccount_dir: Path = Path(SERVICEACCOUNT_DIR)
    termination_log: Path = Path(TERMINATION_LOG)
    loss_log: Path | None = None


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 0) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name} must be >= {minimum}, got {value}")
    return value


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None
    if not value >= 0:
        raise ConfigError(f"{name} must be >= 0, got {raw}")
    return value


def _path(env: Mapping[str, str], name: str) -> Path | None:
    raw = env.get(name, "").strip()
    return Path(raw) if raw else None


def _api_server(env: Mapping[str, str]) -> str | None:
    """The API server URL: the explicit override, else the in-cluster service variables."""
    explicit = env.get(ENV_API_SERVER, "").strip()
    if explicit:
        return explicit.rstrip("/")
    host = env.get("KUBERNETES_SERVICE_HOST", "").strip()
    port = env.get("KUBERNETES_SERVICE_PORT", "443").strip()
    if not host:
        return None
    if ":" in host:  # an IPv6 address
        host = f"[{host}]"
    return f"https://{host}:{port}"


def read_environment(env: Mapping[str, str] | None = None) -> RunEnvironment:
    """Read the run's settings from ``env`` (default: ``os.environ``)."""
    env = os.environ if env is None else env
    return RunEnvironment(
        checkpoint_dir=_path(env, contract.ENV_CHECKPOINT_DIR),
        data_dir=_path(env, contract.ENV_DATA_DIR),
        checkpoint_every_steps=_int(env, contract.ENV_CHECKPOINT_EVERY_STEPS, 0),
        checkpoint_every_seconds=_float(env, contract.ENV_CHECKPOINT_EVERY_SECONDS, 600.0),
        checkpoint_keep=_int(env, contract.ENV_CHECKPOINT_KEEP, 3, minimum=1),
        heartbeat_seconds=_float(env, contract.ENV_HEARTBEAT_SECONDS, 5.0),
        job_name=env.get(contract.ENV_JOB_NAME, "").strip() or "local",
        pod_name=env.get(contract.ENV_POD_NAME, "").strip() or None,
        pod_namespace=env.get(contract.ENV_POD_NAMESPACE, "").strip() or None,
        gang_attempt=_int(env, contract.ENV_GANG_ATTEMPT, 0),
        metrics_port=_int(env, contract.ENV_METRICS_PORT, contract.TRAINER_METRICS_PORT),
        api_server=_api_server(env),
        serviceaccount_dir=_path(env, ENV_SERVICEACCOUNT_DIR) or Path(SERVICEACCOUNT_DIR),
        termination_log=_path(env, ENV_TERMINATION_LOG) or Path(TERMINATION_LOG),
        loss_log=_path(env, ENV_LOSS_LOG),
    )
