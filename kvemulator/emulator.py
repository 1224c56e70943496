"""An HTTPS Key Vault (secrets) the real ``SecretClient`` can talk to.

Why a server and not a mock: the project's Key Vault adapter relies on the
SDK's challenge authentication, paging, retry policy, error mapping and id
parsing. Mocking ``SecretClient`` would test our assumptions about those, not
the SDK. So tests drive the real sync and aio clients against this process-
local server, which speaks the REST protocol over TLS (the SDK refuses plain
HTTP) with a throw-away CA from ``trustme``.

Why the stdlib server: one thread per connection is plenty for tests (tens of
concurrent requests, a few hundred list pages), keeps latency injection a
plain ``sleep``, and needs no event loop of its own that could clash with the
test's. Each response is written in a single ``write`` with Nagle disabled so
keep-alive round trips stay sub-millisecond. The TLS handshake happens on the
connection's own thread so a stuck client cannot block ``accept``.

Secret values never reach the access log: it records method, path, status
and timing only.
"""

from __future__ import annotations

import contextlib
import functools
import http
import json
import logging
import re
import shutil
import socket
import ssl
import tempfile
import threading
import time
import uuid
import weakref
from collections import Counter, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from email.utils import formatdate
from enum import Enum
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote, urlsplit

import trustme

from kvemulator.faults import Fault, Faults
from kvemulator.store import MAX_PAGE_SIZE, VaultError, VaultStore, bad_parameter, validate_name

if TYPE_CHECKING:
    from azure.keyvault.secrets import SecretClient
    from azure.keyvault.secrets.aio import SecretClient as AsyncSecretClient

_log = logging.getLogger("kvemulator")
_access_log = logging.getLogger("kvemulator.access")

#: A made-up tenant; the SDK only passes it back to the credential.
DEFAULT_TENANT_ID = "5f6c1a0e-3b7d-4e2a-9c41-8d2f0b6e7a13"
SERVICE_VERSION = "1.9.2476.1"
_RESOURCE = "https://vault.azure.net"
_MAX_BODY_BYTES = 4 * 1024 * 1024
_HANDSHAKE_TIMEOUT = 10.0
_API_VERSION_RE = re.compile(
    r"^(?:7\.[0-6](?:-preview(?:\.\d+)?)?|2016-10-01|20(?:2[5-9]|[3-9]\d)-(?:0[1-9]|1[0-2])-\d{2}(?:-preview)?)$"
)

# Path kinds used in request records and counters.
KIND_SECRETS = "secrets"  # /secrets
KIND_SECRET = "secret"  # noqa: S105 - /secrets/{name} and /secrets/{name}/ (latest)
KIND_SECRET_VERSION = "secret_version"  # noqa: S105 - /secrets/{name}/{version}
KIND_SECRET_VERSIONS = "secret_versions"  # noqa: S105 - /secrets/{name}/versions
KIND_BACKUP = "backup"  # /secrets/{name}/backup
KIND_RESTORE = "restore"  # /secrets/restore
KIND_DELETED_SECRETS = "deleted_secrets"  # /deletedsecrets
KIND_DELETED_SECRET = "deleted_secret"  # noqa: S105 - /deletedsecrets/{name}
KIND_RECOVER = "recover"  # /deletedsecrets/{name}/recover
KIND_OTHER = "other"


class _Unset(Enum):
    UNSET = "unset"


UNSET = _Unset.UNSET
TimeLike = datetime | int | float


def _unix(moment: TimeLike | None) -> int | None:
    if moment is None:
        return None
    if isinstance(moment, datetime):
        if moment.tzinfo is None:
            raise ValueError("datetimes must be timezone-aware")
        return int(moment.timestamp())
    return int(moment)


@dataclass(frozen=True)
class RequestRecord:
    """One request the emulator received (never its body)."""

    method: str
    path: str
    kind: str
    status: int
    authenticated: bool
    fault: str | None
    started: float
    duration: float


@dataclass(frozen=True)
class _Route:
    kind: str
    name: str | None = None
    version: str | None = None


def _classify(method: str, path: str) -> _Route:
    segments = [unquote(part) for part in path.split("/")[1:]]
    if segments and segments[-1] == "" and len(segments) in (2, 4):
        segments = segments[:-1]  # tolerate a trailing slash on collections and sub-resources
    if not segments or segments[0] not in ("secrets", "deletedsecrets"):
        return _Route(KIND_OTHER)
    if segments[0] == "secrets":
        if len(segments) == 1:
            return _Route(KIND_SECRETS)
        name = segments[1]
        if len(segments) == 2:
            if name == "restore" and method == "POST":
                return _Route(KIND_RESTORE)
            return _Route(KIND_SECRET, name)
        if len(segments) == 3:
            tail = segments[2]
            if tail == "":
                return _Route(KIND_SECRET, name)
            if tail == "versions" and method == "GET":
                return _Route(KIND_SECRET_VERSIONS, name)
            if tail == "backup" and method == "POST":
                return _Route(KIND_BACKUP, name)
            return _Route(KIND_SECRET_VERSION, name, tail)
        return _Route(KIND_OTHER)
    if len(segments) == 1:
        return _Route(KIND_DELETED_SECRETS)
    if len(segments) == 2:
        return _Route(KIND_DELETED_SECRET, segments[1])
    if len(segments) == 3 and segments[2] == "recover":
        return _Route(KIND_RECOVER, segments[1])
    return _Route(KIND_OTHER)


def _method_not_allowed(method: str) -> VaultError:
    return VaultError(405, "MethodNotAllowed", f"The requested method {method} is not allowed on this resource.")


class _Api:
    """Maps one authenticated, fault-free request onto the store."""

    def __init__(self, store: VaultStore) -> None:
        self.store = store

    def handle(self, method: str, route: _Route, query: Mapping[str, list[str]], body: bytes) -> tuple[int, Any]:
        api_version = self._api_version(query)
        if route.kind == KIND_OTHER:
            raise VaultError(404, "NotFound", "The requested resource was not found.")
        if route.name is not None and route.kind != KIND_RESTORE:
            validate_name(route.name)
        store = self.store
        name = route.name or ""
        kind = route.kind
        if kind == KIND_SECRETS:
            self._only(method, "GET")
            return 200, store.list_secrets(self._maxresults(query), self._skiptoken(query), api_version)
        if kind == KIND_SECRET:
            if method == "PUT":
                return 200, store.set_secret(name, self._json(body))
            if method == "GET":
                return 200, store.get_secret(name, None)
            if method == "PATCH":
                return 200, store.update_secret(name, None, self._json(body))
            if method == "DELETE":
                return 200, store.delete_secret(name)
            raise _method_not_allowed(method)
        if kind == KIND_SECRET_VERSION:
            if method == "GET":
                return 200, store.get_secret(name, route.version)
            if method == "PATCH":
                return 200, store.update_secret(name, route.version, self._json(body))
            raise _method_not_allowed(method)
        if kind == KIND_SECRET_VERSIONS:
            return 200, store.list_versions(name, self._maxresults(query), self._skiptoken(query), api_version)
        if kind == KIND_BACKUP:
            return 200, store.backup(name)
        if kind == KIND_RESTORE:
            return 200, store.restore(self._json(body))
        if kind == KIND_DELETED_SECRETS:
            self._only(method, "GET")
            return 200, store.list_deleted(self._maxresults(query), self._skiptoken(query), api_version)
        if kind == KIND_DELETED_SECRET:
            if method == "GET":
                return 200, store.get_deleted(name)
            if method == "DELETE":
                store.purge(name)
                return 204, None
            raise _method_not_allowed(method)
        if kind == KIND_RECOVER:
            self._only(method, "POST")
            return 200, store.recover(name)
        raise VaultError(404, "NotFound", "The requested resource was not found.")

    @staticmethod
    def _only(method: str, allowed: str) -> None:
        if method != allowed:
            raise _method_not_allowed(method)

    @staticmethod
    def _api_version(query: Mapping[str, list[str]]) -> str:
        values = query.get("api-version")
        if not values or not values[-1]:
            raise bad_parameter("The 'api-version' query parameter is missing.")
        version = values[-1]
        if not _API_VERSION_RE.fullmatch(version):
            raise bad_parameter(
                f"The specified version ({version}) is not recognized. Consider using the latest supported version."
            )
        return version

    @staticmethod
    def _maxresults(query: Mapping[str, list[str]]) -> int | None:
        values = query.get("maxresults")
        if not values:
            return None
        try:
            size = int(values[-1])
        except ValueError as exc:
            raise bad_parameter("The parameter 'maxresults' must be an integer.") from exc
        if not 1 <= size <= MAX_PAGE_SIZE:
            raise bad_parameter(f"The parameter 'maxresults' must be between 1 and {MAX_PAGE_SIZE}.")
        return size

    @staticmethod
    def _skiptoken(query: Mapping[str, list[str]]) -> str | None:
        values = query.get("$skiptoken")
        return values[-1] if values else None

    @staticmethod
    def _json(body: bytes) -> Mapping[str, Any]:
        if not body.strip():
            raise bad_parameter("The request body is missing.")
        try:
            parsed = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise bad_parameter("The request body is not valid JSON.") from exc
        if not isinstance(parsed, dict):
            raise bad_parameter("The request body must be a JSON object.")
        return parsed


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: _TLSServer

    def do_GET(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_PATCH(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def do_HEAD(self) -> None:
        self._dispatch()

    def do_OPTIONS(self) -> None:
        self._dispatch()

    def log_message(self, format: str, *args: Any) -> None:
        _log.debug("http: " + format, *args)

    # ------------------------------------------------------------------

    def _dispatch(self) -> None:
        emulator = self.server.emulator
        started = time.time()
        clock = time.perf_counter()
        method = self.command.upper()
        split = urlsplit(self.path)
        path = split.path or "/"
        route = _classify(method, path)
        record = functools.partial(
            emulator._record, method=method, path=path, kind=route.kind, started=started, clock=clock
        )
        try:
            body = self._read_body()
        except VaultError as error:
            self.close_connection = True
            record(status=error.status, authenticated=False, fault=None)
            self._respond(error.status, error.body(), error.headers)
            return

        authorization = self.headers.get("Authorization", "")
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            record(status=401, authenticated=False, fault=None)
            self._respond(
                401,
                {"error": {"code": "Unauthorized", "message": "AKV10000: Request is missing a Bearer or PoP token."}},
                {
                    "WWW-Authenticate": (
                        f'Bearer authorization="https://login.microsoftonline.com/{emulator.tenant_id}", '
                        f'resource="{_RESOURCE}"'
                    )
                },
            )
            return

        decision = emulator.faults.take(method, path)
        if decision.delay > 0:
            time.sleep(decision.delay)
        fault = decision.fault
        fault_kind = "latency" if decision.delay > 0 else None
        if fault is not None and fault.kind == "disconnect":
            self.close_connection = True
            record(status=0, authenticated=True, fault="disconnect")
            with contextlib.suppress(OSError):
                socket.socket.shutdown(self.connection, socket.SHUT_RDWR)
            return
        if fault is not None:
            record(status=fault.status or 500, authenticated=True, fault="status")
            self._respond_fault(fault)
            return

        query = parse_qs(split.query, keep_blank_values=True)
        try:
            status, payload = emulator._api.handle(method, route, query, body)
            headers: Mapping[str, str] = {}
        except VaultError as error:
            status, payload, headers = error.status, error.body(), error.headers
        except Exception:  # pragma: no cover - a bug in the emulator must still answer
            _log.exception("emulator failure on %s %s", method, path)
            status, payload, headers = 500, {"error": {"code": "InternalError", "message": "Emulator bug."}}, {}
        # Recorded before answering, so a client that has its response also sees it counted.
        record(status=status, authenticated=True, fault=fault_kind)
        self._respond(status, payload, headers)

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            return self._read_chunked()
        raw_length = self.headers.get("Content-Length")
        if not raw_length:
            return b""
        try:
            length = int(raw_length)
        except ValueError as exc:
            raise bad_parameter("Invalid Content-Length.") from exc
        if length < 0:
            raise bad_parameter("Invalid Content-Length.")
        if length > _MAX_BODY_BYTES:
            raise VaultError(413, "RequestEntityTooLarge", "The request body is too large.")
        return self.rfile.read(length)

    def _read_chunked(self) -> bytes:
        parts: list[bytes] = []
        total = 0
        while True:
            line = self.rfile.readline(65537)
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError as exc:
                raise bad_parameter("Invalid chunked encoding.") from exc
            if size == 0:
                while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(parts)
            total += size
            if total > _MAX_BODY_BYTES:
                raise VaultError(413, "RequestEntityTooLarge", "The request body is too large.")
            parts.append(self.rfile.read(size))
            self.rfile.readline(65537)

    def _respond_fault(self, fault: Fault) -> None:
        code, message = fault.error()
        headers: dict[str, str] = {}
        retry_after = fault.retry_after_header()
        if retry_after is not None:
            headers["Retry-After"] = retry_after
        self._respond(fault.status or 500, {"error": {"code": code, "message": message}}, headers)

    def _respond(self, status: int, payload: Any, extra_headers: Mapping[str, str]) -> None:
        body = b"" if payload is None else json.dumps(payload, separators=(",", ":")).encode("utf-8")
        send_body = b"" if self.command == "HEAD" else body
        try:
            reason = http.HTTPStatus(status).phrase
        except ValueError:
            reason = "Error"
        request_id = str(uuid.uuid4())
        lines = [
            f"HTTP/1.1 {status} {reason}",
            "Cache-Control: no-cache",
            "Pragma: no-cache",
            "Expires: -1",
            f"Date: {formatdate(usegmt=True)}",
            f"Content-Length: {len(body)}",
        ]
        if payload is not None:
            lines.append("Content-Type: application/json; charset=utf-8")
        lines += [
            f"x-ms-request-id: {request_id}",
            f"x-ms-keyvault-service-version: {SERVICE_VERSION}",
            "x-ms-keyvault-region: local",
            f"x-ms-keyvault-network-info: conn_type=Ipv4;addr={self.client_address[0]};act_addr_fam=InterNetwork;",
            "Strict-Transport-Security: max-age=31536000;includeSubDomains",
            "X-Content-Type-Options: nosniff",
        ]
        for key, value in extra_headers.items():
            lines.append(f"{key}: {value}")
        if self.close_connection:
            lines.append("Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        self.wfile.write(head + send_body)


class _TLSServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    # socketserver's default backlog of 5 drops SYNs when a test opens 20
    # connections at once, and the client only retries after a second.
    request_queue_size = 128

    def __init__(
        self,
        address: tuple[str, int],
        ssl_context: ssl.SSLContext,
        emulator: KeyVaultEmulator,
    ) -> None:
        self.ssl_context = ssl_context
        self.emulator = emulator
        self._connections: set[ssl.SSLSocket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def finish_request(self, request: Any, client_address: Any) -> None:
        request.settimeout(_HANDSHAKE_TIMEOUT)
        try:
            connection = self.ssl_context.wrap_socket(request, server_side=True)
        except OSError as exc:
            _log.debug("TLS handshake with %s failed: %s", client_address, exc)
            return
        connection.settimeout(None)
        with self._connections_lock:
            self._connections.add(connection)
        try:
            _Handler(connection, client_address, self)
        finally:
            with self._connections_lock:
                self._connections.discard(connection)
            with contextlib.suppress(OSError):
                connection.close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        _log.debug("connection from %s ended with an error", client_address, exc_info=True)

    def open_connections(self) -> int:
        with self._connections_lock:
            return len(self._connections)

    def close_connections(self) -> None:
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                socket.socket.shutdown(connection, socket.SHUT_RDWR)


class KeyVaultEmulator:
    """One Key Vault (secrets only) served over HTTPS from a background thread.

    Use as a context manager (``with KeyVaultEmulator() as emu:``) or call
    :meth:`start` / :meth:`stop`. ``port=0`` picks a free port. Secrets
    survive ``stop()``; a later ``start()`` serves them again on the same port
    (and CA), which is how tests simulate a vault outage.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        ca: trustme.CA | None = None,
        ca_path: str | Path | None = None,
        tenant_id: str = DEFAULT_TENANT_ID,
        vault_name: str = "kv-local",
        clock: Callable[[], float] = time.time,
        propagation_delay: float = 0.0,
        max_records: int = 100_000,
    ) -> None:
        self.host = host
        self.tenant_id = tenant_id
        self.vault_name = vault_name
        self.faults = Faults()
        self._requested_port = port
        self._ca = ca or trustme.CA()
        self._ca_path = Path(ca_path) if ca_path is not None else None
        self._tempdir: str | None = None
        self._clock = clock
        self._propagation_delay = propagation_delay
        self._server: _TLSServer | None = None
        self._thread: threading.Thread | None = None
        self._records: deque[RequestRecord] = deque(maxlen=max_records)
        self._counters: Counter[tuple[str, str]] = Counter()
        self._records_lock = threading.Lock()
        self._store = VaultStore("https://127.0.0.1", clock=clock, propagation_delay=propagation_delay)
        self._api = _Api(self._store)

    # ------------------------------------------------------------ lifecycle

    def start(self) -> KeyVaultEmulator:
        if self._server is not None:
            return self
        if self._ca_path is None:
            self._tempdir = tempfile.mkdtemp(prefix="kvemulator-")
            self._ca_path = Path(self._tempdir) / "ca.pem"
            # Kept across stop()/start() so clients holding the path keep working; removed with the emulator.
            weakref.finalize(self, shutil.rmtree, self._tempdir, ignore_errors=True)
        self._ca_path.parent.mkdir(parents=True, exist_ok=True)
        self._ca.cert_pem.write_to_path(str(self._ca_path))
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        self._ca.issue_cert("127.0.0.1", "localhost", "::1").configure_cert(context)
        server = _TLSServer((self.host, self._requested_port), context, self)
        self._server = server
        self._requested_port = int(server.server_address[1])  # a restart comes back on the same port
        self._store.base_url = self.url
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name=f"kvemulator:{self.port}", daemon=True
        )
        self._thread.start()
        _log.info("Key Vault emulator listening on %s", self.url)
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        server.close_connections()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> KeyVaultEmulator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._server is not None

    @property
    def open_connections(self) -> int:
        """TLS connections open to the emulator now (a client that keeps its connections alive holds few)."""
        return self._server.open_connections() if self._server is not None else 0

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the emulator is not running")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """The vault URL, e.g. ``https://127.0.0.1:50123`` (no trailing slash)."""
        advertised = self.host if self.host not in ("", "0.0.0.0", "::") else "127.0.0.1"  # noqa: S104 - not a bind
        if ":" in advertised:
            advertised = f"[{advertised}]"
        return f"https://{advertised}:{self.port}"

    @property
    def ca_path(self) -> str:
        """PEM file of the CA that signed the server certificate (``connection_verify=``)."""
        if self._ca_path is None:
            raise RuntimeError("the emulator has not been started")
        return str(self._ca_path)

    @property
    def ca(self) -> trustme.CA:
        return self._ca

    # ------------------------------------------------------------ SDK helpers

    def client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments (besides the credential) for a real ``SecretClient`` pointed here."""
        return {"vault_url": self.url, "verify_challenge_resource": False, "connection_verify": self.ca_path}

    def secret_client(self, **overrides: Any) -> SecretClient:
        from azure.keyvault.secrets import SecretClient

        from kvemulator.credentials import StaticTokenCredential

        kwargs: dict[str, Any] = {"credential": StaticTokenCredential(), **self.client_kwargs(), **overrides}
        return SecretClient(**kwargs)

    def async_secret_client(self, **overrides: Any) -> AsyncSecretClient:
        from azure.keyvault.secrets.aio import SecretClient as AsyncSecretClient

        from kvemulator.credentials import AsyncStaticTokenCredential

        kwargs: dict[str, Any] = {"credential": AsyncStaticTokenCredential(), **self.client_kwargs(), **overrides}
        return AsyncSecretClient(**kwargs)

    # -------------------------------------------------------- request records

    def _record(
        self,
        *,
        method: str,
        path: str,
        kind: str,
        status: int,
        authenticated: bool,
        fault: str | None,
        started: float,
        clock: float,
    ) -> None:
        duration = time.perf_counter() - clock
        record = RequestRecord(method, path, kind, status, authenticated, fault, started, duration)
        with self._records_lock:
            self._records.append(record)
            if authenticated:
                self._counters[(method, kind)] += 1
        _access_log.info("%s %s %s %.1fms%s", method, path, status, duration * 1000, f" [{fault}]" if fault else "")

    @property
    def requests(self) -> list[RequestRecord]:
        """Every request received since the last reset, oldest first, including 401 challenges."""
        with self._records_lock:
            return list(self._records)

    def last_request(self, method: str, path: str, status: int | None = None) -> RequestRecord | None:
        """The newest request matching, searched from the end: no copy of a long log, a short hold of its lock
        (a test asking while the emulator serves others does not stall them)."""
        with self._records_lock:
            for record in reversed(self._records):
                if record.method == method.upper() and record.path == path and status in (None, record.status):
                    return record
        return None

    @property
    def counters(self) -> Counter[tuple[str, str]]:
        """Authenticated requests per ``(method, kind)``, e.g. ``("GET", "secrets")``."""
        with self._records_lock:
            return Counter(self._counters)

    def count(self, method: str | None = None, kind: str | None = None, *, include_challenges: bool = False) -> int:
        """How many requests matched (authenticated only unless ``include_challenges``)."""
        with self._records_lock:
            return sum(
                1
                for r in self._records
                if (include_challenges or r.authenticated)
                and (method is None or r.method == method.upper())
                and (kind is None or r.kind == kind)
            )

    def reset_counters(self) -> None:
        with self._records_lock:
            self._records.clear()
            self._counters.clear()

    # ------------------------------------------------------ direct state access

    def put(
        self,
        name: str,
        value: str,
        *,
        tags: Mapping[str, str] | None = None,
        expires_on: TimeLike | None = None,
        not_before: TimeLike | None = None,
        content_type: str | None = None,
        enabled: bool = True,
        created_on: TimeLike | None = None,
        managed: bool = False,
    ) -> dict[str, Any]:
        """Create a new version without HTTP; same rules as ``PUT /secrets/{name}``.

        Returns the version as Key Vault would return it (with ``value``),
        plus ``name`` and ``version`` keys. Raises :class:`VaultError`.
        """
        return self._store.put(
            name,
            value,
            content_type=content_type,
            enabled=enabled,
            nbf=_unix(not_before),
            exp=_unix(expires_on),
            tags=tags,
            created=_unix(created_on),
            managed=managed,
        )

    def update(
        self,
        name: str,
        version: str | None = None,
        *,
        enabled: bool | _Unset = UNSET,
        tags: Mapping[str, str] | _Unset | None = UNSET,
        expires_on: TimeLike | _Unset | None = UNSET,
        not_before: TimeLike | _Unset | None = UNSET,
        content_type: str | _Unset | None = UNSET,
    ) -> dict[str, Any]:
        """Change attributes of one version (latest if ``version`` is None) without HTTP.

        Unlike the REST PATCH, passing None clears ``expires_on``/``not_before``/``tags``/``content_type``.
        """
        changes: dict[str, Any] = {}
        if not isinstance(enabled, _Unset):
            changes["enabled"] = enabled
        if not isinstance(tags, _Unset):
            changes["tags"] = dict(tags) if tags is not None else None
        if not isinstance(expires_on, _Unset):
            changes["exp"] = _unix(expires_on)
        if not isinstance(not_before, _Unset):
            changes["nbf"] = _unix(not_before)
        if not isinstance(content_type, _Unset):
            changes["content_type"] = content_type
        return self._store.modify(name, version, changes)

    def delete(self, name: str, *, purge: bool = False) -> None:
        """Soft-delete (and optionally purge) a secret without HTTP."""
        self._store.remove(name, purge=purge)

    def versions(self, name: str, *, include_deleted: bool = False) -> list[dict[str, Any]]:
        """Every version of a secret with its value, oldest first ([] if unknown)."""
        return self._store.versions(name, include_deleted=include_deleted)

    def latest(self, name: str) -> dict[str, Any] | None:
        """The most recently created version with its value, or None."""
        return self._store.latest(name)

    def secret_names(self) -> list[str]:
        """Names of active (not deleted) secrets, sorted case-insensitively."""
        return self._store.names()

    def deleted_names(self) -> list[str]:
        return self._store.names(deleted=True)

    def reset(self) -> None:
        """Forget all secrets, faults and request records."""
        self._store.clear()
        self.faults.clear()
        self.reset_counters()

    def __repr__(self) -> str:
        where = self.url if self.running else "stopped"
        return f"KeyVaultEmulator({where})"
