"""A stand-in for a service that caches a secret (the bridge, the backend).

Integration tests ping this over a real socket so the notifier is checked
against what a consumer actually does: verify the ping's authentication,
drop its cached secret, re-read it from Key Vault and answer the version it
now uses. Reading the secret is a plug (``read_secret``) so the same app can
run against an in-memory fake today and the real SDK against the project's
Key Vault emulator later.

It can be told to misbehave (slow, down, a series of failing statuses) and
records every ping it got, so tests can assert on what went over the wire.

:class:`ServerThread` runs any ASGI app with uvicorn on a free loopback port
in a background thread (optionally over TLS with a trustme certificate); the
Event Grid sink reuses it.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import tempfile
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self

import trustme
import uvicorn
from standardwebhooks.webhooks import Webhook
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.support import leakscan

REFRESH_PATH = "/internal/secrets/refresh"
SIGNATURE_HEADER = "webhook-signature"



def new_webhook_key(size: int = 32) -> str:
    """A fresh Standard Webhooks signing key in its ``whsec_<base64>`` form."""
    return "whsec_" + base64.b64encode(os.urandom(size)).decode("ascii")


ReadSecret = Callable[[str], Awaitable[tuple[str, str]]]


class ServerThread:
    """Run an ASGI app with uvicorn in a daemon thread on a free port.

    A thread (not a subprocess) keeps the app's state in this process so
    tests can inspect and steer it directly. The socket is bound before the
    thread starts, so the port is known and never raced for.
    """

    def __init__(
        self, app: Any, *, tls: trustme.LeafCert | None = None, host: str = "127.0.0.1",
        lifespan: Literal["auto", "on", "off"] = "off",
    ) -> None:
        self._app = app
        self._lifespan = lifespan
        self._tls = tls
        self.host = host
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self.port = 0

    @property
    def scheme(self) -> str:
        return "https" if self._tls is not None else "http"

    @property
    def base_url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"

    def start(self) -> None:
        certfile: str | None = None
        keyfile: str | None = None
        if self._tls is not None:
            self._tmp = tempfile.TemporaryDirectory(prefix="asgi-tls-")
            cert = Path(self._tmp.name) / "cert.pem"
            key = Path(self._tmp.name) / "key.pem"
            cert.write_bytes(b"".join(blob.bytes() for blob in self._tls.cert_chain_pems))
            self._tls.private_key_pem.write_to_path(str(key))
            certfile, keyfile = str(cert), str(key)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, 0))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self._app,
            log_config=None,  # uvicorn's dictConfig would close every handler, the leak scan's included
            log_level="warning",
            lifespan=self._lifespan,  # "on": the app's clients live and close in the server's own loop
            access_log=False,
            timeout_graceful_shutdown=1,
            backlog=512,
            ssl_certfile=certfile,
            ssl_keyfile=keyfile,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, name=f"asgi-{self.port}", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("ASGI test server did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        """Stop serving; connections to the port are refused afterwards."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._server = None
        self._thread = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    async def astop(self) -> None:
        """:meth:`stop` without blocking the caller's event loop.

        Stopping waits for uvicorn to close its connections; a TLS close
        waits for the client's close_notify, which never comes while the
        client's loop (often the test's own) is blocked in a plain ``stop``.
        """
        await asyncio.to_thread(self.stop)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


@dataclass
class ReceivedPing:
    """One refresh request as the consumer saw it (``status`` set once answered)."""

    path: str
    headers: dict[str, str]
    raw_body: bytes
    received_at: float
    auth: str = "none"  # "hmac" | "bearer" | "none"
    verified: bool = False
    status: int | None = None

    @property
    def body(self) -> Any:
        return json.loads(self.raw_body) if self.raw_body else None


@dataclass
class _Cached:
    value: str = field(repr=False)
    version: str
    fetched_at: float


class ConsumerApp:
    """Behaves like a consumer's refresh endpoint; see the module docstring.

    ``hmac_key`` is the shared ``whsec_`` key (the consumer would read it
    from Key Vault too); signed pings are verified with the maintained
    ``standardwebhooks`` package, exactly as a real consumer does, so the
    notifier is held to the Standard Webhooks specification and not to our
    own reading of it. ``bearer_tokens`` are the tokens it accepts (standing
    in for real JWT validation). With neither, pings are accepted
    unauthenticated only if ``allow_anonymous`` is set.
    """

    def __init__(
        self,
        read_secret: ReadSecret,
        *,
        secret_name: str,
        hmac_key: str | None = None,
        bearer_tokens: Collection[str] = (),
        allow_anonymous: bool = False,
        cache_seconds: float = 3600.0,
        coverage: str | None = "service",
    ) -> None:
        self._read_secret = read_secret
        self.secret_name = secret_name
        self._webhook = Webhook(hmac_key) if hmac_key is not None else None
        self._bearer_tokens = frozenset(bearer_tokens)
        self._allow_anonymous = allow_anonymous
        self._cache_seconds = cache_seconds
        # One process is the whole service, so its acknowledgement covers every instance.
        self.coverage = coverage
        self._cache: _Cached | None = None
        self._lock = threading.Lock()
        self._pings: list[ReceivedPing] = []
        self._fail_queue: deque[int] = deque()
        self.delay_seconds = 0.0
        self.in_flight = 0
        self.max_in_flight = 0  # most pings held in their delay at once: proof of concurrency, not a timing
        self.down = False
        self.reads = 0
        self.app = Starlette(
            routes=[
                Route(REFRESH_PATH, self._refresh, methods=["POST"]),
                Route("/internal/secrets/version", self._version, methods=["GET"]),
                Route("/healthz", self._health, methods=["GET"]),
            ]
        )

    # --- steering and inspection (called from the test thread) ---

    def fail_next(self, *statuses: int) -> None:
        """Answer the next pings with these statuses, in order, before behaving."""
        with self._lock:
            self._fail_queue.extend(statuses)

    @property
    def pings(self) -> list[ReceivedPing]:
        with self._lock:
            return list(self._pings)

    def reset(self) -> None:
        with self._lock:
            self._pings.clear()
            self._fail_queue.clear()
        self.delay_seconds = 0.0
        self.down = False

    @property
    def cached_version(self) -> str | None:
        cached = self._cache
        return cached.version if cached is not None else None

    async def secret(self) -> tuple[str, str]:
        """(value, version) as the service would use it: cached for ``cache_seconds``."""
        cached = self._cache
        if cached is None or time.monotonic() - cached.fetched_at > self._cache_seconds:
            value, version = await self._read_secret(self.secret_name)
            self.reads += 1
            cached = _Cached(value=value, version=version, fetched_at=time.monotonic())
            self._cache = cached
        return cached.value, cached.version

    def clear_cache(self) -> None:
        self._cache = None

    # --- HTTP handlers (run in the server thread) ---

    async def _refresh(self, request: Request) -> Response:
        raw = await request.body()
        leakscan.record("ping", raw)
        ping = ReceivedPing(
            path=request.url.path,
            headers={k.lower(): v for k, v in request.headers.items()},
            raw_body=raw,
            received_at=time.time(),
        )
        with self._lock:
            self._pings.append(ping)
            failure = self._fail_queue.popleft() if self._fail_queue else None
        if self.delay_seconds:
            with self._lock:
                self.in_flight += 1
                self.max_in_flight = max(self.max_in_flight, self.in_flight)
            try:
                await asyncio.sleep(self.delay_seconds)
            finally:
                with self._lock:
                    self.in_flight -= 1
        if self.down:
            return self._answer(ping, Response("down", status_code=503))
        if failure is not None:
            return self._answer(ping, Response("simulated failure", status_code=failure))
        ping.auth, ping.verified = self._verify(ping)
        if not ping.verified:
            return self._answer(ping, JSONResponse({"error": "unauthorized"}, status_code=401))
        try:
            payload = json.loads(raw)
        except ValueError:
            return self._answer(ping, JSONResponse({"error": "bad json"}, status_code=400))
        if not isinstance(payload, dict) or payload.get("secretName") != self.secret_name:
            return self._answer(ping, JSONResponse({"error": "not my secret"}, status_code=404))
        self.clear_cache()
        _, version = await self.secret()
        answer = {"version": version} if self.coverage is None else {"version": version, "coverage": self.coverage}
        return self._answer(ping, JSONResponse(answer))

    async def _version(self, request: Request) -> Response:
        return JSONResponse({"version": self.cached_version})

    async def _health(self, request: Request) -> Response:
        return JSONResponse({"ok": True})

    @staticmethod
    def _answer(ping: ReceivedPing, response: Response) -> Response:
        ping.status = response.status_code
        return response

    def _verify(self, ping: ReceivedPing) -> tuple[str, bool]:
        signature = ping.headers.get(SIGNATURE_HEADER)
        authorization = ping.headers.get("authorization", "")
        if signature is not None:
            return "hmac", self._verify_webhook(ping)
        if authorization.lower().startswith("bearer "):
            return "bearer", authorization[7:].strip() in self._bearer_tokens
        return "none", self._allow_anonymous

    def _verify_webhook(self, ping: ReceivedPing) -> bool:
        """Standard Webhooks verification (signature and 5-minute freshness)."""
        if self._webhook is None:
            return False
        try:
            self._webhook.verify(ping.raw_body, ping.headers, json_parse=False)
        except Exception:  # the package raises several kinds for malformed headers
            return False
        return True


class ConsumerServer(ServerThread):
    """A :class:`ConsumerApp` served on a free port; ``url`` is its refresh endpoint."""

    def __init__(self, consumer: ConsumerApp, *, tls: trustme.LeafCert | None = None) -> None:
        super().__init__(consumer.app, tls=tls)
        self.consumer = consumer

    @property
    def url(self) -> str:
        return self.base_url + REFRESH_PATH
