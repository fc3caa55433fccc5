"""Where the server listens: an aiohttp site whose connections start at the front door.

aiohttp's ``TCPSite`` hands each new connection to aiohttp's request handler. This site hands it
to ``front_door.Visit`` instead, which answers infer requests itself and passes the connection on
to the same runner's request handler for anything else, so the runner still owns every route,
its middlewares and its graceful shutdown. Stopping the site drains the front door's connections
before the runner drains aiohttp's.
"""

from __future__ import annotations

import asyncio
import ssl

from aiohttp import web

from aidc_trainer.serving.auth import Gate
from aidc_trainer.serving.front_door import KEEPALIVE_SECONDS, FrontDoor, Visit
from aidc_trainer.serving.state import ServingState


class FrontDoorSite(web.BaseSite):
    """A TCP site (host, port, TLS, ``SO_REUSEPORT``) with the front door in front of aiohttp."""

    def __init__(
        self,
        runner: web.BaseRunner,
        state: ServingState,
        gate: Gate | None,
        host: str | None,
        port: int,
        *,
        ssl_context: ssl.SSLContext | None = None,
        reuse_port: bool | None = None,
        drain_seconds: float = 20.0,
        keepalive_seconds: float = KEEPALIVE_SECONDS,
    ) -> None:
        super().__init__(runner, ssl_context=ssl_context)
        self.state, self.gate, self.host, self.port = state, gate, host, port
        self.reuse_port, self.drain_seconds, self.keepalive_seconds = (
            reuse_port,
            drain_seconds,
            keepalive_seconds,
        )
        self.door: FrontDoor | None = None

    @property
    def name(self) -> str:
        scheme = "https" if self._ssl_context else "http"
        return f"{scheme}://{self.host or '0.0.0.0'}:{self.port}"

    async def start(self) -> None:
        await super().start()  # registers the site with the runner
        aiohttp = self._runner.server
        assert aiohttp is not None, "the runner is set up before its sites start"
        door = self.door = FrontDoor(self.state, self.gate, aiohttp, self.keepalive_seconds)
        self._server = await asyncio.get_running_loop().create_server(
            lambda: Visit(door),
            self.host,
            self.port,
            ssl=self._ssl_context,
            backlog=self._backlog,
            reuse_port=self.reuse_port,
        )
        door.open()

    async def stop(self) -> None:
        await super().stop()  # stops listening
        if self.door is not None:
            await self.door.drain(self.drain_seconds)
