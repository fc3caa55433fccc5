"""Probe checks against real sockets, and the thresholds that turn results into a verdict."""

from __future__ import annotations

import http.server
import socket
import threading
from collections.abc import Iterator

import pytest

from aidc_nodeagent.probes import Prober, check


@pytest.fixture
def http_server() -> Iterator[int]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if self.path == "/ok" else 503)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield int(server.server_address[1])
    server.shutdown()


def test_http_get_by_named_port(http_server: int) -> None:
    container = {"ports": [{"name": "http", "containerPort": http_server}]}
    assert check({"httpGet": {"path": "/ok", "port": "http"}}, container, "127.0.0.1", None, {})[0]
    ok, message = check({"httpGet": {"path": "/loading", "port": http_server}}, container, "127.0.0.1", None, {})
    assert not ok and "503" in message


def test_tcp_socket_open_and_closed() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        assert check({"tcpSocket": {"port": port}}, {}, "127.0.0.1", None, {})[0]
    assert not check({"tcpSocket": {"port": port}}, {}, "127.0.0.1", None, {})[0]


def test_thresholds_decide_and_the_period_spaces_checks() -> None:
    prober = Prober(
        "readiness",
        {"periodSeconds": 5, "failureThreshold": 2, "successThreshold": 2, "initialDelaySeconds": 3},
        started=100.0,
    )
    assert not prober.due(102.0) and prober.due(103.0)
    assert prober.record(False, "no", 103.0) is None  # one failure: no verdict yet
    assert not prober.due(107.0) and prober.due(108.0)
    assert prober.record(False, "no", 108.0) is False
    assert prober.record(True, "", 113.0) is False  # one success is not enough with successThreshold 2
    assert prober.record(True, "", 118.0) is True
