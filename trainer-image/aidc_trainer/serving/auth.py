"""Who may call the model routes: anyone, holders of one API key, or Kubernetes identities RBAC allows.

The check is a middleware in front of every route except the health probes and ``/metrics``, so
a route added later is closed by default; the front door (``front_door``), which answers infer
requests before aiohttp sees them, makes the same check through :func:`refusal`. A missing or
wrong credential is a 401 with ``WWW-Authenticate: Bearer``; a valid Kubernetes identity without
the RBAC grant is a 403. Error bodies never carry model output: the handler is not reached.
Kubernetes decisions (both ways) are cached for a short while, bounded in size and keyed by a hash
of the token, so a busy client costs two API calls every ``ttl`` seconds instead of two per request.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Final, Protocol

from aiohttp import web
from aiohttp.typedefs import Middleware

from aidc_trainer.serving.access_review import AccessReviews, ReviewUnavailableError

# The kubelet's probes and Prometheus carry no credential; none of these serve model data.
OPEN_PATHS: Final = frozenset({"/v2/health/live", "/v2/health/ready", "/metrics"})
DECISION_TTL_SECONDS: Final = 30.0
DECISION_CACHE_SIZE: Final = 4096
CHALLENGE: Final = 'Bearer realm="aidc-model-server"'
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class AccessRefusedError(Exception):
    """Why a request may not reach a model route, as the HTTP status it answers with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


class Gate(Protocol):
    """Admits a bearer credential or raises :class:`AccessRefusedError`."""

    async def admit(self, credential: str) -> None: ...

    async def close(self) -> None: ...


class ApiKeyGate:
    """One shared key, compared in constant time so its bytes cannot be guessed one by one."""

    def __init__(self, key: str) -> None:
        self._key = hashlib.sha256(key.encode()).digest()

    async def admit(self, credential: str) -> None:
        if not hmac.compare_digest(hashlib.sha256(credential.encode()).digest(), self._key):
            raise AccessRefusedError(401, "invalid credential")

    async def close(self) -> None:
        return None


class DecisionCache:
    """Recent outcomes by token hash (None: admitted, else the refusal), oldest dropped first."""

    def __init__(self, ttl: float = DECISION_TTL_SECONDS, size: int = DECISION_CACHE_SIZE) -> None:
        self.ttl, self.size = ttl, size
        self._entries: OrderedDict[bytes, tuple[float, AccessRefusedError | None]] = OrderedDict()

    def get(self, key: bytes) -> tuple[AccessRefusedError | None] | None:
        """``(outcome,)`` while fresh, None when unknown or expired."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        if time.monotonic() >= entry[0]:
            del self._entries[key]
            return None
        return (entry[1],)

    def put(self, key: bytes, outcome: AccessRefusedError | None) -> None:
        self._entries[key] = (time.monotonic() + self.ttl, outcome)
        self._entries.move_to_end(key)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)


class KubernetesGate:
    """A TokenReview, then a SubjectAccessReview for ``create`` on ``inferenceservices/infer``."""

    def __init__(
        self,
        reviews: AccessReviews,
        namespace: str,
        name: str,
        cache: DecisionCache | None = None,
        audiences: tuple[str, ...] = (),
    ) -> None:
        self.reviews, self.namespace, self.name, self.audiences = reviews, namespace, name, audiences
        self.cache = cache or DecisionCache()
        # a burst of requests with one new token waits on one pair of reviews, not one pair each
        self._pending: dict[bytes, asyncio.Future[AccessRefusedError | None]] = {}

    async def admit(self, credential: str) -> None:
        key = hashlib.sha256(credential.encode()).digest()
        cached = self.cache.get(key)
        if cached is not None:
            (outcome,) = cached
        else:
            pending = self._pending.get(key)
            if pending is None:
                pending = self._pending[key] = asyncio.ensure_future(self._decide(credential))
                pending.add_done_callback(lambda _: self._pending.pop(key, None))
            outcome = await asyncio.shield(pending)
            self.cache.put(key, outcome)
        if outcome is not None:
            raise outcome

    async def _decide(self, credential: str) -> AccessRefusedError | None:
        try:
            caller = await self.reviews.authenticate(credential, self.audiences)
            if caller is None:
                return AccessRefusedError(401, "invalid credential")
            if await self.reviews.may_infer(caller, self.namespace, self.name):
                return None
        except ReviewUnavailableError as error:  # neither yes nor no: not cached, the client may retry
            raise AccessRefusedError(503, "the credential cannot be verified right now") from error
        return AccessRefusedError(
            403,
            f"{caller.username} may not create inferenceservices/infer on {self.namespace}/{self.name}",
        )

    async def close(self) -> None:
        await self.reviews.close()


def bearer_credential(authorization: str | None) -> str | None:
    """The credential of an ``Authorization: Bearer <credential>`` header's value, or None."""
    scheme, _, credential = (authorization or "").partition(" ")
    credential = credential.strip()
    return credential if scheme.lower() == "bearer" and credential else None


async def refusal(gate: Gate, authorization: str | None) -> AccessRefusedError | None:
    """Why a request with this ``Authorization`` header may not reach a model route, or None."""
    credential = bearer_credential(authorization)
    if credential is None:
        return AccessRefusedError(401, "requires Authorization: Bearer <credential>")
    try:
        await gate.admit(credential)
    except AccessRefusedError as refused:
        return refused
    return None


def refusal_headers(refused: AccessRefusedError) -> dict[str, str]:
    """A 401 names the scheme the client should use (RFC 9110's ``WWW-Authenticate``)."""
    return {"WWW-Authenticate": CHALLENGE} if refused.status == 401 else {}


def auth_middleware(gate: Gate) -> Middleware:
    """The middleware that lets only admitted requests past, except to :data:`OPEN_PATHS`."""

    @web.middleware
    async def require_credential(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in OPEN_PATHS:
            return await handler(request)
        refused = await refusal(gate, request.headers.get("Authorization"))
        if refused is not None:
            return web.json_response(
                {"error": refused.message}, status=refused.status, headers=refusal_headers(refused)
            )
        return await handler(request)

    return require_credential
