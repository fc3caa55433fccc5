"""The API server over aiohttp, on the operator's event loop: one session, one error policy.

Everything the operator writes or lists, and the rank pod watch, goes through here (kopf keeps
its own client for the watches of the custom resources). ``request`` is the policy: the API
server's throttling (429, after its Retry-After) and its transient errors (5xx) are tried again
a few times; any other error answer raises ``ApiError`` with the server's reason, for the caller
to say what a 404 or a 409 means to it. Address, TLS and credentials come from the official
client's configuration, so both reach the same server as the same user.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from typing import Any

import aiohttp
from kubernetes import client

REQUEST_TIMEOUT = aiohttp.ClientTimeout(total=60, sock_connect=30)
RETRIED_STATUSES = frozenset({429, 500, 502, 503, 504})
ATTEMPTS = 3
# the longest Retry-After honoured: a pass waits this long at most before it is given up on
MAX_RETRY_AFTER_SECONDS = 10.0


class ApiError(Exception):
    """The API server answered with an error (after the retries of ``ApiServer.request``)."""

    def __init__(self, status: int, answer: bytes) -> None:
        self.status = status
        try:
            decoded = json.loads(answer)
        except ValueError:
            decoded = None
        details = decoded if isinstance(decoded, dict) else {}
        self.reason = str(details.get("reason") or "")  # Conflict, Forbidden, Invalid, NotFound, ...
        self.message = str(details.get("message") or self.reason or answer[:300].decode(errors="replace"))
        super().__init__(f"HTTP {status}: {self.message}")


def _retry_after(headers: Any, attempt: int) -> float:
    """Seconds before the next attempt: the server's Retry-After when it sent one, else a short backoff."""
    try:
        seconds = float(headers.get("Retry-After", ""))
    except ValueError:
        seconds = 0.5 * 2**attempt
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_SECONDS)


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

    async def request(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None,
        content_type: str = "application/json",
        params: dict[str, str] | None = None,
        accept: str | None = None,
    ) -> bytes:
        """The answer to one request under the error policy (see the module); raises ApiError."""
        for attempt in range(ATTEMPTS):
            status, answer, headers = await self._send(method, path, body, content_type, params, accept)
            if 200 <= status <= 299:
                return answer
            if status not in RETRIED_STATUSES or attempt == ATTEMPTS - 1:
                break
            await asyncio.sleep(_retry_after(headers, attempt))
        raise ApiError(status, answer)

    async def _send(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None,
        content_type: str,
        params: dict[str, str] | None,
        accept: str | None,
    ) -> tuple[int, bytes, Any]:
        """One request, with a JSON body unless ``body`` is None: the status, the raw answer, the headers."""
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
            return response.status, await response.read(), response.headers

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
