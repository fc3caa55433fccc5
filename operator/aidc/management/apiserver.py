"""The API server over aiohttp, on the operator's event loop, for what happens once per pod.

The official client is synchronous: each call was a hand-off to a worker thread and back, and
its typed methods validate their arguments with pydantic and turn bodies into the client's
models and back. In a burst of gangs that was a fifth of the operator's CPU. The calls made per
pod or per job -- creates, status merge-patches, events, the check of overdue pods -- and the
rank pod watch go through here; the rare ones (server-side apply, deletions, pod groups'
discovery) stay on the client.
Address, TLS and credentials come from the client's own configuration, so both reach the same
server as the same user.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from typing import Any

import aiohttp
from kubernetes import client

REQUEST_TIMEOUT = aiohttp.ClientTimeout(total=60, sock_connect=30)


class ApiServer:
    """One aiohttp session to the API server; ``max_requests`` bounds the requests in flight."""

    def __init__(self, configuration: client.Configuration, max_requests: int) -> None:
        self.configuration = configuration
        self.host = configuration.host.rstrip("/")
        context: ssl.SSLContext | bool = False
        if self.host.startswith("https"):
            context = ssl.create_default_context(cafile=configuration.ssl_ca_cert)
            if configuration.cert_file:
                context.load_cert_chain(configuration.cert_file, configuration.key_file)
            if not configuration.verify_ssl:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
        self.ssl = context
        self.server_hostname: str | None = getattr(configuration, "tls_server_name", None) or None
        self._max_requests = max_requests
        self._requests: asyncio.Semaphore | None = None
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        """Made on first use, on the running loop. No connection limit: watches hold theirs for minutes."""
        if self._session is None:
            self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        return self._session

    def headers(self, content_type: str | None = None) -> dict[str, str]:
        """Credentials asked for on every request (an in-cluster token is refreshed by the client)."""
        headers = {"Accept": "application/json"}
        if content_type:
            headers["Content-Type"] = content_type
        schemes: Any = self.configuration.auth_settings()  # a TypedDict of optional schemes
        for scheme in schemes.values():
            if scheme.get("in") == "header" and scheme.get("value"):
                headers[str(scheme["key"])] = str(scheme["value"])
        return headers

    def stream(self, path: str, params: dict[str, str], timeout: aiohttp.ClientTimeout) -> Any:
        """``async with server.stream(...) as response``: a GET whose body is read as it comes (lists, watches)."""
        return self.session.get(
            self.host + path,
            params=params,
            headers=self.headers(),
            ssl=self.ssl,
            server_hostname=self.server_hostname,
            timeout=timeout,
        )

    async def send(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None,
        content_type: str = "application/json",
        params: dict[str, str] | None = None,
        accept: str | None = None,
    ) -> tuple[int, bytes]:
        """One request, with a JSON body unless ``body`` is None; the status and the raw answer
        (callers decide what an error is)."""
        if self._requests is None:
            self._requests = asyncio.Semaphore(self._max_requests)
        headers = self.headers(content_type if body is not None else None)
        if accept:
            headers["Accept"] = accept
        async with (
            self._requests,
            self.session.request(
                method,
                self.host + path,
                params=params,
                data=json.dumps(body, separators=(",", ":")).encode() if body is not None else None,
                headers=headers,
                ssl=self.ssl,
                server_hostname=self.server_hostname,
                timeout=REQUEST_TIMEOUT,
            ) as response,
        ):
            return response.status, await response.read()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
