"""Free loopback ports, picked when a test bed starts.

Nothing is pinned, so two test beds (a developer's and a test session's) run side by side and a
port left in use by something else never stops a start.
"""

from __future__ import annotations

import socket


def free_ports(count: int) -> list[int]:
    """``count`` distinct TCP ports on 127.0.0.1 that were free a moment ago.

    All sockets stay open until every port is chosen, so the kernel cannot hand out one twice.
    """
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()
