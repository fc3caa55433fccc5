"""One replica leads, the others wait: kopf and its handlers start only once this process holds the Lease.

A standby answers its liveness endpoint itself (kopf's is not running yet), so the kubelet lets it
wait. Once leading, the lease is renewed beside kopf on the same event loop; if it is lost, the
process exits at once with ``LEASE_LOST_EXIT_CODE``, before another replica may take over: no
worker makes another pass, and the kubelet restarts the container as a standby. A graceful stop
(SIGTERM: a rolling update, a drain) lets kopf finish, then frees the lease, so a standby takes
over at its next try instead of after the lease duration.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Awaitable, Callable

from aiohttp import web

from aidc.management.apiserver import ApiServer
from aidc.management.leader_election import LeaderElector, LeaseTimings
from aidc.runtime.assembly import api_configuration
from aidc.settings import OperatorSettings

log = logging.getLogger(__name__)

LEASE_LOST_EXIT_CODE = 3
RELEASE_TIMEOUT_SECONDS = 5.0


def lease_candidate(settings: OperatorSettings) -> LeaderElector:
    """This process as a candidate for the settings' Lease, over a small client of its own."""
    timings = LeaseTimings(
        settings.lease_duration_seconds, settings.lease_renew_deadline_seconds, settings.lease_retry_period_seconds
    )
    timings.check()
    if not settings.lease_namespace:
        raise ValueError("leader election needs the Lease's namespace: AIDC_LEASE_NAMESPACE or POD_NAMESPACE")
    server = ApiServer(api_configuration(), max_requests=2)
    return LeaderElector(server, settings.lease_namespace, settings.lease_name, settings.leader_identity, timings)


async def _standby_liveness(port: int, elector: LeaderElector) -> web.AppRunner:
    """/healthz while waiting for the lease: alive, and who leads (kopf serves /healthz once leading)."""

    async def healthz(_: web.Request) -> web.Response:
        holder = elector.observed.holder if elector.observed is not None else None
        return web.json_response({"leader": False, "identity": elector.identity, "holder": holder})

    app = web.Application()
    app.add_routes([web.get("/healthz", healthz)])
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    await web.TCPSite(runner, "0.0.0.0", port).start()  # the kubelet probes the pod's IP
    return runner


def _exit_when_lost(holding: asyncio.Task[None]) -> None:
    """The renewal ended on its own: the lease is lost (or renewing broke). Nothing more may be written."""
    if holding.cancelled():
        return
    error = holding.exception()
    log.critical("leadership lost%s: exiting so no second replica reconciles", f" ({error!r})" if error else "")
    logging.shutdown()  # flush the logs; os._exit skips every other handler and finaliser on purpose
    os._exit(LEASE_LOST_EXIT_CODE)


async def lead(elector: LeaderElector, operate: Callable[[asyncio.Event], Awaitable[None]], health_port: int) -> None:
    """Waits for the lease (SIGTERM/SIGINT end the wait), then runs ``operate(stop)`` while holding it.

    ``operate`` is kopf's operator, given ``stop`` as its stop flag; kopf replaces these signal
    handlers with its own when it starts, and sets ``stop`` no more.
    """
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    standby = await _standby_liveness(health_port, elector) if health_port else None
    log.info("%s waits for the lease %s/%s", elector.identity, elector.namespace, elector.name)
    try:
        leading = await elector.acquire(stop)
    finally:
        if standby is not None:
            await standby.cleanup()  # frees the port for kopf's liveness endpoint
    if not leading:
        return
    holding = asyncio.create_task(elector.hold(), name="lease renewal")
    holding.add_done_callback(_exit_when_lost)
    try:
        await operate(stop)
    finally:
        holding.remove_done_callback(_exit_when_lost)
        holding.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await holding
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(elector.release(), timeout=RELEASE_TIMEOUT_SECONDS)
