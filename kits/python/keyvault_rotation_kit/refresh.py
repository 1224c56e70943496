"""The refresh endpoint: what a service answers when the rotation app pings it.

Contract (``docs/consumers.md``): the rotation app POSTs a small JSON notice
(``secretName``, ``version``, ``rotationId``, ...; never the value) signed to
the Standard Webhooks specification (``auth: hmac``) or with an Entra bearer
token (``auth: entra``). The service drops its cached copy, re-reads the
secret from Key Vault **before** answering, and answers ``{"version": ...}``
with the version it now uses.

:class:`RefreshEndpoint` is the framework-free core (``handle(headers,
body) -> (status, json)``); :func:`fastapi_router` and
:class:`RefreshASGIApp` expose it. Status codes:

=====  ==============================================================
200    re-read; body ``{"version": v, "coverage": "instance"|"service"}``
400    body is not a JSON notice
401    missing or invalid signature / token (final, not retried)
403    valid token, but the caller is not allowed (final)
404    a secret this service does not use (not on the allow-list; final)
413    body larger than ``max_body_bytes`` (final)
503    Key Vault, the token issuer or a sibling instance did not answer
       in time: the rotation app retries (``Retry-After`` given)
=====  ==============================================================

De-duplication: the rotation id (``webhook-id``, ``rotationId``) is the same
on every retry; a notice already handled is answered with the version in use
without another Key Vault read or fan-out.

Replicas: without a :class:`Fanout` the answer covers this instance only
(``"coverage": "instance"``) and the rotation app waits for the service's
declared maximum cache age before retiring the old credential. With one
(e.g. :class:`keyvault_rotation_kit.fanout.RedisFanout`) the instance that got
the ping tells its siblings, and answers 200 with ``"coverage": "service"``
only once every live instance reports the new version (503 otherwise).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from standardwebhooks.webhooks import Webhook

from keyvault_rotation_kit.bearer import EntraBearerValidator
from keyvault_rotation_kit.errors import CallerNotAllowed, IssuerUnavailable, KitError, TokenInvalid
from keyvault_rotation_kit.secrets import CachedSecretClient, SecretValue

REFRESH_PATH = "/internal/secrets/refresh"
MAX_BODY_BYTES = 16 * 1024
RETRY_AFTER_SECONDS = 1

Json = dict[str, Any]


@dataclass(frozen=True)
class FanoutResult:
    """What the siblings reported: ``confirmed`` of ``live`` instances use ``version``."""

    live: int
    confirmed: int

    @property
    def complete(self) -> bool:
        return self.confirmed >= self.live


class Fanout(Protocol):
    """Tells the other instances of this service to refresh, and waits for them."""

    async def broadcast(self, secret_name: str, version: str, rotation_id: str) -> FanoutResult: ...


@dataclass(frozen=True)
class Answer:
    status: int
    body: Json
    headers: Mapping[str, str]


def _answer(status: int, body: Json, **headers: str) -> Answer:
    return Answer(status, body, headers)


class RefreshEndpoint:
    """Verifies a refresh notice, re-reads the secret and says which version is in use.

    ``allowed_secrets``: the secret names this service uses (case-insensitive);
    others get 404. Authentication, at least one of: ``webhook_key_secret``
    (the *name* of the Key Vault secret holding the ``whsec_`` key, read
    through ``secrets``) or ``webhook_key`` (the key itself, for tests), and
    ``bearer`` (Entra tokens). ``on_refreshed`` runs after each re-read (to
    rebuild a pool, a JWT ring, ...); ``fanout`` reaches the sibling instances.
    """

    def __init__(
        self,
        secrets: CachedSecretClient,
        *,
        allowed_secrets: Iterable[str],
        webhook_key_secret: str | None = None,
        webhook_key: str | None = None,
        bearer: EntraBearerValidator | None = None,
        fanout: Fanout | None = None,
        on_refreshed: Callable[[SecretValue], Awaitable[None]] | None = None,
        max_body_bytes: int = MAX_BODY_BYTES,
        dedup_size: int = 1024,
        key_reread_interval_seconds: float = 30.0,
    ) -> None:
        if webhook_key_secret is None and webhook_key is None and bearer is None:
            raise ValueError("configure webhook_key_secret, webhook_key or bearer: the endpoint must authenticate")
        self._secrets = secrets
        self._allowed = frozenset(n.lower() for n in allowed_secrets)
        self._key_secret = webhook_key_secret
        self._static_key = Webhook(webhook_key) if webhook_key is not None else None
        self._bearer = bearer
        self._fanout = fanout
        self._on_refreshed = on_refreshed
        self.max_body_bytes = max_body_bytes
        self._seen: OrderedDict[str, str] = OrderedDict()
        self._dedup_size = dedup_size
        self._key_reread_interval = key_reread_interval_seconds
        self._key_reread_at = float("-inf")

    async def warm(self) -> None:
        """Read the ping signing key now (at start-up), so the first ping does not wait for that read."""
        if self._key_secret is not None:
            await self._secrets.get(self._key_secret)

    async def handle(self, headers: Mapping[str, str], body: bytes) -> Answer:
        """One refresh request; never raises, never echoes a value."""
        lowered = {k.lower(): v for k, v in headers.items()}
        if len(body) > self.max_body_bytes:
            return _answer(413, {"error": "body too large"})
        try:
            confirming = await self._authenticate(lowered, body)
        except (TokenInvalid, CallerNotAllowed, IssuerUnavailable, KitError) as exc:
            return _refused(exc)
        if confirming is None:
            answer, done = await self._refresh(body)
        else:
            # Signed with the key held, which may be past its TTL: the (idempotent) re-read starts now,
            # the answer waits until a fresh read of the key confirms it is still the current one.
            try:
                answer, done = await self._refresh(body)
            except BaseException:
                confirming.cancel()
                raise
            try:
                await confirming
            except (TokenInvalid, KitError) as exc:
                return _refused(exc)
        if done is not None:
            self._remember(*done)
        return answer

    async def _refresh(self, body: bytes) -> tuple[Answer, tuple[str, str] | None]:
        """The answer to an authenticated notice, and the (rotation id, version) it settles, if any."""
        try:
            notice = json.loads(body)
        except ValueError:
            return _answer(400, {"error": "body is not JSON"}), None
        if not isinstance(notice, dict):
            return _answer(400, {"error": "body is not a JSON object"}), None
        name, version, rotation_id = notice.get("secretName"), notice.get("version"), notice.get("rotationId")
        if not isinstance(name, str) or not isinstance(rotation_id, str) or not isinstance(version, str):
            return _answer(400, {"error": "secretName, version and rotationId are required"}), None
        if name.lower() not in self._allowed:
            return _answer(404, {"error": "secret not used here"}), None

        answered = self._seen.get(rotation_id)
        if answered is not None and answered == version:
            return _answer(200, {"version": answered, "coverage": "service" if self._fanout else "instance",
                                 "duplicate": True}), (rotation_id, version)

        async def reread() -> SecretValue:
            secret = await self._secrets.refresh(name)
            if self._on_refreshed is not None:
                await self._on_refreshed(secret)
            return secret

        # With a fan-out, the siblings refresh while this instance does: the answer then costs one
        # refresh, not two in a row. The broadcast runs first, up to its publish, so the notice is on its
        # way before this instance's read starts (the SDK does milliseconds of work before it sends).
        broadcasting = asyncio.ensure_future(self._fanout.broadcast(name, version, rotation_id)) \
            if self._fanout is not None else None
        try:
            if broadcasting is not None:
                await asyncio.sleep(0)
            outcomes = await asyncio.gather(reread(), *([broadcasting] if broadcasting is not None else []),
                                            return_exceptions=True)
        except BaseException:
            if broadcasting is not None:
                broadcasting.cancel()
            raise
        local = outcomes[0]
        if isinstance(local, BaseException):
            if not isinstance(local, Exception):
                raise local
            return _answer(503, {"error": "could not re-read the secret"},
                           **{"Retry-After": str(RETRY_AFTER_SECONDS)}), None
        assert isinstance(local, SecretValue)
        secret = local
        if secret.version != version and secret.version == notice.get("previousVersion"):
            # The ping left as the version was committed; this read still got the one it replaces: try again.
            return _answer(503, {"error": "Key Vault does not serve the announced version yet"},
                           **{"Retry-After": str(RETRY_AFTER_SECONDS)}), None
        if secret.version != version:
            # The truth, not the version hoped for: the rotation app records a mismatch.
            return _answer(200, {"version": secret.version, "coverage": "instance"}), None
        coverage = "instance"
        body_extra: Json = {}
        if self._fanout is not None:
            result = outcomes[1]
            if isinstance(result, BaseException):
                if not isinstance(result, Exception):
                    raise result
                return _answer(503, {"error": "sibling instances did not answer"},
                               **{"Retry-After": str(RETRY_AFTER_SECONDS)}), None
            assert isinstance(result, FanoutResult)
            if not result.complete:
                return _answer(503, {"error": "not every instance confirmed", "live": result.live,
                                     "confirmed": result.confirmed}, **{"Retry-After": str(RETRY_AFTER_SECONDS)}), None
            coverage = "service"
            body_extra = {"instances": result.live}
        return _answer(200, {"version": secret.version, "coverage": coverage, **body_extra}), (rotation_id, version)

    async def _authenticate(self, headers: Mapping[str, str], body: bytes) -> asyncio.Task[None] | None:
        """Raises when the request is not authenticated; may return a confirmation the answer must await."""
        if "webhook-signature" in headers and (self._key_secret is not None or self._static_key is not None):
            return await self._verify_webhook(headers, body)
        if "authorization" in headers and self._bearer is not None:
            await self._bearer.validate(headers["authorization"])
            return None
        raise TokenInvalid("no accepted authentication")

    async def _verify_webhook(self, headers: Mapping[str, str], body: bytes) -> asyncio.Task[None] | None:
        if self._static_key is not None:
            if not _webhook_ok(self._static_key, headers, body):
                raise TokenInvalid("bad signature")
            return None
        assert self._key_secret is not None
        held = self._secrets.cached(self._key_secret)
        if held is not None and _webhook_ok(_webhook(held.value), headers, body):
            # Pings are rare, so the key held is usually past its TTL: reading it again before anything
            # else would put a second Key Vault read on the path to the new version. The work may start
            # (it only re-reads), the answer waits for this confirmation (a cache hit while fresh).
            return asyncio.ensure_future(self._confirm_key(held, headers, body))
        key = await self._secrets.get(self._key_secret)
        if _webhook_ok(_webhook(key.value), headers, body):
            return None
        # The signing key may have rotated since we cached it: re-read it, at
        # most once per interval so forged requests cannot hammer Key Vault.
        now = time.monotonic()
        if now - self._key_reread_at < self._key_reread_interval:
            raise TokenInvalid("bad signature")
        self._key_reread_at = now
        fresh = await self._secrets.reread_after_failure(self._key_secret, key.version)
        if fresh.version == key.version or not _webhook_ok(_webhook(fresh.value), headers, body):
            raise TokenInvalid("bad signature")
        return None

    async def _confirm_key(self, held: SecretValue, headers: Mapping[str, str], body: bytes) -> None:
        """The key that verified the request is still the current one (or the current one verifies it too)."""
        assert self._key_secret is not None
        current = await self._secrets.get(self._key_secret)
        if current.version != held.version and not _webhook_ok(_webhook(current.value), headers, body):
            raise TokenInvalid("signed with a key that is no longer current")

    def _remember(self, rotation_id: str, version: str) -> None:
        self._seen[rotation_id] = version
        self._seen.move_to_end(rotation_id)
        while len(self._seen) > self._dedup_size:
            self._seen.popitem(last=False)


def _refused(exc: Exception) -> Answer:
    """The answer to a request that could not be authenticated (now)."""
    if isinstance(exc, TokenInvalid):
        return _answer(401, {"error": "unauthorized"})
    if isinstance(exc, CallerNotAllowed):
        return _answer(403, {"error": "forbidden"})
    return _answer(503, {"error": "cannot authenticate now"}, **{"Retry-After": str(RETRY_AFTER_SECONDS)})


def _webhook(key: str) -> Webhook | None:
    try:
        return Webhook(key.strip())
    except Exception:  # not base64 / empty: no signature can verify
        return None


def _webhook_ok(webhook: Webhook | None, headers: Mapping[str, str], body: bytes) -> bool:
    if webhook is None:
        return False
    try:
        webhook.verify(body, dict(headers), json_parse=False)
    except Exception:  # the package raises several kinds for malformed or forged headers
        return False
    return True


# --------------------------------------------------------------------------- ASGI


class RefreshASGIApp:
    """The endpoint as a plain ASGI app (any framework, or mounted under a path).

    Answers POST on ``path``; 404 elsewhere and 405 for other methods.
    """

    def __init__(self, endpoint: RefreshEndpoint, path: str = REFRESH_PATH) -> None:
        self.endpoint = endpoint
        self.path = path

    async def __call__(self, scope: Mapping[str, Any], receive: Callable[[], Awaitable[Mapping[str, Any]]],
                       send: Callable[[Mapping[str, Any]], Awaitable[None]]) -> None:
        if scope["type"] != "http":
            return
        path = scope["path"]
        root = scope.get("root_path", "")
        if root and path.startswith(root):  # mounted: ASGI paths include the mount point
            path = path[len(root) :] or "/"
        if path != self.path:
            await _send(send, _answer(404, {"error": "not found"}))
            return
        if scope["method"] != "POST":
            await _send(send, _answer(405, {"error": "method not allowed"}, Allow="POST"))
            return
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.endpoint.max_body_bytes:
                await _send(send, _answer(413, {"error": "body too large"}))
                return
            chunks.append(chunk)
            more = bool(message.get("more_body", False))
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers", [])}
        await _send(send, await self.endpoint.handle(headers, b"".join(chunks)))


async def _send(send: Callable[[Mapping[str, Any]], Awaitable[None]], answer: Answer) -> None:
    payload = json.dumps(answer.body, separators=(",", ":")).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    headers += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in answer.headers.items()]
    await send({"type": "http.response.start", "status": answer.status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


# ------------------------------------------------------------------------ FastAPI


def fastapi_router(endpoint: RefreshEndpoint, path: str = REFRESH_PATH) -> Any:
    """An ``APIRouter`` with ``POST path``; include it with ``app.include_router(...)``."""
    from fastapi import APIRouter, Request
    from fastapi.responses import JSONResponse

    router = APIRouter()

    async def refresh(request: Request) -> JSONResponse:
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():  # raw bytes: the signature covers them exactly
            size += len(chunk)
            if size > endpoint.max_body_bytes:
                return JSONResponse({"error": "body too large"}, status_code=413)
            chunks.append(chunk)
        answer = await endpoint.handle(request.headers, b"".join(chunks))
        return JSONResponse(answer.body, status_code=answer.status, headers=dict(answer.headers))

    # Real objects, not the strings ``from __future__ import annotations`` leaves:
    # FastAPI resolves them in module globals, where these local imports are not.
    refresh.__annotations__ = {"request": Request, "return": JSONResponse}
    router.add_api_route(path, refresh, methods=["POST"], response_model=None, include_in_schema=False)
    return router
