"""keyvault_rotation_kit's refresh endpoint, pinged by the real notifier over real sockets.

The service side is the kit's FastAPI router (and its plain ASGI app) served
by uvicorn, reading from the Key Vault emulator through the real SDK; the
rotation side is ``shared.adapters.notifiers.http_ping.HttpPingNotifier``. Bearer
tokens come from a local OpenID issuer so Entra validation runs for real.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import aiohttp
import jwt
import pytest
from azure.core.credentials import AccessToken
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi import FastAPI
from jwt.algorithms import RSAAlgorithm
from keyvault_rotation_kit import (
    CachedSecretClient,
    EntraBearerValidator,
    RefreshASGIApp,
    RefreshEndpoint,
    fastapi_router,
)
from standardwebhooks.webhooks import Webhook
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from kvemulator import KeyVaultEmulator
from shared.adapters.notifiers.http_ping import AsyncTokenSource, HttpPingNotifier
from shared.domain.model import SecretProperties, SecretVersion
from shared.domain.ports import Consumer, RotatedNotice, SecretReader
from tests.support.consumer_app import ServerThread, new_webhook_key

KEY_SECRET = "backend-refresh-hmac-key"
SECRET = "database-connection-string"
TENANT = "11111111-2222-3333-4444-555555555555"
ROTATION_APP = "rotation-app-client-id"
AUDIENCE = "api://backend"


def notice(version: str, rotation_id: str | None = None, secret: str = SECRET) -> RotatedNotice:
    return RotatedNotice(
        vault="kv-test",
        vault_url="https://kv-test.vault.azure.net",
        secret_name=secret,
        version=version,
        previous_version=None,
        rotation_id=rotation_id or f"rot-{uuid.uuid4().hex[:8]}",
        rotated_at=datetime.now(UTC),
        expires_on=None,
        trigger="manual",
    )


@pytest.fixture
async def secrets_client(emulator: KeyVaultEmulator) -> AsyncIterator[CachedSecretClient]:
    async with CachedSecretClient(emulator.async_secret_client(retry_total=0)) as client:
        yield client


@pytest.fixture
async def notifier() -> AsyncIterator[Callable[..., HttpPingNotifier]]:
    made: list[HttpPingNotifier] = []

    def make(reader: Any = None, credential: Any = None) -> HttpPingNotifier:
        n = HttpPingNotifier(hmac_keys=reader, credential=credential, timeout_seconds=5.0, attempts=2,
                             backoff_initial=0.01, backoff_max=0.02, backoff_jitter=0.0)
        made.append(n)
        return n

    yield make
    for n in made:
        await n.close()


class VaultReader(SecretReader):
    """The notifier's SecretReader, on the real SDK against the emulator."""

    def __init__(self, client: CachedSecretClient) -> None:
        self._client = client

    async def get(self, name: str, version: str | None = None) -> SecretVersion:
        secret = await self._client.get(name, use_cache=False)
        return SecretVersion(properties=SecretProperties(name=name, version=secret.version), value=secret.value)


class Service:
    """A FastAPI service using the kit, as the backend would.

    Its Key Vault client is created and closed in the server's own event
    loop (lifespan), never touched from the test's loop; the test only looks
    at plain attributes. ``GET /use`` reads the secret as a request would.
    """

    def __init__(self, emulator: KeyVaultEmulator, *, asgi: bool = False, **endpoint_kwargs: Any) -> None:
        self.client: CachedSecretClient | None = None
        self.endpoint: RefreshEndpoint | None = None
        self.refreshed: list[str] = []

        @contextlib.asynccontextmanager
        async def lifespan(app: Any) -> AsyncIterator[None]:
            async with CachedSecretClient(emulator.async_secret_client(retry_total=0)) as client:
                self.client = client

                async def on_refreshed(secret: Any) -> None:
                    self.refreshed.append(secret.version)

                self.endpoint = RefreshEndpoint(client, allowed_secrets=[SECRET], on_refreshed=on_refreshed,
                                                **endpoint_kwargs)
                if asgi:
                    app.mount("/internal", RefreshASGIApp(self.endpoint, path="/secrets/refresh"))
                else:
                    app.include_router(fastapi_router(self.endpoint))
                yield

        async def use() -> dict[str, str]:
            assert self.client is not None
            return {"version": (await self.client.get(SECRET)).version}

        self.app = FastAPI(lifespan=lifespan)
        self.app.add_api_route("/use", use, methods=["GET"])
        self.server = ServerThread(self.app, lifespan="on")
        self.server.start()
        self.url = self.server.base_url + "/internal/secrets/refresh"

    async def use(self) -> str:
        async with aiohttp.ClientSession() as http, http.get(self.server.base_url + "/use") as response:
            assert response.status == 200
            version: str = (await response.json())["version"]
            return version


@pytest.fixture
def services(emulator: KeyVaultEmulator) -> Iterator[Callable[..., Service]]:
    started: list[Service] = []

    def start(**kwargs: Any) -> Service:
        service = Service(emulator, **kwargs)
        started.append(service)
        return service

    yield start
    for service in started:
        service.server.stop()


async def test_fastapi_router_acknowledges_a_signed_ping_with_the_reread_version(
    emulator: KeyVaultEmulator, secrets_client: CachedSecretClient, notifier: Callable[..., HttpPingNotifier],
    services: Callable[..., Service],
) -> None:
    emulator.put(KEY_SECRET, new_webhook_key())
    v1 = emulator.put(SECRET, "conninfo-v1")["version"]
    service = services(webhook_key_secret=KEY_SECRET)
    assert await service.use() == v1  # the service cached v1
    v2 = emulator.put(SECRET, "conninfo-v2")["version"]
    pinger = notifier(VaultReader(secrets_client))
    consumer = Consumer("backend", service.url, "hmac", hmac_secret=KEY_SECRET)

    ping = notice(v2, "rot-1")
    [result] = await pinger.ping_all(ping, [consumer])

    assert (result.ok, result.status, result.acknowledged_version) == (True, 200, v2), result
    assert service.client is not None and service.client.cached_version(SECRET) == v2
    assert await service.use() == v2
    assert service.refreshed == [v2]
    # A repeat of the same rotation is answered without another re-read.
    reads = emulator.count("GET", "secret")
    [again] = await pinger.ping_all(ping, [consumer])
    assert again.ok and again.acknowledged_version == v2
    assert service.refreshed == [v2]
    assert emulator.count("GET", "secret") == reads + 1  # only the notifier's own read of the key


async def test_plain_asgi_app_answers_the_status_codes_of_the_contract(
    emulator: KeyVaultEmulator, services: Callable[..., Service]
) -> None:
    key = new_webhook_key()
    emulator.put(KEY_SECRET, key)
    v1 = emulator.put(SECRET, "conninfo-v1")["version"]
    service = services(webhook_key_secret=KEY_SECRET, asgi=True)
    assert service.endpoint is not None
    endpoint = service.endpoint
    url = service.url
    signer = Webhook(key)

    def signed(body: bytes, msg_id: str = "rot-x", signer: Webhook = signer) -> dict[str, str]:
        now = datetime.now(UTC)
        return {"webhook-id": msg_id, "webhook-timestamp": str(int(now.timestamp())),
                "webhook-signature": signer.sign(msg_id, now, body.decode()), "content-type": "application/json"}

    def body(**fields: Any) -> bytes:
        return json.dumps({"secretName": SECRET, "version": v1, "rotationId": "rot-x", **fields}).encode()

    other = Webhook(new_webhook_key())
    stale = {**signed(body()), "webhook-timestamp": str(int(time.time()) - 3600)}
    async with aiohttp.ClientSession() as http:
        async def post(data: bytes, headers: dict[str, str], target: str = url) -> tuple[int, Any]:
            async with http.post(target, data=data, headers=headers) as response:
                return response.status, await response.json(content_type=None)

        assert await post(body(), signed(body())) == (200, {"version": v1, "coverage": "instance"})
        assert (await post(body(), {}))[0] == 401
        assert (await post(body(), signed(body(), signer=other)))[0] == 401
        assert (await post(body(), stale))[0] == 401
        tampered = body(version="v-other")
        assert (await post(tampered, signed(body())))[0] == 401
        assert (await post(b"not json", signed(b"not json")))[0] == 400
        assert (await post(body(secretName="openai-api-key"), signed(body(secretName="openai-api-key"))))[0] == 404
        big = b"x" * (endpoint.max_body_bytes + 1)
        assert (await post(big, signed(big)))[0] == 413
        assert (await post(body(), signed(body()), service.server.base_url + "/internal/elsewhere"))[0] == 404
        async with http.get(url) as response:
            assert response.status == 405
        emulator.faults.add(403, times=1, path_regex=SECRET)
        status, answer = await post(body(rotationId="rot-y"), signed(body(rotationId="rot-y"), "rot-y"))
        assert status == 503 and answer == {"error": "could not re-read the secret"}


async def test_a_rotated_webhook_key_is_reread_once_instead_of_rejecting_the_ping(
    emulator: KeyVaultEmulator, secrets_client: CachedSecretClient, notifier: Callable[..., HttpPingNotifier],
    services: Callable[..., Service],
) -> None:
    emulator.put(KEY_SECRET, new_webhook_key())
    v1 = emulator.put(SECRET, "conninfo-v1")["version"]
    service = services(webhook_key_secret=KEY_SECRET)
    pinger = notifier(VaultReader(secrets_client))
    consumer = Consumer("backend", service.url, "hmac", hmac_secret=KEY_SECRET)
    [first] = await pinger.ping_all(notice(v1), [consumer])  # the service cached the ping key
    assert first.ok, first
    emulator.put(KEY_SECRET, new_webhook_key())  # the ping key rotated
    [result] = await pinger.ping_all(notice(v1), [consumer])
    assert result.ok, result


def signed_ping(key: str, version: str, rotation_id: str, **fields: Any) -> tuple[dict[str, str], bytes]:
    body = json.dumps({"secretName": SECRET, "version": version, "rotationId": rotation_id, **fields}).encode()
    now = datetime.now(UTC)
    return ({"webhook-id": rotation_id, "webhook-timestamp": str(int(now.timestamp())),
             "webhook-signature": Webhook(key).sign(rotation_id, now, body.decode())}, body)


async def test_a_ping_key_held_past_its_ttl_starts_the_reread_and_the_answer_waits_until_it_is_confirmed_current(
    emulator: KeyVaultEmulator,
) -> None:
    """Pings are rare, so the ping key held is usually past its TTL: reading it first would put a second Key Vault
    read before the re-read. The held key lets the re-read start; the answer waits for a fresh read of the key, and
    a ping signed with a key rotated away since is refused (401) although the secret was re-read."""
    key = new_webhook_key()
    emulator.put(KEY_SECRET, key)
    v1 = emulator.put(SECRET, "conninfo-v1")["version"]
    now = [0.0]
    async with CachedSecretClient(emulator.async_secret_client(retry_total=0), ttl_seconds=60,
                                  clock=lambda: now[0]) as client:
        endpoint = RefreshEndpoint(client, allowed_secrets=[SECRET], webhook_key_secret=KEY_SECRET)
        assert (await endpoint.handle(*signed_ping(key, v1, "rot-1"))).status == 200  # the key is held now

        now[0] = 3600.0  # the key held is past its TTL
        v2 = emulator.put(SECRET, "conninfo-v2")["version"]
        reads = emulator.count("GET", "secret")
        answer = await endpoint.handle(*signed_ping(key, v2, "rot-2"))
        assert (answer.status, answer.body) == (200, {"version": v2, "coverage": "instance"})
        assert emulator.count("GET", "secret") == reads + 2  # the secret and, to confirm it, the key

        now[0] = 7200.0
        emulator.put(KEY_SECRET, new_webhook_key())  # rotated away (say it leaked)
        v3 = emulator.put(SECRET, "conninfo-v3")["version"]
        refused = await endpoint.handle(*signed_ping(key, v3, "rot-3"))
        assert refused.status == 401
        assert client.cached_version(SECRET) == v3  # the harmless part ran: a re-read
        assert (await endpoint.handle(*signed_ping(key, v3, "rot-3"))).status == 401  # and the old key is known bad


async def test_a_reread_that_still_returns_the_replaced_version_is_not_yet_an_answer_but_a_503_to_retry(
    emulator: KeyVaultEmulator, secrets_client: CachedSecretClient,
) -> None:
    """Pings leave as the version is committed. A read that still returns the ping's ``previousVersion`` (a Key Vault
    replica lagging behind) means "not yet": 503 with Retry-After, so the rotation app pings again. Any other
    version is the truth to report (a mismatch, never an acknowledgement)."""
    key = new_webhook_key()
    v1 = emulator.put(SECRET, "conninfo-v1")["version"]
    endpoint = RefreshEndpoint(secrets_client, allowed_secrets=[SECRET], webhook_key=key)
    announced = uuid.uuid4().hex  # committed, not yet served to this reader
    lagging = await endpoint.handle(*signed_ping(key, announced, "rot-1", previousVersion=v1))
    assert (lagging.status, lagging.headers) == (503, {"Retry-After": "1"})
    superseded = await endpoint.handle(*signed_ping(key, announced, "rot-2", previousVersion=uuid.uuid4().hex))
    assert (superseded.status, superseded.body) == (200, {"version": v1, "coverage": "instance"})


# ------------------------------------------------------------- Entra bearer


class LocalIssuer:
    """An OpenID issuer on loopback: metadata, JWKS, and tokens signed with its RSA key."""

    def __init__(self) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.kid = "local-" + base64.urlsafe_b64encode(os.urandom(6)).decode()
        self.server = ServerThread(Starlette(routes=[
            Route("/{tenant}/v2.0/.well-known/openid-configuration", self._metadata),
            Route("/discovery/keys", self._keys),
        ]))
        self.server.start()
        self.issuer = f"{self.server.base_url}/{TENANT}/v2.0"

    async def _metadata(self, request: Request) -> JSONResponse:
        return JSONResponse({"issuer": self.issuer, "jwks_uri": self.server.base_url + "/discovery/keys"})

    async def _keys(self, request: Request) -> JSONResponse:
        jwk = json.loads(RSAAlgorithm.to_jwk(self.key.public_key()))
        jwk.update({"kid": self.kid, "use": "sig", "alg": "RS256"})
        return JSONResponse({"keys": [jwk]})

    def token(self, **overrides: Any) -> str:
        now = int(time.time())
        claims = {"iss": self.issuer, "aud": AUDIENCE, "azp": ROTATION_APP, "iat": now, "nbf": now,
                  "exp": now + 600, "sub": "rotation-app-object-id", **overrides}
        return jwt.encode(claims, self.key, algorithm="RS256", headers={"kid": self.kid})


class IssuerCredential(AsyncTokenSource):
    """What DefaultAzureCredential is to the notifier, handing out the local issuer's tokens."""

    def __init__(self, issuer: LocalIssuer, **overrides: Any) -> None:
        self._issuer = issuer
        self._overrides = overrides

    async def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        assert scopes == (AUDIENCE + "/.default",)
        return AccessToken(self._issuer.token(**self._overrides), int(time.time()) + 600)


@pytest.fixture
def issuer() -> Iterator[LocalIssuer]:
    local = LocalIssuer()
    yield local
    local.server.stop()


async def test_entra_bearer_tokens_are_validated_against_the_issuers_published_keys(
    emulator: KeyVaultEmulator, secrets_client: CachedSecretClient, notifier: Callable[..., HttpPingNotifier],
    services: Callable[..., Service], issuer: LocalIssuer,
) -> None:
    v1 = emulator.put(SECRET, "conninfo-v1")["version"]
    validator = EntraBearerValidator(issuers=[issuer.issuer], audiences=[AUDIENCE], allowed_callers=[ROTATION_APP])
    service = services(bearer=validator)
    consumer = Consumer("backend", service.url, "entra", audience=AUDIENCE)

    [ok] = await notifier(credential=IssuerCredential(issuer)).ping_all(notice(v1), [consumer])
    [other_app] = await notifier(credential=IssuerCredential(issuer, azp="someone-else")).ping_all(
        notice(v1), [consumer])
    [wrong_aud] = await notifier(credential=IssuerCredential(issuer, aud="api://bridge")).ping_all(
        notice(v1), [consumer])
    [expired] = await notifier(credential=IssuerCredential(issuer, exp=int(time.time()) - 3600)).ping_all(
        notice(v1), [consumer])

    assert (ok.ok, ok.acknowledged_version) == (True, v1), ok
    assert (other_app.ok, other_app.status) == (False, 403)
    assert (wrong_aud.ok, wrong_aud.status) == (False, 401)
    assert (expired.ok, expired.status) == (False, 401)

    # A token from another key (forged, or a key the issuer does not publish) is refused.
    forged = jwt.encode({"iss": issuer.issuer, "aud": AUDIENCE, "azp": ROTATION_APP, "exp": int(time.time()) + 60},
                        rsa.generate_private_key(public_exponent=65537, key_size=2048), algorithm="RS256",
                        headers={"kid": issuer.kid})
    async with aiohttp.ClientSession() as http, http.post(
        consumer.url, data=b"{}", headers={"Authorization": f"Bearer {forged}"}
    ) as response:
        assert response.status == 401
