"""Refresh pings: tell each consumer over HTTPS that a secret has a new version.

Consumers cache secrets (typically for an hour), so after a rotation the old
credential may only be retired once every consumer has re-read the secret.
This module POSTs a small JSON notice to each consumer and turns the answers
into :class:`ConsumerResult` acknowledgements; the consumer contract is in
``docs/consumers.md``.

Why it looks the way it does:

* The body names the secret and its new version but never carries the value:
  a consumer must fetch the value from Key Vault with its own identity, so a
  leaked or logged ping is harmless and the consumer's access stays auditable.
* A failed ping must never undo a committed rotation, so nothing here raises
  for a consumer failure; each outcome is recorded in the result instead.
* Pings fan out concurrently (``asyncio.gather``) with a per-call timeout, so
  one slow consumer costs at most ``attempts x timeout`` plus backoff and does
  not delay the others.
* Transient failures (timeouts, connection errors, 5xx, 429) are retried with
  jittered exponential backoff by ``stamina``; other answers are final because
  repeating the same request will get the same answer.
* ``hmac`` consumers get a `Standard Webhooks <https://www.standardwebhooks.com>`_
  signature: ``webhook-id`` (the rotation id, the same on every retry, so a
  consumer de-duplicates on it), ``webhook-timestamp`` and ``webhook-signature:
  v1,<base64 HMAC-SHA256 of id.timestamp.body>``, keyed with a ``whsec_``
  secret kept in Key Vault. Consumers verify with the maintained
  ``standardwebhooks`` packages (PyPI, npm) instead of hand-written HMAC code;
  the timestamp is signed, so a captured ping cannot be replayed later
  (consumers reject stale timestamps) nor altered.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import json
import ssl
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

import aiohttp
import stamina
from azure.core.credentials import AccessToken

from shared.domain.ports import Consumer, ConsumerResult, NotifyResult, Prepared, RotatedNotice, SecretReader

# Standard Webhooks headers (lowercase as in the specification).
WEBHOOK_ID_HEADER = "webhook-id"
WEBHOOK_TIMESTAMP_HEADER = "webhook-timestamp"
WEBHOOK_SIGNATURE_HEADER = "webhook-signature"
ROTATION_ID_HEADER = "X-Rotation-Id"
WHSEC_PREFIX = "whsec_"
# The specification asks for signing keys of 24 to 64 bytes.
MIN_KEY_BYTES = 24
MAX_KEY_BYTES = 64
USER_AGENT = "secret-rotation-notifier/1"
MAX_ANSWER_BYTES = 64 * 1024


class AsyncTokenSource(Protocol):
    """The part of ``azure.core.credentials_async.AsyncTokenCredential`` we use.

    Declared here so tests can pass a small object of their own and so the
    notifier does not depend on a concrete identity class.
    """

    async def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken: ...


class _RetryableStatus(Exception):
    """A 5xx or 429 answer, raised inside an attempt so stamina retries it."""

    def __init__(self, status: int, reason: str, retry_after: float | None) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status
        self.reason = reason
        self.retry_after = retry_after


class _AuthUnavailable(Exception):
    """The credential for a consumer could not be produced; not retried here."""


class _HmacKeys:
    """HMAC keys read from Key Vault at most once per ``notify`` call.

    Consumers sharing a key share one read (even when pinged concurrently),
    and nothing outlives the call, so a rotated HMAC key is picked up on the
    next rotation without any cache invalidation. A consumer whose key names
    its vault (``hmacVault``) is read through ``vaults``; one that does not,
    through the default ``reader``.
    """

    def __init__(self, reader: SecretReader | None, vaults: Callable[[str], SecretReader] | None = None) -> None:
        self._reader = reader
        self._vaults = vaults
        self._reads: dict[tuple[str, str], asyncio.Task[bytes]] = {}

    def start(self, secret_name: str, vault: str | None = None) -> asyncio.Task[bytes]:
        """The shared read of one key, started now if it is not under way already."""
        key = ((vault or "").lower(), secret_name.lower())
        task = self._reads.get(key)
        if task is None:
            task = asyncio.ensure_future(self._read(self._reader_for(vault), secret_name))
            self._reads[key] = task
        return task

    def _reader_for(self, vault: str | None) -> SecretReader | None:
        if vault is not None and self._vaults is not None:
            return self._vaults(vault)
        return self._reader

    async def get(self, secret_name: str, vault: str | None = None) -> bytes:
        # shield: one consumer's cancellation must not cancel the shared read.
        return await asyncio.shield(self.start(secret_name, vault))

    @staticmethod
    async def _read(reader: SecretReader | None, secret_name: str) -> bytes:
        if reader is None:
            raise _AuthUnavailable("no secret reader is configured for HMAC keys")
        try:
            secret = await reader.get(secret_name)
        except Exception as exc:
            raise _AuthUnavailable(f"could not read HMAC key secret {secret_name!r} ({type(exc).__name__})") from exc
        try:
            return whsec_key(secret.value)
        except ValueError as exc:
            # The reason never quotes the value: it is the key.
            raise _AuthUnavailable(f"HMAC key secret {secret_name!r} {exc}") from None

    def close(self) -> None:
        for task in self._reads.values():
            if not task.done():
                task.cancel()
            elif not task.cancelled():
                task.exception()  # mark as retrieved; each consumer already reported it
        self._reads.clear()


def notice_fields(notice: RotatedNotice) -> dict[str, str | None]:
    """The JSON fields of a ping body: identifiers only, never the value."""
    return {
        "vault": notice.vault,
        "vaultUrl": notice.vault_url,
        "secretName": notice.secret_name,
        "version": notice.version,
        "previousVersion": notice.previous_version,
        "rotationId": notice.rotation_id,
        "rotatedAt": iso8601(notice.rotated_at),
        "trigger": notice.trigger,
    }


def ping_body(notice: RotatedNotice) -> bytes:
    """The exact bytes POSTed (and signed): compact JSON, UTF-8."""
    return json.dumps(notice_fields(notice), separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def iso8601(moment: datetime) -> str:
    """UTC ISO 8601 with a ``Z`` suffix; naive datetimes are taken as UTC."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def whsec_key(value: str) -> bytes:
    """The signing key of a Standard Webhooks secret ``whsec_<base64>``.

    Raises ValueError (whose message never contains the value) when the
    value is not in that form or the key is not 24 to 64 bytes long.
    """
    text = value.strip()
    if not text.startswith(WHSEC_PREFIX):
        raise ValueError("is not a Standard Webhooks key (expected whsec_<base64>)")
    encoded = text[len(WHSEC_PREFIX) :]
    try:
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("is not a Standard Webhooks key (the part after whsec_ is not base64)") from None
    if not MIN_KEY_BYTES <= len(key) <= MAX_KEY_BYTES:
        raise ValueError(f"must hold a key of {MIN_KEY_BYTES} to {MAX_KEY_BYTES} bytes")
    return key


def sign(key: bytes, msg_id: str, timestamp: str, body: bytes) -> str:
    """The Standard Webhooks ``webhook-signature`` value: ``v1,<base64>``.

    HMAC-SHA256 over ``msg_id + "." + timestamp + "." + body``. Including the
    id and timestamp binds the signature to this rotation and to the moment
    of sending, so the consumer's freshness check cannot be bypassed by
    replaying a body, nor a body moved to another rotation id.
    """
    material = msg_id.encode("utf-8") + b"." + timestamp.encode("ascii") + b"." + body
    mac = hmac.new(key, material, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode("ascii")


class HttpPingNotifier:
    """POSTs the rotation notice to consumers and collects acknowledgements.

    ``credential`` issues Entra tokens for ``auth: entra`` consumers
    (``DefaultAzureCredential`` from ``azure.identity.aio`` in production;
    the composition root owns and closes it). ``hmac_keys`` reads the HMAC
    key secrets for ``auth: hmac`` consumers that name no vault, ``hmac_vaults``
    gives the reader of a named vault. ``backoff_*`` tune stamina's
    jittered exponential backoff between attempts. ``ssl_context`` replaces
    the default certificate verification (tests trust a local CA with it);
    ``session_factory`` replaces the whole ``aiohttp.ClientSession`` creation.
    """

    def __init__(
        self,
        *,
        credential: AsyncTokenSource | None = None,
        hmac_keys: SecretReader | None = None,
        hmac_vaults: Callable[[str], SecretReader] | None = None,
        timeout_seconds: float = 5.0,
        attempts: int = 3,
        backoff_initial: float = 0.5,
        backoff_max: float = 5.0,
        backoff_jitter: float = 0.5,
        max_connections: int = 100,
        ssl_context: ssl.SSLContext | None = None,
        session_factory: Callable[[], aiohttp.ClientSession] | None = None,
    ) -> None:
        if attempts < 1:
            raise ValueError("attempts must be at least 1")
        if timeout_seconds <= 0:
            raise ValueError("timeout_seconds must be positive")
        self._credential = credential
        self._hmac_reader = hmac_keys
        self._hmac_vaults = hmac_vaults
        self._timeout = timeout_seconds
        self._attempts = attempts
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._backoff_jitter = backoff_jitter
        self._max_connections = max_connections
        self._ssl_context = ssl_context
        self._session_factory = session_factory
        self._session: aiohttp.ClientSession | None = None

    def prepare(self, consumers: Sequence[Consumer]) -> _HmacKeys:
        """Start reading the HMAC keys of these consumers now (see :class:`shared.domain.ports.Notifier`)."""
        keys = _HmacKeys(self._hmac_reader, self._hmac_vaults)
        for consumer in consumers:
            if consumer.auth == "hmac" and consumer.hmac_secret:
                keys.start(consumer.hmac_secret, consumer.hmac_vault)
        return keys

    async def notify(
        self, notice: RotatedNotice, consumers: Sequence[Consumer], prepared: Prepared | None = None,
        *, event_after: Awaitable[None] | None = None,
    ) -> NotifyResult:
        """The :class:`Notifier` protocol with pings only (no event publishing, so nothing waits)."""
        return NotifyResult(consumers=tuple(await self.ping_all(notice, consumers, prepared)))

    async def ping_all(
        self, notice: RotatedNotice, consumers: Sequence[Consumer], prepared: Prepared | None = None
    ) -> list[ConsumerResult]:
        """Ping every consumer concurrently; one result per consumer, in order. Never raises.

        ``prepared`` is what :meth:`prepare` returned for these consumers: keys already read or
        being read. Either way the keys do not outlive this call."""
        keys = prepared if isinstance(prepared, _HmacKeys) else _HmacKeys(self._hmac_reader, self._hmac_vaults)
        if not consumers:
            keys.close()
            return []
        body = ping_body(notice)
        try:
            session = self._get_session()
            return list(
                await asyncio.gather(*(self._ping(session, notice, body, consumer, keys) for consumer in consumers))
            )
        finally:
            keys.close()

    async def close(self) -> None:
        """Close the shared session; a later ping opens a new one."""
        session, self._session = self._session, None
        if session is not None and not session.closed:
            await session.close()

    def _get_session(self) -> aiohttp.ClientSession:
        # Synchronous on purpose: no await between the check and the
        # assignment, so concurrent callers cannot create two sessions.
        if self._session is None or self._session.closed:
            if self._session_factory is not None:
                self._session = self._session_factory()
            else:
                connector = aiohttp.TCPConnector(
                    ssl=self._ssl_context if self._ssl_context is not None else True,
                    limit=self._max_connections,
                )
                self._session = aiohttp.ClientSession(connector=connector, headers={"User-Agent": USER_AGENT})
        return self._session

    async def _ping(
        self,
        session: aiohttp.ClientSession,
        notice: RotatedNotice,
        body: bytes,
        consumer: Consumer,
        keys: _HmacKeys,
    ) -> ConsumerResult:
        attempts = 0

        def failed(error: str, status: int | None = None) -> ConsumerResult:
            return ConsumerResult(consumer=consumer.name, ok=False, status=status, attempts=attempts, error=error)

        try:
            async for attempt in stamina.retry_context(
                on=self._retry_hook,
                attempts=self._attempts,
                timeout=None,  # bounded by attempts x per-call timeout instead
                wait_initial=self._backoff_initial,
                wait_max=self._backoff_max,
                wait_jitter=self._backoff_jitter,
            ):
                with attempt:
                    attempts = attempt.num
                    headers = await self._headers(consumer, notice, body, keys)
                    status, reason, answer = await self._post(session, consumer.url, body, headers)
        except _RetryableStatus as exc:
            return failed(f"{_status_text(exc.status, exc.reason)} after {attempts} attempt(s)", exc.status)
        except TimeoutError:
            return failed(f"timed out after {self._timeout:g}s on each of {attempts} attempt(s)")
        except aiohttp.ClientError as exc:
            return failed(f"connection failed after {attempts} attempt(s) ({type(exc).__name__})")
        except _AuthUnavailable as exc:
            return failed(str(exc))
        except Exception as exc:  # never let one consumer break the fan-out
            return failed(f"unexpected error ({type(exc).__name__})")

        if not 200 <= status < 300:
            return failed(_status_text(status, reason), status)
        reported = _reported_version(answer)
        if reported is not None and reported != notice.version:
            return ConsumerResult(
                consumer=consumer.name,
                ok=False,
                status=status,
                acknowledged_version=reported,
                attempts=attempts,
                error=f"version mismatch: consumer uses {reported!r}, expected {notice.version!r}",
            )
        if consumer.acknowledges == "service" and _reported_coverage(answer) != "service":
            # The catalog promises service-wide acknowledgements: one that does not
            # say so may come from a single replica, so it cannot retire anything early.
            return ConsumerResult(
                consumer=consumer.name,
                ok=False,
                status=status,
                acknowledged_version=reported,
                attempts=attempts,
                error='acknowledgement does not cover every instance (no "coverage": "service")',
            )
        return ConsumerResult(
            consumer=consumer.name,
            ok=True,
            status=status,
            acknowledged_version=reported if reported is not None else notice.version,
            attempts=attempts,
        )

    async def _headers(self, consumer: Consumer, notice: RotatedNotice, body: bytes, keys: _HmacKeys) -> dict[str, str]:
        """Headers of one attempt; built per attempt so timestamps and tokens are fresh."""
        headers = {"Content-Type": "application/json", ROTATION_ID_HEADER: notice.rotation_id}
        if consumer.auth == "hmac":
            if not consumer.hmac_secret:
                raise _AuthUnavailable("consumer uses hmac but names no hmacSecret")
            key = await keys.get(consumer.hmac_secret, consumer.hmac_vault)
            timestamp = str(int(time.time()))
            headers[WEBHOOK_ID_HEADER] = notice.rotation_id
            headers[WEBHOOK_TIMESTAMP_HEADER] = timestamp
            headers[WEBHOOK_SIGNATURE_HEADER] = sign(key, notice.rotation_id, timestamp, body)
        elif consumer.auth == "entra":
            if not consumer.audience:
                raise _AuthUnavailable("consumer uses entra but names no audience")
            if self._credential is None:
                raise _AuthUnavailable("no token credential is configured for entra consumers")
            scope = consumer.audience.rstrip("/")
            if not scope.endswith("/.default"):
                scope += "/.default"
            try:
                token = await self._credential.get_token(scope)
            except Exception as exc:
                raise _AuthUnavailable(f"could not get a token for {consumer.audience} ({type(exc).__name__})") from exc
            headers["Authorization"] = f"Bearer {token.token}"
        elif consumer.auth != "none":
            raise _AuthUnavailable(f"unsupported auth kind {consumer.auth!r}")
        return headers

    async def _post(
        self, session: aiohttp.ClientSession, url: str, body: bytes, headers: dict[str, str]
    ) -> tuple[int, str, bytes]:
        """One POST under the per-call timeout; raises for answers worth retrying."""
        async with asyncio.timeout(self._timeout):
            # No redirects: following one would send the signature or token elsewhere.
            async with session.post(url, data=body, headers=headers, allow_redirects=False) as response:
                answer = await response.content.read(MAX_ANSWER_BYTES)
                status = response.status
                reason = _short_reason(response.reason)
                if status >= 500 or status == 429:
                    raise _RetryableStatus(status, reason, _retry_after(response.headers.get("Retry-After")))
                return status, reason, answer

    def _retry_hook(self, exc: Exception) -> bool | float:
        """Which failures are worth another attempt, and how long to wait.

        A Retry-After on 429/503 is honoured up to ``backoff_max``; a
        certificate error will not fix itself within seconds, so it is final.
        """
        if isinstance(exc, _RetryableStatus):
            if exc.retry_after is not None:
                return float(min(exc.retry_after, self._backoff_max))
            return True
        if isinstance(exc, aiohttp.ClientConnectorCertificateError):
            return False
        return isinstance(exc, (TimeoutError, aiohttp.ClientConnectionError, aiohttp.ClientPayloadError))


def _reported_version(answer: bytes) -> str | None:
    """The ``version`` a consumer says it now uses, if it answered JSON with one."""
    if not answer.strip():
        return None
    try:
        parsed = json.loads(answer)
    except ValueError:
        return None
    if isinstance(parsed, dict):
        version = parsed.get("version")
        if isinstance(version, str) and version:
            return version
    return None


def _reported_coverage(answer: bytes) -> str | None:
    """``"service"`` when the consumer says every live instance uses the new version."""
    try:
        parsed = json.loads(answer) if answer.strip() else None
    except ValueError:
        return None
    coverage = parsed.get("coverage") if isinstance(parsed, dict) else None
    return coverage if isinstance(coverage, str) else None


def _retry_after(raw: str | None) -> float | None:
    if raw is None:
        return None
    try:
        seconds = float(raw.strip())
    except ValueError:
        return None  # HTTP-date form: fall back to our own backoff
    return seconds if seconds >= 0 else None


def _status_text(status: int, reason: str) -> str:
    return f"HTTP {status} {reason}" if reason else f"HTTP {status}"


def _short_reason(reason: str | None) -> str:
    """A status reason safe to log: printable ASCII, at most 60 characters."""
    if not reason:
        return ""
    cleaned = "".join(ch for ch in reason if 32 <= ord(ch) < 127)
    return cleaned[:60]
