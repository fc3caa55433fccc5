"""Asking the API server who holds a bearer token and whether they may infer (the kube-rbac-proxy model).

The image must not depend on the ``kubernetes`` package, so this is two POSTs over aiohttp: a
TokenReview (who is this?) and a SubjectAccessReview (may they ``create`` the ``infer``
subresource of this InferenceService?). In a pod the address, token and CA are the in-cluster
ones; tests inject a bed's own. The token file is read again every minute because the kubelet
rotates projected tokens.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import aiohttp

from aidc_trainer import contract

SERVICE_ACCOUNT_DIR: Final = Path("/var/run/secrets/kubernetes.io/serviceaccount")
# Overrides of the in-cluster address, token and CA (a server run outside a pod, the tests).
ENV_KUBE_API_URL: Final = "AIDC_KUBE_API_URL"
ENV_KUBE_TOKEN_FILE: Final = "AIDC_KUBE_TOKEN_FILE"
ENV_KUBE_CA_FILE: Final = "AIDC_KUBE_CA_FILE"
TOKEN_REREAD_SECONDS: Final = 60.0
REVIEW_TIMEOUT_SECONDS: Final = 10.0


class ReviewUnavailableError(Exception):
    """The API server could not answer: neither allowed nor denied, so nothing is cached."""


@dataclass(frozen=True)
class ApiServerAddress:
    """Where the reviews go and with which credentials."""

    url: str
    token_file: Path
    ca_file: Path | None


def api_server_address(environ: Mapping[str, str]) -> ApiServerAddress:
    """The in-cluster API server (KUBERNETES_SERVICE_HOST/PORT) unless the AIDC_KUBE_* overrides are set."""
    url = environ.get(ENV_KUBE_API_URL, "")
    if not url:
        host = environ.get("KUBERNETES_SERVICE_HOST", "kubernetes.default.svc")
        port = environ.get("KUBERNETES_SERVICE_PORT", "443")
        url = f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"
    ca = environ.get(ENV_KUBE_CA_FILE, "") or str(SERVICE_ACCOUNT_DIR / "ca.crt")
    token = environ.get(ENV_KUBE_TOKEN_FILE, "") or str(SERVICE_ACCOUNT_DIR / "token")
    return ApiServerAddress(url.rstrip("/"), Path(token), Path(ca))


@dataclass(frozen=True)
class Caller:
    """The user a TokenReview found (what a SubjectAccessReview needs of them)."""

    username: str
    uid: str
    groups: tuple[str, ...]
    extra: Mapping[str, tuple[str, ...]]


class AccessReviews:
    """The TokenReview and SubjectAccessReview calls, over one aiohttp session opened on first use."""

    def __init__(self, address: ApiServerAddress) -> None:
        self.address = address
        self._session: aiohttp.ClientSession | None = None
        self._token = ""
        self._token_read = float("-inf")

    def _bearer(self) -> str:
        if time.monotonic() - self._token_read > TOKEN_REREAD_SECONDS:
            self._token = self.address.token_file.read_text().strip()
            self._token_read = time.monotonic()
        return self._token

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None:
            ca = str(self.address.ca_file) if self.address.ca_file else None
            context = ssl.create_default_context(cafile=ca)
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=context),
                timeout=aiohttp.ClientTimeout(total=REVIEW_TIMEOUT_SECONDS),
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _post(self, path: str, review: dict[str, Any]) -> dict[str, Any]:
        try:
            headers = {"Authorization": f"Bearer {self._bearer()}"}
            async with self._open().post(self.address.url + path, json=review, headers=headers) as response:
                if response.status not in (200, 201):
                    text = (await response.text())[:300]
                    raise ReviewUnavailableError(f"{path} answered {response.status}: {text}")
                answer: dict[str, Any] = await response.json()
                return answer
        except (aiohttp.ClientError, TimeoutError, OSError) as error:
            raise ReviewUnavailableError(f"{path}: {type(error).__name__}: {error}") from error

    async def authenticate(self, token: str, audiences: Sequence[str] = ()) -> Caller | None:
        """The token's user, or None when the API server does not accept the token.

        With ``audiences`` the token must have been issued for one of them (the API server checks,
        and so do we: ``status.audiences`` is what the token and the review have in common).
        """
        spec: dict[str, Any] = {"token": token}
        if audiences:
            spec["audiences"] = list(audiences)
        review = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": spec}
        status = (await self._post("/apis/authentication.k8s.io/v1/tokenreviews", review)).get("status") or {}
        if not status.get("authenticated"):
            return None
        if audiences and not set(audiences) & set(status.get("audiences") or ()):
            return None
        user = status.get("user") or {}
        return Caller(
            username=str(user.get("username", "")),
            uid=str(user.get("uid", "")),
            groups=tuple(user.get("groups") or ()),
            extra={k: tuple(v) for k, v in (user.get("extra") or {}).items()},
        )

    async def may_infer(self, caller: Caller, namespace: str, name: str) -> bool:
        """Whether RBAC lets ``caller`` create ``inferenceservices/infer`` on ``namespace/name``."""
        spec: dict[str, Any] = {
            "user": caller.username,
            "groups": list(caller.groups),
            "extra": {k: list(v) for k, v in caller.extra.items()},
            "resourceAttributes": {
                "namespace": namespace,
                "verb": "create",
                "group": contract.GROUP,
                "resource": "inferenceservices",
                "subresource": contract.INFER_SUBRESOURCE,
                "name": name,
            },
        }
        if caller.uid:
            spec["uid"] = caller.uid
        review = {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview", "spec": spec}
        answer = await self._post("/apis/authorization.k8s.io/v1/subjectaccessreviews", review)
        status = answer.get("status") or {}
        return bool(status.get("allowed"))
