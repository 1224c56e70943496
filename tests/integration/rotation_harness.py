"""Shared scaffolding for engine-level tests against real PostgreSQL and Redis.

A ``Probe`` plays a consumer that re-reads the vault (the emulator's state,
what the SDK would get) and authenticates with whatever it serves, every few
milliseconds, in a thread of its own so the rotation's event loop never
blocks it. It counts every attempt and failure.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import psycopg
import redis

from kvemulator import KeyVaultEmulator
from tests.support import leakscan, operator_files
from tests.support.emulator import latest_of
from tests.support.services import PostgresServer, RedisServer, no_retry, redis_command


def pg_can_login(conninfo: str) -> bool:
    try:
        with psycopg.connect(conninfo, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
        return True
    except psycopg.OperationalError:
        return False


def redis_url_parts(value: str) -> tuple[str | None, str]:
    if value.startswith(("redis://", "rediss://")):
        from urllib.parse import unquote, urlsplit

        parts = urlsplit(value)
        return (unquote(parts.username) if parts.username else None), unquote(parts.password or "")
    return None, value


def redis_can_auth(server: RedisServer, value: str, node: int = 0) -> bool:
    user, password = redis_url_parts(value)
    host, port = server.nodes[node]
    client = redis.Redis(host=host, port=port, username=user, password=password, retry=no_retry(),
                         socket_timeout=3, socket_connect_timeout=3)
    try:
        return bool(client.ping())
    except (redis.AuthenticationError, redis.ResponseError, redis.ConnectionError):
        return False
    finally:
        client.close()


@dataclass
class Probe:
    emulator: KeyVaultEmulator
    secret: str
    check: Callable[[str], bool]
    interval: float = 0.01
    attempts: int = 0
    failures: list[float] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> Probe:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.is_set():
            value = str(latest_of(self.emulator, self.secret)["value"])
            self.attempts += 1
            if not self.check(value):
                self.failures.append(time.monotonic())
            time.sleep(self.interval)

    @property
    def failure_window_ms(self) -> float:
        if not self.failures:
            return 0.0
        return (self.failures[-1] - self.failures[0]) * 1000 + self.interval * 1000


def setup_postgres_alternating(emu: KeyVaultEmulator, pg: PostgresServer, *, secret: str = "database-connection-string",
                               uri: bool = True) -> dict[str, str]:
    """Roles blue/green under a NOLOGIN owner; the vault serves blue's credential."""
    suffix = uuid.uuid4().hex[:8]
    blue, green, owner = f"app_blue_{suffix}", f"app_green_{suffix}", f"app_owner_{suffix}"
    password = "initial-" + uuid.uuid4().hex
    with psycopg.connect(pg.admin_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE ROLE "{owner}" NOLOGIN')
        for role in (blue, green):
            conn.execute(f'CREATE ROLE "{role}" LOGIN INHERIT IN ROLE "{owner}"')
            conn.execute(f'ALTER ROLE "{role}" SET ROLE "{owner}"')
        conn.execute(f"ALTER ROLE \"{blue}\" PASSWORD '{password}'")
        conn.execute(f'GRANT CREATE ON SCHEMA public TO "{owner}"')
    leakscan.register([password])
    emu.put("pg-admin", pg.admin_dsn)
    if uri:
        value = f"postgresql://{blue}:{password}@{pg.host}:{pg.port}/postgres?connect_timeout=5&application_name=svc"
    else:
        value = pg.dsn(blue, password)
    declare_postgres(emu, pg, secret, strategy="alternating", roles=[blue, green], owner_role=owner)
    emu.put(secret, value, tags={"rotation-policy": "postgres"})
    return {"blue": blue, "green": green, "owner": owner}


def postgres_target(pg: PostgresServer, *, strategy: str, roles: list[str], owner_role: str | None = None,
                    admin_secret: str = "pg-admin", **more: object) -> dict[str, object]:
    target: dict[str, object] = {"kind": "postgres", "host": pg.host, "port": pg.port, "database": "postgres",
                                 "adminSecret": admin_secret, "strategy": strategy, "roles": roles, **more}
    if owner_role is not None:
        target["ownerRole"] = owner_role
    return target


def declare_postgres(emu: KeyVaultEmulator, pg: PostgresServer, secret: str, *, strategy: str, roles: list[str],
                     owner_role: str | None = None, interval_days: int = 90, **more: object) -> str:
    """Declare ``secret`` as a PostgreSQL-rotated secret of this test vault's operator file."""
    name = f"pg-{secret}"
    operator_files.declare(
        emu,
        admin_secrets=["pg-admin"],
        targets={name: {**postgres_target(pg, strategy=strategy, roles=roles, owner_role=owner_role), **more}},
        secrets={secret: {"rotator": "postgres", "target": name, "intervalDays": interval_days}},
    )
    return name


def setup_postgres_single(emu: KeyVaultEmulator, pg: PostgresServer, *,
                          secret: str = "database-connection-string") -> str:
    role = f"app_single_{uuid.uuid4().hex[:8]}"
    password = "initial-" + uuid.uuid4().hex
    with psycopg.connect(pg.admin_dsn, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE \"{role}\" LOGIN PASSWORD '{password}'")
    leakscan.register([password])
    emu.put("pg-admin", pg.admin_dsn)
    declare_postgres(emu, pg, secret, strategy="single", roles=[role])
    emu.put(secret, pg.dsn(role, password))
    return role


def setup_redis(emu: KeyVaultEmulator, server: RedisServer, *, secret: str = "redis-password",
                named_user: bool = False) -> None:
    """The vault serves the ``default`` user's password (or a named user's redis:// URL)."""
    admin = f"redis://{server.admin_user}:{server.admin_password}@{server.host}:{server.port}/0"
    emu.put("redis-admin", admin)
    if named_user:
        password = "initial-" + uuid.uuid4().hex
        user = f"svc_{uuid.uuid4().hex[:6]}"
        client = server.client()
        redis_command(client, "ACL", "SETUSER", user, "on", f">{password}", "~*", "&*", "+@all")
        client.close()
        value = f"redis://{user}:{password}@{server.host}:{server.port}/0"
    else:
        user = "default"
        password = server.default_password
        value = password
    leakscan.register([password])
    declare_redis(emu, server, secret, user=user)
    emu.put(secret, value, tags={"rotation-policy": "redis"})


def redis_target(server: RedisServer, *, user: str = "default", admin_secret: str = "redis-admin",
                 **more: object) -> dict[str, object]:
    return {"kind": "redis", "nodes": [f"{h}:{p}" for h, p in server.nodes], "user": user,
            "adminSecret": admin_secret, **more}


def declare_redis(emu: KeyVaultEmulator, server: RedisServer, secret: str, *, user: str = "default",
                  interval_days: int = 90, **more: object) -> str:
    """Declare ``secret`` as a Redis-rotated secret of this test vault's operator file."""
    name = f"redis-{secret}"
    operator_files.declare(
        emu,
        admin_secrets=["redis-admin"],
        targets={name: {**redis_target(server, user=user), **more}},
        secrets={secret: {"rotator": "redis", "target": name, "intervalDays": interval_days}},
    )
    return name


def rotation_ids(emu: KeyVaultEmulator, secret: str) -> set[str]:
    return {str(v["tags"]["rotated-id"]) for v in emu.versions(secret) if (v.get("tags") or {}).get("rotated-id")}


def values(emu: KeyVaultEmulator, secret: str) -> list[str]:
    return [str(v["value"]) for v in emu.versions(secret)]


