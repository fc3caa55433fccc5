"""The ``kubernetes`` Service inside each pod: what kube-proxy would do for that one Service.

In-cluster clients find the API server at ``KUBERNETES_SERVICE_HOST:KUBERNETES_SERVICE_PORT``
(the Service's cluster IP, 10.96.0.1:443 here) and check its certificate, which names that
address. The test bed's API server listens on loopback only, which a pod's own network namespace
cannot reach, so the agent puts the Service's address on each pod's loopback and listens there,
*inside* the pod's namespace (a socket keeps the namespace it was made in), relaying every
connection to the real API server. Nothing changes on the host, and TLS is end to end.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import selectors
import socket
import threading
from pathlib import Path

_log = logging.getLogger(__name__)
CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def listen_in_namespace(netns: Path, host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` inside the network namespace at ``netns``."""
    made: dict[str, socket.socket | BaseException] = {}

    def make() -> None:  # a throwaway thread: setns changes only the calling thread's namespace
        try:
            fd = os.open(netns, os.O_RDONLY)
            try:
                if _libc.setns(fd, CLONE_NEWNET) != 0:
                    errno = ctypes.get_errno()
                    raise OSError(errno, f"setns {netns}: {os.strerror(errno)}")
            finally:
                os.close(fd)
            listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind((host, port))
            listener.listen(64)
            listener.setblocking(False)
            made["socket"] = listener
        except BaseException as error:
            made["error"] = error

    thread = threading.Thread(target=make, name="aidc-setns")
    thread.start()
    thread.join()
    if "error" in made:
        raise made["error"]  # type: ignore[misc]
    return made["socket"]  # type: ignore[return-value]


def _pump(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)


def _relay(client: socket.socket, upstream: tuple[str, int]) -> None:
    try:
        server = socket.create_connection(upstream, timeout=10)
    except OSError as error:
        _log.warning("API server unreachable for a pod: %s", error)
        client.close()
        return
    server.settimeout(None)
    client.setblocking(True)
    back = threading.Thread(target=_pump, args=(server, client), daemon=True, name="aidc-apiservice")
    back.start()
    _pump(client, server)
    back.join()
    client.close()
    server.close()


class ApiService:
    """Per-pod listeners for the ``kubernetes`` Service, relayed to ``upstream`` (host, port)."""

    def __init__(self, address: str, port: int, upstream: tuple[str, int]) -> None:
        self.address = address
        self.port = port
        self._upstream = upstream
        self._selector = selectors.DefaultSelector()
        self._listeners: dict[str, socket.socket] = {}
        self._lock = threading.Lock()
        self._wakeup_r, self._wakeup_w = socket.socketpair()
        self._selector.register(self._wakeup_r, selectors.EVENT_READ)
        self._thread = threading.Thread(target=self._serve, daemon=True, name="aidc-apiservice-accept")
        self._thread.start()

    def open(self, uid: str, netns: Path) -> None:
        """Listen for the Service inside pod ``uid``'s network namespace."""
        listener = listen_in_namespace(netns, self.address, self.port)
        self.close(uid)
        with self._lock:
            self._listeners[uid] = listener
            self._selector.register(listener, selectors.EVENT_READ)
        self._wakeup_w.send(b"x")

    def close(self, uid: str) -> None:
        with self._lock:
            listener = self._listeners.pop(uid, None)
            if listener is not None:
                with contextlib.suppress(KeyError, ValueError):
                    self._selector.unregister(listener)
                listener.close()

    def _serve(self) -> None:
        while True:
            for key, _ in self._selector.select():
                if key.fileobj is self._wakeup_r:
                    self._wakeup_r.recv(64)
                    continue
                listener = key.fileobj
                assert isinstance(listener, socket.socket)
                try:
                    client, _ = listener.accept()
                except (BlockingIOError, OSError):
                    continue
                threading.Thread(
                    target=_relay, args=(client, self._upstream), daemon=True, name="aidc-apiservice"
                ).start()
