"""Probing the components' health endpoints while the test bed comes up.

A start waits on what each component says about itself (etcd's /health, the API server's
/readyz, /healthz of the others) rather than on a fixed delay, and a component that exits while
being waited for fails the start at once with the tail of its log.
"""

from __future__ import annotations

import http.client
import ssl
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


class StartError(RuntimeError):
    """A component did not become healthy; the message carries what it logged last."""


def log_tail(path: Path, lines: int = 25) -> str:
    """The last ``lines`` lines of a log file, for error messages."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def poll(
    probe: Callable[[], T | None],
    *,
    timeout: float,
    what: str,
    interval: float = 0.2,
    abort: Callable[[], str | None] = lambda: None,
) -> T:
    """Call ``probe`` until it returns something other than None; fail after ``timeout`` seconds.

    ``abort`` returns a reason to give up early (a component that died) or None.
    """
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        reason = abort()
        if reason is not None:
            raise StartError(f"{what}: {reason}")
        try:
            result = probe()
        except Exception as error:  # any failure of a probe means "not yet"
            last_error, result = error, None
        if result is not None:
            return result
        if time.monotonic() > deadline:
            raise StartError(f"{what}: not ready after {timeout:.0f}s (last error: {last_error!r})")
        time.sleep(interval)


def http_get(url_host: str, port: int, path: str, *, tls: ssl.SSLContext | None = None) -> tuple[int, str]:
    """GET ``path`` on ``url_host:port`` (HTTPS when ``tls`` is given); return status and body."""
    connection: http.client.HTTPConnection
    if tls is None:
        connection = http.client.HTTPConnection(url_host, port, timeout=5)
    else:
        connection = http.client.HTTPSConnection(url_host, port, timeout=5, context=tls)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read().decode(errors="replace")
    finally:
        connection.close()


def client_tls(ca_cert: Path, client_cert: Path | None = None, client_key: Path | None = None) -> ssl.SSLContext:
    """A TLS context that trusts ``ca_cert`` and presents the client certificate, if any."""
    context = ssl.create_default_context(cafile=str(ca_cert))
    if client_cert is not None:
        context.load_cert_chain(str(client_cert), str(client_key) if client_key else None)
    return context


def ok_or_none(status_and_body: tuple[int, str]) -> str | None:
    """The body of a 200 answer, None for anything else (the probe is not ready yet)."""
    status, body = status_and_body
    return body if status == 200 else None
