"""Server settings: a flag wins over its AIDC_* variable, which wins over the default."""

from __future__ import annotations

from pathlib import Path

import pytest

from aidc_trainer import contract
from aidc_trainer.errors import ConfigError
from aidc_trainer.serving.settings import ServerSettings, parse_settings


def test_defaults_follow_the_operator_contract() -> None:
    settings = parse_settings([], {})
    assert settings == ServerSettings()
    assert (settings.model_dir, settings.port) == (Path(contract.MODEL_MOUNT), contract.SERVER_PORT)
    assert (settings.max_batch_size, settings.max_delay_ms, settings.max_request_bytes) == (32, 5.0, 8388608)


def test_environment_fills_what_flags_leave_out_and_flags_win() -> None:
    environ = {
        "AIDC_MODEL_DIR": "/models/a",
        "AIDC_MODEL_NAME": "from-env",
        "AIDC_HTTP_PORT": "9000",
        "AIDC_MAX_BATCH_SIZE": "8",
        "AIDC_MAX_DELAY_MS": "2.5",
        "AIDC_MAX_REQUEST_BYTES": "65536",
        "AIDC_DEVICE": "cpu",
    }
    from_env = parse_settings([], environ)
    assert from_env == ServerSettings(Path("/models/a"), "from-env", "0.0.0.0", 9000, 8, 2.5, 65536, "cpu")
    from_flags = parse_settings(["--model-name", "digits", "--max-batch-size", "1", "--max-delay-ms", "0"], environ)
    assert (from_flags.model_name, from_flags.max_batch_size, from_flags.max_delay_ms) == ("digits", 1, 0.0)
    assert from_flags.port == 9000


@pytest.mark.parametrize(
    ("argv", "environ", "message"),
    [
        (["--max-batch-size", "0"], {}, "--max-batch-size='0': must be in [1, 4096]"),
        ([], {"AIDC_MAX_BATCH_SIZE": "many"}, "AIDC_MAX_BATCH_SIZE='many'"),
        (["--max-delay-ms", "-1"], {}, "--max-delay-ms='-1'"),
        (["--port", "70000"], {}, "--port='70000'"),
        (["--max-request-bytes", "10"], {}, "--max-request-bytes='10'"),
        (["--model-name", "a/b"], {}, "--model-name='a/b'"),
        ([], {"AIDC_DEVICE": "tpu"}, "AIDC_DEVICE='tpu': must be one of auto, cpu, cuda"),
        ([], {"AIDC_SERVER_WORKERS": "-1"}, "AIDC_SERVER_WORKERS='-1': must be in [0, 256]"),
        (["--reuse-port", "yes"], {}, "--reuse-port='yes': must be true or false"),
    ],
)
def test_bad_values_are_config_errors_naming_where_they_came_from(
    argv: list[str], environ: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError) as refused:
        parse_settings(argv, environ)
    assert message in str(refused.value)
    assert refused.value.exit_code == contract.EXIT_CONFIG_ERROR


def test_workers_come_from_the_environment_and_default_to_the_cpu_limit() -> None:
    assert parse_settings([], {}).workers == 0  # 0: one per CPU, chosen at start-up (workers.py)
    assert parse_settings([], {contract.ENV_SERVER_WORKERS: "3"}).workers == 3
    assert parse_settings(["--workers", "1"], {contract.ENV_SERVER_WORKERS: "3"}).workers == 1
