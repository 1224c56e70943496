"""The doubles: one HTTPS server for ARM, Graph and the token endpoint, one per account data plane."""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import re
import secrets
import shutil
import ssl
import tempfile
import threading
import uuid
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import trustme

_log = logging.getLogger("azuredoubles")
_MAX_BODY = 1024 * 1024

ARM = re.compile(r"^/subscriptions/(?P<sub>[^/]+)/resourceGroups/(?P<rg>[^/]+)/providers/(?P<rest>.+)$", re.I)
COG = re.compile(r"^Microsoft\.CognitiveServices/accounts/(?P<name>[^/]+)/(?P<op>listKeys|regenerateKey)$", re.I)
REDIS = re.compile(r"^Microsoft\.Cache/redis/(?P<name>[^/]+)/(?P<op>listKeys|regenerateKey)$", re.I)
AMR = re.compile(
    r"^Microsoft\.Cache/redisEnterprise/(?P<name>[^/]+)/databases/(?P<db>[^/]+)/(?P<op>listKeys|regenerateKey)$", re.I)
APP = re.compile(r"^/v1\.0/applications/(?P<id>[^/]+?)(?:/(?P<op>addPassword|removePassword))?$")
TOKEN = re.compile(r"^/(?P<tenant>[^/]+)/oauth2/v2\.0/token$")


GENERATED: list[str] = []  # every key and password the doubles ever made, for the tests' leak scan


def new_key() -> str:
    """A provider-style key: 84 characters of base64 (Azure OpenAI keys are 32 hex, Redis 44 base64)."""
    key = base64.b64encode(secrets.token_bytes(63)).decode()
    GENERATED.append(key)
    return key


class DoubleError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


@dataclass
class CognitiveAccount:
    subscription: str
    resource_group: str
    name: str
    key1: str = field(default_factory=new_key, repr=False)
    key2: str = field(default_factory=new_key, repr=False)
    data_plane: _Server | None = field(default=None, repr=False)
    endpoint: str = ""
    regenerated: list[str] = field(default_factory=list)  # slot names, in the order regenerateKey hit them

    def keys(self) -> dict[str, str]:
        return {"key1": self.key1, "key2": self.key2}


@dataclass
class RedisCache:
    """An Azure Cache for Redis (``database`` None) or an Azure Managed Redis database; ``node`` is the
    real redis-server (host, port, admin user, admin password) whose ``default`` user follows the keys."""

    subscription: str
    resource_group: str
    name: str
    node: tuple[str, int, str, str] = field(repr=False)
    database: str | None = None
    primary: str = field(default_factory=new_key, repr=False)
    secondary: str = field(default_factory=new_key, repr=False)
    issued: list[str] = field(default_factory=list, repr=False)  # every key this cache ever had
    regenerated: list[str] = field(default_factory=list)  # slot names, in the order regenerateKey hit them

    def __post_init__(self) -> None:
        self.issued += [self.primary, self.secondary]

    def sync(self) -> None:
        import redis

        host, port, user, password = self.node
        client = redis.Redis(host=host, port=port, username=user, password=password, socket_timeout=5)
        try:
            args = ("SETUSER", "default", "on", "resetpass", f">{self.primary}", f">{self.secondary}",
                    "~*", "&*", "+@all")
            client.execute_command("ACL", *args)  # type: ignore[no-untyped-call]
        finally:
            client.close()

    def keys(self) -> dict[str, str]:
        return {"primaryKey": self.primary, "secondaryKey": self.secondary}


@dataclass
class EntraApp:
    tenant: str
    object_id: str
    app_id: str
    passwords: list[dict[str, Any]] = field(default_factory=list, repr=False)
    history: list[tuple[str, str]] = field(default_factory=list)  # ("add" | "remove", keyId), in order

    def add(self, display_name: str | None, end: str | None) -> dict[str, Any]:
        text = secrets.token_urlsafe(30).replace("-", "~")[:40]
        GENERATED.append(text)
        cred = {"customKeyIdentifier": None, "displayName": display_name, "endDateTime": end,
                "hint": text[:3], "keyId": str(uuid.uuid4()), "secretText": text,
                "startDateTime": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}
        self.passwords.append(cred)
        self.history.append(("add", str(cred["keyId"])))
        return dict(cred)

    def public(self) -> list[dict[str, Any]]:
        return [{k: v for k, v in p.items() if k != "secretText"} | {"secretText": None} for p in self.passwords]

    def accepts(self, secret: str) -> bool:
        now = datetime.now(UTC)
        for cred in self.passwords:
            end = cred.get("endDateTime")
            alive = end is None or datetime.fromisoformat(str(end).replace("Z", "+00:00")) > now
            if alive and secrets.compare_digest(str(cred["secretText"]).encode(), secret.encode()):
                return True
        return False


@dataclass(frozen=True)
class Request:
    """One request the doubles served (never a body)."""

    method: str
    path: str
    status: int


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: _Server

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PATCH(self) -> None:
        self._dispatch()

    def log_message(self, format: str, *args: Any) -> None:
        _log.debug("http: " + format, *args)

    def _dispatch(self) -> None:
        split = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(min(length, _MAX_BODY)) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        try:
            status, payload = self.server.route(self.command.upper(), unquote(split.path), parse_qs(split.query),
                                                headers, body)
        except DoubleError as err:
            status, payload = err.status, {"error": {"code": err.code, "message": err.message}}
        except Exception:  # a bug in a double must still answer
            _log.exception("double failure on %s %s", self.command, split.path)
            status, payload = 500, {"error": {"code": "InternalError", "message": "double bug"}}
        self.server.record(Request(self.command.upper(), split.path, status))
        data = b"" if payload is None else json.dumps(payload).encode()
        head = [f"HTTP/1.1 {status} X", f"Date: {formatdate(usegmt=True)}", f"Content-Length: {len(data)}",
                f"x-ms-request-id: {uuid.uuid4()}"]
        if payload is not None:
            head.append("Content-Type: application/json; charset=utf-8")
        self.wfile.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + data)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 64

    def __init__(self, host: str, context: ssl.SSLContext, route: Callable[..., tuple[int, Any]],
                 record: Callable[[Request], None]) -> None:
        self.ssl_context = context
        self.route = route
        self.record = record
        super().__init__((host, 0), _Handler)
        self.thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def finish_request(self, request: Any, client_address: Any) -> None:
        request.settimeout(10)
        try:
            conn = self.ssl_context.wrap_socket(request, server_side=True)
        except OSError:
            return
        conn.settimeout(None)
        try:
            _Handler(conn, client_address, self)
        finally:
            with contextlib.suppress(OSError):
                conn.close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        _log.debug("connection from %s ended with an error", client_address, exc_info=True)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.server_address[1]}"

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        self.thread.join(timeout=5)


def _json(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body or b"{}")
    except ValueError as exc:
        raise DoubleError(400, "BadRequest", "body is not JSON") from exc
    if not isinstance(data, dict):
        raise DoubleError(400, "BadRequest", "body must be an object")
    return data


class AzureDoubles:
    """ARM + Graph + Entra token endpoint on one HTTPS port; ``add_*`` declares the resources."""

    def __init__(self, *, ca: trustme.CA | None = None, host: str = "127.0.0.1") -> None:
        self.host = host
        self.ca = ca or trustme.CA()
        self.accounts: dict[tuple[str, str, str], CognitiveAccount] = {}
        self.caches: dict[tuple[str, str, str, str | None], RedisCache] = {}
        self.apps: dict[str, EntraApp] = {}
        self.requests: list[Request] = []
        self.failures: list[tuple[str, int]] = []  # (path fragment, status): the next matching request fails
        self._lock = threading.RLock()
        self._server: _Server | None = None
        self._context: ssl.SSLContext | None = None
        self._tmp: str | None = None
        self.ca_path = ""

    # ------------------------------------------------------------ lifecycle

    def start(self) -> AzureDoubles:
        self._tmp = tempfile.mkdtemp(prefix="azuredoubles-")
        weakref.finalize(self, shutil.rmtree, self._tmp, ignore_errors=True)
        self.ca_path = str(Path(self._tmp) / "ca.pem")
        self.ca.cert_pem.write_to_path(self.ca_path)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        self.ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
        self._context = context
        self._server = _Server(self.host, context, self._route, self._record)
        return self

    def stop(self) -> None:
        servers = [a.data_plane for a in self.accounts.values() if a.data_plane is not None]
        if self._server is not None:
            servers.append(self._server)
        self._server = None
        for server in servers:
            server.stop()

    def __enter__(self) -> AzureDoubles:
        return self.start()

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the doubles are not running")
        return self._server.url

    # ------------------------------------------------------------ resources

    def add_cognitive_account(self, subscription: str, resource_group: str, name: str) -> CognitiveAccount:
        assert self._context is not None, "start() first"
        account = CognitiveAccount(subscription.lower(), resource_group.lower(), name.lower())
        account.data_plane = _Server(self.host, self._context,
                                     lambda *a: self._data_plane(account, *a), self._record)
        account.endpoint = account.data_plane.url
        self.accounts[(account.subscription, account.resource_group, account.name)] = account
        return account

    def add_redis(self, subscription: str, resource_group: str, name: str, node: tuple[str, int, str, str],
                  *, database: str | None = None) -> RedisCache:
        cache = RedisCache(subscription.lower(), resource_group.lower(), name.lower(), node,
                           database.lower() if database else None)
        cache.sync()
        self.caches[(cache.subscription, cache.resource_group, cache.name, cache.database)] = cache
        return cache

    def add_app(self, tenant: str, object_id: str, app_id: str) -> EntraApp:
        app = EntraApp(tenant.lower(), object_id.lower(), app_id.lower())
        self.apps[app.object_id] = app
        return app

    def fail_next(self, fragment: str, status: int) -> None:
        """The next request whose path contains ``fragment`` answers ``status``."""
        with self._lock:
            self.failures.append((fragment, status))

    def count(self, fragment: str) -> int:
        with self._lock:
            return sum(1 for r in self.requests if fragment in r.path)

    # -------------------------------------------------------------- routing

    def _record(self, request: Request) -> None:
        with self._lock:
            self.requests.append(request)

    def _injected(self, path: str) -> None:
        with self._lock:
            for i, (fragment, status) in enumerate(self.failures):
                if fragment in path:
                    del self.failures[i]
                    raise DoubleError(status, "InjectedFault", "injected by the test")

    @staticmethod
    def _bearer(headers: dict[str, str]) -> None:
        scheme, _, token = headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise DoubleError(401, "AuthenticationFailed", "missing bearer token")

    def _route(self, method: str, path: str, query: dict[str, list[str]], headers: dict[str, str],
               body: bytes) -> tuple[int, Any]:
        self._injected(path)
        token = TOKEN.match(path)
        if token is not None:
            return self._token(method, token.group("tenant"), body)
        self._bearer(headers)
        arm = ARM.match(path)
        if arm is not None:
            if "api-version" not in query:
                raise DoubleError(400, "MissingApiVersionParameter", "api-version is required")
            if method != "POST":
                raise DoubleError(405, "MethodNotAllowed", "POST only")
            return self._arm(arm.group("sub").lower(), arm.group("rg").lower(), arm.group("rest"), body)
        app = APP.match(path)
        if app is not None:
            return self._graph(method, app.group("id").lower(), app.group("op"), body)
        raise DoubleError(404, "NotFound", "no such route")

    def _arm(self, sub: str, rg: str, rest: str, body: bytes) -> tuple[int, Any]:
        with self._lock:
            if (m := COG.match(rest)) is not None:
                account = self.accounts.get((sub, rg, m.group("name").lower()))
                if account is None:
                    raise DoubleError(404, "ResourceNotFound", "account not found")
                if m.group("op").lower() == "regeneratekey":
                    slot = _json(body).get("keyName")
                    if slot not in ("Key1", "Key2"):
                        raise DoubleError(400, "InvalidRequestContent", "keyName must be Key1 or Key2")
                    setattr(account, slot.lower(), new_key())
                    account.regenerated.append(slot)
                return 200, account.keys()
            m = REDIS.match(rest) or AMR.match(rest)
            if m is not None:
                database = m.groupdict().get("db")
                cache = self.caches.get((sub, rg, m.group("name").lower(), database.lower() if database else None))
                if cache is None:
                    raise DoubleError(404, "ResourceNotFound", "cache not found")
                if m.group("op").lower() == "regeneratekey":
                    slot = _json(body).get("keyType")
                    if slot not in ("Primary", "Secondary"):
                        raise DoubleError(400, "InvalidRequestBody", "keyType must be Primary or Secondary")
                    setattr(cache, slot.lower(), new_key())
                    cache.issued.append(getattr(cache, slot.lower()))
                    cache.regenerated.append(slot)
                    cache.sync()
                return 200, cache.keys()
        raise DoubleError(404, "InvalidResourceType", "resource type not served by the double")

    def _graph(self, method: str, object_id: str, op: str | None, body: bytes) -> tuple[int, Any]:
        with self._lock:
            app = self.apps.get(object_id)
            if app is None:
                raise DoubleError(404, "Request_ResourceNotFound", "application not found")
            if op is None and method == "GET":
                return 200, {"id": app.object_id, "appId": app.app_id, "passwordCredentials": app.public()}
            if op == "addPassword" and method == "POST":
                cred = _json(body).get("passwordCredential") or {}
                if not isinstance(cred, dict):
                    raise DoubleError(400, "BadRequest", "passwordCredential must be an object")
                return 200, {"@odata.context": "https://graph.microsoft.com/v1.0/$metadata#microsoft.graph."
                             "passwordCredential", **app.add(cred.get("displayName"), cred.get("endDateTime"))}
            if op == "removePassword" and method == "POST":
                key_id = _json(body).get("keyId")
                before = len(app.passwords)
                app.passwords = [p for p in app.passwords if p["keyId"] != key_id]
                if len(app.passwords) == before:
                    raise DoubleError(400, "Request_BadRequest", "No password credential found with keyId")
                app.history.append(("remove", str(key_id)))
                return 204, None
        raise DoubleError(405, "MethodNotAllowed", "not served")

    def _token(self, method: str, tenant: str, body: bytes) -> tuple[int, Any]:
        if method != "POST":
            raise DoubleError(405, "invalid_request", "POST only")
        form = {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace")).items()}
        if form.get("grant_type") != "client_credentials" or not form.get("scope"):
            return 400, {"error": "invalid_request", "error_description": "AADSTS900144: grant_type and scope"}
        with self._lock:
            app = next((a for a in self.apps.values()
                        if a.app_id == form.get("client_id", "").lower() and a.tenant == tenant.lower()), None)
            if app is None:
                return 400, {"error": "unauthorized_client", "error_description": "AADSTS700016: app not found"}
            if not app.accepts(form.get("client_secret", "")):
                return 401, {"error": "invalid_client",
                             "error_description": "AADSTS7000215: Invalid client secret provided."}
        return 200, {"token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599,
                     "access_token": base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()}

    def _data_plane(self, account: CognitiveAccount, method: str, path: str, query: dict[str, list[str]],
                    headers: dict[str, str], body: bytes) -> tuple[int, Any]:
        self._injected(path)
        key = headers.get("api-key", "")
        if not key or not any(secrets.compare_digest(key.encode(), k.encode()) for k in (account.key1, account.key2)):
            return 401, {"error": {"code": "401", "message": "Access denied due to invalid subscription key or "
                                                           "wrong API endpoint."}}
        if method == "GET" and path.rstrip("/") in ("/openai/models", "/openai/deployments"):
            return 200, {"object": "list", "data": [{"id": "gpt-4o-mini", "object": "model"}]}
        raise DoubleError(404, "NotFound", "no such data-plane route")


__all__ = ["GENERATED", "AzureDoubles", "CognitiveAccount", "EntraApp", "RedisCache", "Request", "new_key"]
