"""Authenticated inference and HTTPS, over real HTTP with the numpy stand-in model.

The Kubernetes identity mode is proven against a real API server in
tests/cluster/test_inference_auth.py; here are the API key, the open health routes, the
refusals (401 with a challenge, no model output), the decision cache and TLS.
"""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from aidc_trainer.errors import ConfigError
from aidc_trainer.serving.access_review import Caller, api_server_address
from aidc_trainer.serving.auth import (
    AccessRefusedError,
    ApiKeyGate,
    DecisionCache,
    KubernetesGate,
)
from aidc_trainer.serving.server import access_gate, tls_context
from aidc_trainer.serving.settings import parse_settings
from tests.serving.harness import ScaleServable, in_process_server, loaded, start_process

KEY = "sk-test-0123456789abcdef"
ROW = {"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}
MODEL_ROUTES = [
    ("GET", "/v2"),
    ("GET", "/v2/models/m"),
    ("GET", "/v2/models/m/ready"),
    ("GET", "/v2/models/m/versions/1"),
    ("POST", "/v2/models/m/infer"),
    ("POST", "/v1/models/m:predict"),
    ("GET", "/v2/models/other"),  # a refusal must not even say which model is served
    ("GET", "/no/such/route"),
]


async def _call(
    session: aiohttp.ClientSession, method: str, path: str, token: str | None = None
) -> tuple[int, dict[str, str], bytes]:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    body = {"instances": [[1, 2, 3]]} if path.endswith(":predict") else {"inputs": [ROW]}
    async with session.request(method, path, headers=headers, json=body if method == "POST" else None) as answer:
        return answer.status, dict(answer.headers), await answer.read()


def _with_key(check: Any) -> None:
    async def scenario() -> None:
        async with in_process_server(loaded(ScaleServable()), gate=ApiKeyGate(KEY)) as server:
            await asyncio.wait_for(server.loading, 30)
            async with aiohttp.ClientSession(server.url) as session:
                await check(session, server)

    asyncio.run(scenario())


@pytest.mark.parametrize("token", [None, "", "wrong", KEY[:-1], KEY + "x", KEY.upper()], ids=repr)
def test_every_model_route_refuses_a_missing_or_wrong_key_with_a_challenge(token: str | None) -> None:
    async def check(session: aiohttp.ClientSession, server: Any) -> None:
        for method, path in MODEL_ROUTES:
            status, headers, body = await _call(session, method, path, token)
            assert status == 401, (method, path)
            assert headers["WWW-Authenticate"].startswith("Bearer"), (method, path)
            text = body.decode()
            assert "scaled" not in text and "predictions" not in text and "outputs" not in text
            assert "'m'" not in text and "scale" not in text  # neither output nor what is served
        assert server.state.metrics.registry.get_sample_value(
            "aidc_server_requests_total", {"endpoint": "/v2/models/{model}/infer", "code": "401"}
        )

    _with_key(check)


def test_the_right_key_reaches_every_route_and_health_stays_open() -> None:
    async def check(session: aiohttp.ClientSession, server: Any) -> None:
        status, _, body = await _call(session, "POST", "/v2/models/m/infer", KEY)
        assert status == 200 and b'"scaled"' in body
        status, _, body = await _call(session, "POST", "/v1/models/m:predict", KEY)
        assert status == 200 and b"predictions" in body
        assert (await _call(session, "GET", "/v2/models/m", KEY))[0] == 200
        assert (await _call(session, "GET", "/v2/models/m/infer", "bearer-scheme-is-not-case-sensitive"))[0] == 401
        for path in ("/v2/health/live", "/v2/health/ready", "/metrics"):
            assert (await _call(session, "GET", path))[0] == 200, path

    _with_key(check)


def test_the_bearer_scheme_is_matched_without_case_and_other_schemes_are_refused() -> None:
    async def check(session: aiohttp.ClientSession, server: Any) -> None:
        for header, expected in ((f"bearer {KEY}", 200), (f"Basic {KEY}", 401), (KEY, 401)):
            async with session.get("/v2/models/m", headers={"Authorization": header}) as answer:
                assert answer.status == expected, header

    _with_key(check)


class _Reviews:
    """The two review calls with fixed answers, counted: what the cache must save."""

    def __init__(self, users: dict[str, str], allowed: set[str]) -> None:
        self.users, self.allowed = users, allowed
        self.calls: list[str] = []

    async def authenticate(self, token: str, audiences: tuple[str, ...] = ()) -> Caller | None:
        self.calls.append("token")
        await asyncio.sleep(0.01)  # an API call takes a while: other requests arrive meanwhile
        user = self.users.get(token)
        return None if user is None else Caller(user, "", ("system:authenticated",), {})

    async def may_infer(self, caller: Caller, namespace: str, name: str) -> bool:
        self.calls.append("access")
        return caller.username in self.allowed

    async def close(self) -> None:
        return None


@pytest.mark.parametrize(
    ("token", "status", "calls"),
    [("alice-token", None, ["token", "access"]), ("bob-token", 403, ["token", "access"]), ("junk", 401, ["token"])],
)
def test_kubernetes_decisions_are_cached_both_ways(token: str, status: int | None, calls: list[str]) -> None:
    reviews = _Reviews({"alice-token": "alice", "bob-token": "bob"}, {"alice"})
    gate = KubernetesGate(reviews, "ns", "digits")  # type: ignore[arg-type]

    async def twice() -> list[int | None]:
        outcomes: list[int | None] = []
        for _ in range(2):
            try:
                await gate.admit(token)
                outcomes.append(None)
            except AccessRefusedError as refusal:
                outcomes.append(refusal.status)
        return outcomes

    assert asyncio.run(twice()) == [status, status]
    assert reviews.calls == calls  # the second request cost no API call


def test_the_decision_cache_expires_and_stays_bounded() -> None:
    cache = DecisionCache(ttl=0.0, size=2)
    cache.put(b"a", None)
    assert cache.get(b"a") is None  # expired at once
    cache = DecisionCache(ttl=60.0, size=2)
    for key in (b"a", b"b", b"c"):
        cache.put(key, None)
    assert cache.get(b"a") is None and cache.get(b"b") == (None,) and cache.get(b"c") == (None,)


@pytest.mark.parametrize(
    ("argv", "environ", "problem"),
    [
        (["--auth", "api-key"], {}, "AIDC_API_KEY"),
        (["--auth", "api-key"], {"AIDC_API_KEY": "  \n"}, "AIDC_API_KEY"),
        (["--auth", "kubernetes", "--auth-namespace", "ns"], {}, "--auth-name"),
        (["--auth", "password"], {}, "must be one of"),
        (["--tls-cert-file", "/c"], {}, "go together"),
    ],
)
def test_half_a_security_setting_is_a_config_error(argv: list[str], environ: dict[str, str], problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        parse_settings(argv, environ)


def test_the_key_comes_from_the_environment_trimmed_and_never_printed() -> None:
    settings = parse_settings(["--auth", "api-key"], {"AIDC_API_KEY": KEY + "\n"})
    assert settings.api_key == KEY
    assert KEY not in repr(settings)


def test_the_api_server_is_the_in_cluster_one_unless_overridden() -> None:
    address = api_server_address({"KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "6443"})
    assert address.url == "https://[fd00::1]:6443"
    assert str(address.token_file) == "/var/run/secrets/kubernetes.io/serviceaccount/token"
    overridden = api_server_address({"AIDC_KUBE_API_URL": "https://127.0.0.1:1/", "AIDC_KUBE_CA_FILE": "/ca"})
    assert (overridden.url, str(overridden.ca_file)) == ("https://127.0.0.1:1", "/ca")


# --- HTTPS ----------------------------------------------------------------------------------


def test_https_serves_a_client_that_verifies_the_certificate(certificate: tuple[Path, Path]) -> None:
    cert, key = certificate
    settings = parse_settings(["--tls-cert-file", str(cert), "--tls-key-file", str(key)], {})
    trusting = ssl.create_default_context(cafile=str(cert))

    async def scenario() -> None:
        async with in_process_server(
            loaded(ScaleServable()), gate=ApiKeyGate(KEY), ssl_context=tls_context(settings)
        ) as server:
            assert server.url.startswith("https://localhost:")
            await asyncio.wait_for(server.loading, 30)
            async with aiohttp.ClientSession(server.url, connector=aiohttp.TCPConnector(ssl=trusting)) as session:
                assert (await _call(session, "GET", "/v2/health/ready"))[0] == 200
                status, _, body = await _call(session, "POST", "/v2/models/m/infer", KEY)
                assert status == 200 and b'"scaled"' in body
                assert (await _call(session, "POST", "/v2/models/m/infer", "wrong"))[0] == 401
            async with aiohttp.ClientSession(server.url) as untrusting:  # the system CAs do not know it
                with pytest.raises(aiohttp.ClientConnectorCertificateError):
                    await _call(untrusting, "GET", "/v2/health/live")
            plain = server.url.replace("https://", "http://")
            async with aiohttp.ClientSession(plain) as session:  # plain HTTP gets no answer on that port
                with pytest.raises(aiohttp.ClientError):
                    await _call(session, "GET", "/v2/health/live")

    asyncio.run(scenario())


def test_a_certificate_that_does_not_load_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "tls.crt").write_text("not a certificate")
    (tmp_path / "tls.key").write_text("not a key")
    settings = parse_settings(
        ["--tls-cert-file", str(tmp_path / "tls.crt"), "--tls-key-file", str(tmp_path / "tls.key")], {}
    )
    with pytest.raises(ConfigError, match="cannot load the TLS certificate"):
        tls_context(settings)


def test_the_served_process_takes_its_key_and_certificate_from_the_environment(
    classifier_export: Path, certificate: tuple[Path, Path], tmp_path: Path
) -> None:
    """``python -m aidc_trainer.serving`` as a pod runs it with spec.auth.apiKey and spec.tls."""
    cert, key = certificate
    environment = {
        "AIDC_MODEL_DIR": str(classifier_export),
        "AIDC_AUTH": "api-key",
        "AIDC_API_KEY": KEY,
        "AIDC_TLS_CERT_FILE": str(cert),
        "AIDC_TLS_KEY_FILE": str(key),
    }
    process = start_process(["--model-name", "digits", "--port", "0"], tmp_path / "server.log", env=environment)
    trusting = ssl.create_default_context(cafile=str(cert))

    async def scenario() -> None:
        connector = aiohttp.TCPConnector(ssl=trusting)
        async with aiohttp.ClientSession(process.url, connector=connector) as session:
            for _ in range(600):  # the model loads and warms up: poll the open readiness route
                if (await _call(session, "GET", "/v2/health/ready"))[0] == 200:
                    break
                await asyncio.sleep(0.1)
            assert (await _call(session, "GET", "/v2/models/digits"))[0] == 401
            status, _, body = await _call(session, "GET", "/v2/models/digits", KEY)
            assert status == 200 and b'"inputs"' in body

    try:
        process.wait_listening()
        assert process.url.startswith("https://localhost:")
        asyncio.run(scenario())
        listening = next(r for r in process.read_log() if r.get("message") == "listening")
        assert (listening["scheme"], listening["auth"]) == ("https", "api-key")
        assert KEY not in process.log.read_text()
    finally:
        assert process.stop() == 0


@pytest.mark.parametrize(
    ("argv", "environ", "gate"),
    [
        ([], {}, None),
        (["--auth", "api-key"], {"AIDC_API_KEY": KEY}, ApiKeyGate),
        (["--auth", "kubernetes"], {"AIDC_AUTH_NAMESPACE": "ml", "AIDC_AUTH_NAME": "digits"}, KubernetesGate),
        (
            ["--auth", "kubernetes", "--auth-audiences", "a, b,"],
            {"AIDC_AUTH_NAMESPACE": "ml", "AIDC_AUTH_NAME": "digits"},
            KubernetesGate,
        ),
    ],
)
def test_the_settings_choose_the_gate(argv: list[str], environ: dict[str, str], gate: type | None) -> None:
    chosen = access_gate(parse_settings(argv, environ), environ)
    assert (type(chosen) if chosen is not None else None) is gate
    if isinstance(chosen, KubernetesGate):
        assert (chosen.namespace, chosen.name) == ("ml", "digits")
        assert chosen.audiences == (("a", "b") if "--auth-audiences" in argv else ())


def test_a_burst_with_one_new_token_costs_one_pair_of_reviews() -> None:
    reviews = _Reviews({"alice-token": "alice"}, {"alice"})
    gate = KubernetesGate(reviews, "ns", "digits")  # type: ignore[arg-type]

    async def burst() -> None:
        await asyncio.gather(*(gate.admit("alice-token") for _ in range(20)))

    asyncio.run(burst())
    assert reviews.calls == ["token", "access"]
