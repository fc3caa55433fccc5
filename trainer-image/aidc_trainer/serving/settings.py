"""The server's settings: command-line flags, each with an ``AIDC_*`` environment fallback.

The operator configures serving pods through the environment (it renders the InferenceService's
``batching`` into ``AIDC_MAX_BATCH_SIZE`` and ``AIDC_MAX_DELAY_MS``), while people running the
image by hand reach for flags; a flag wins over the variable. A bad value is a config error
(exit 78, never worth a restart) with a message naming the flag and the variable.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Final

from aidc_trainer import contract
from aidc_trainer.errors import ConfigError

# What the operator sets is in the contract; the device is chosen by whoever runs the image.
ENV_DEVICE: Final = "AIDC_DEVICE"

DEVICES: Final = ("auto", "cpu", "cuda")
MAX_WORKERS: Final = 256
AUTH_MODES: Final = (contract.AUTH_NONE, contract.AUTH_API_KEY, contract.AUTH_KUBERNETES)
# The name is a URL path segment (/v2/models/<name>/infer) and usually a Kubernetes object name.
_MODEL_NAME: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,252}$")


@dataclass(frozen=True)
class ServerSettings:
    """Validated settings of one server process."""

    model_dir: Path = Path(contract.MODEL_MOUNT)
    model_name: str = "model"
    host: str = "0.0.0.0"  # a pod's server must be reachable through its Service
    port: int = contract.SERVER_PORT
    max_batch_size: int = 32
    max_delay_ms: float = 5.0
    max_request_bytes: int = 8 * 1024 * 1024
    device: str = "auto"
    auth: str = contract.AUTH_NONE
    api_key: str | None = field(default=None, repr=False)  # only from the environment: flags show in ps
    auth_namespace: str | None = None
    auth_name: str | None = None
    auth_audiences: tuple[str, ...] = ()
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    openai: str = "auto"  # required: a model the OpenAI routes cannot serve is a config error
    workers: int = 0  # server processes on the port; 0: one per CPU of the pod's limit (workers.py)
    reuse_port: bool = False  # set for the workers: they share the port with SO_REUSEPORT


def _bounded_int(low: int, high: int) -> Callable[[str], int]:
    def read(text: str) -> int:
        value = int(text)
        if not low <= value <= high:
            raise ValueError(f"must be in [{low}, {high}]")
        return value

    return read


def _delay_ms(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 60_000:
        raise ValueError("must be in [0, 60000] milliseconds")
    return value


def _model_name(text: str) -> str:
    if not _MODEL_NAME.match(text):
        raise ValueError("must start with a letter or digit and hold only letters, digits, '_', '.', '-'")
    return text


def _auth_mode(text: str) -> str:
    if text not in AUTH_MODES:
        raise ValueError(f"must be one of {', '.join(AUTH_MODES)}")
    return text


def _openai_mode(text: str) -> str:
    if text not in ("auto", contract.OPENAI_REQUIRED):
        raise ValueError(f"must be auto or {contract.OPENAI_REQUIRED}")
    return text


def _switch(text: str) -> bool:
    if text not in ("true", "false"):
        raise ValueError("must be true or false")
    return text == "true"


def _audiences(text: str) -> tuple[str, ...]:
    return tuple(a.strip() for a in text.split(",") if a.strip())


def _device(text: str) -> str:
    if text not in DEVICES:
        raise ValueError(f"must be one of {', '.join(DEVICES)}")
    return text


# (flag, variable, parser, default, help)
_FLAGS: Final[tuple[tuple[str, str | None, Callable[[str], object], object, str], ...]] = (
    (
        "--model-dir",
        contract.ENV_MODEL_DIR,
        Path,
        Path(contract.MODEL_MOUNT),
        "exported model folder (read-only is fine)",
    ),
    (
        "--model-name",
        contract.ENV_MODEL_NAME,
        _model_name,
        "model",
        "the name clients use in /v2/models/<name>",
    ),
    ("--host", None, str, "0.0.0.0", "address to listen on"),
    (
        "--port",
        contract.ENV_HTTP_PORT,
        _bounded_int(0, 65535),
        contract.SERVER_PORT,
        "HTTP port (0: any free port)",
    ),
    (
        "--max-batch-size",
        contract.ENV_MAX_BATCH_SIZE,
        _bounded_int(1, 4096),
        32,
        "rows per forward pass, at most",
    ),
    (
        "--max-delay-ms",
        contract.ENV_MAX_DELAY_MS,
        _delay_ms,
        5.0,
        "longest wait for a batch to fill, in milliseconds",
    ),
    (
        "--max-request-bytes",
        contract.ENV_MAX_REQUEST_BYTES,
        _bounded_int(1024, 1 << 31),
        8 * 1024 * 1024,
        "body limit",
    ),
    ("--device", ENV_DEVICE, _device, "auto", "auto (cuda when available), cpu or cuda"),
    (
        "--auth",
        contract.ENV_AUTH,
        _auth_mode,
        contract.AUTH_NONE,
        f"credential the model routes require (the key from {contract.ENV_API_KEY})",
    ),
    ("--auth-namespace", contract.ENV_AUTH_NAMESPACE, str, None, "the InferenceService's namespace"),
    ("--auth-name", contract.ENV_AUTH_NAME, str, None, "the InferenceService's name (RBAC on it)"),
    (
        "--auth-audiences",
        contract.ENV_AUTH_AUDIENCES,
        _audiences,
        (),
        "comma-separated audiences a caller's token must be issued for (kubernetes)",
    ),
    ("--tls-cert-file", contract.ENV_TLS_CERT_FILE, Path, None, "serve HTTPS with this certificate (PEM)"),
    ("--tls-key-file", contract.ENV_TLS_KEY_FILE, Path, None, "the certificate's private key (PEM)"),
    (
        "--openai",
        contract.ENV_OPENAI,
        _openai_mode,
        "auto",
        "auto (the OpenAI routes for a language model they can serve) or required (fail otherwise)",
    ),
    (
        "--workers",
        contract.ENV_SERVER_WORKERS,
        _bounded_int(0, MAX_WORKERS),
        0,
        "server processes sharing the port, each with its own batcher; 0: one per CPU of the pod's limit",
    ),
    ("--reuse-port", None, _switch, False, "true: share the port with other processes (set for --workers)"),
)


def parse_settings(argv: Sequence[str], environ: Mapping[str, str]) -> ServerSettings:
    """Read the flags, falling back to the environment, then to the defaults."""
    parser = argparse.ArgumentParser(
        prog="python -m aidc_trainer.serving",
        description="Serve an exported aidc model over the Open Inference Protocol v2 (REST).",
    )
    for flag, variable, _, default, text in _FLAGS:
        suffix = f" (env {variable}; default {default})" if variable else f" (default {default})"
        parser.add_argument(flag, default=None, help=text + suffix)
    namespace = vars(parser.parse_args(list(argv)))
    values: dict[str, object] = {}
    for flag, variable, read, default, _ in _FLAGS:
        attribute = flag.removeprefix("--").replace("-", "_")
        raw = namespace[attribute]
        source = flag
        if raw is None and variable is not None and environ.get(variable, "") != "":
            raw, source = environ[variable], variable
        if raw is None:
            values[attribute] = default
            continue
        try:
            values[attribute] = read(raw)
        except ValueError as error:
            raise ConfigError(f"{source}={raw!r}: {error}") from error
    settings = ServerSettings(**values)  # type: ignore[arg-type]
    return _with_credentials(settings, environ)


def _with_credentials(settings: ServerSettings, environ: Mapping[str, str]) -> ServerSettings:
    """The API key from the environment, and the refusal of a security setting that is half there."""
    if settings.auth == contract.AUTH_API_KEY:
        key = environ.get(contract.ENV_API_KEY, "").strip()
        if not key:
            raise ConfigError(f"--auth={contract.AUTH_API_KEY} needs the key in {contract.ENV_API_KEY}")
        settings = replace(settings, api_key=key)
    if settings.auth == contract.AUTH_KUBERNETES and not (settings.auth_namespace and settings.auth_name):
        raise ConfigError(
            f"--auth={contract.AUTH_KUBERNETES} needs --auth-namespace and --auth-name "
            f"({contract.ENV_AUTH_NAMESPACE}, {contract.ENV_AUTH_NAME}): the InferenceService callers "
            "need RBAC on"
        )
    if (settings.tls_cert_file is None) != (settings.tls_key_file is None):
        raise ConfigError("--tls-cert-file and --tls-key-file go together")
    return settings
