"""The trust boundary: whoever can write one secret's value and tags gains nothing more.

Each test plays an attacker who controls only one secret in an allowed vault
(its value and its tags; a team that may manage its own secret) and lets the
timer sweep act on it, as it would every day with no function key involved.
Every attack runs against real PostgreSQL (SCRAM), real Redis (ACL) and the
Key Vault emulator, and each test proves three things: the attack is refused
with a clear reason, nothing changed downstream or in the vault, and the
admin credentials still work.
"""

from __future__ import annotations

import socket
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from kvemulator import KeyVaultEmulator
from kvemulator.emulator import KIND_SECRET, KIND_SECRET_VERSION
from shared.bootstrap import Container
from shared.domain.errors import OverlapActive, TagRefused
from shared.domain.record import RotationRequest, Trigger
from shared.service.sweep import sweep
from shared.service.views import secret_status
from tests.integration.rotation_harness import (
    pg_can_login,
    redis_can_auth,
    setup_postgres_alternating,
    setup_postgres_single,
    setup_redis,
)
from tests.support import leakscan, operator_files
from tests.support.emulator import latest_of
from tests.support.services import PostgresServer, RedisServer

SOON = timedelta(days=3)  # inside the near-expiry window: the sweep acts on it


def due() -> datetime:
    return datetime.now(UTC) + SOON


class Listener:
    """A TCP server standing in for a host the attacker controls; it records every byte it receives."""

    def __init__(self) -> None:
        self.received = bytearray()
        self.connections = 0
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(8)
        self._sock.settimeout(0.2)
        self.port = self._sock.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                continue
            self.connections += 1
            conn.settimeout(0.5)
            try:
                while chunk := conn.recv(4096):
                    self.received.extend(chunk)
            except OSError:
                pass
            finally:
                conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._sock.close()


@pytest.fixture
def listener() -> Iterator[Listener]:
    server = Listener()
    try:
        yield server
    finally:
        server.close()


def authid(pg: PostgresServer) -> dict[str, Any]:
    """Every role's password verifier and login flag: "nothing changed" in PostgreSQL."""
    with psycopg.connect(pg.admin_dsn) as conn:
        rows = conn.execute("SELECT rolname, rolpassword, rolcanlogin FROM pg_authid ORDER BY rolname").fetchall()
    return {name: (password, login) for name, password, login in rows}


def acl(server: RedisServer) -> list[str]:
    """The whole ACL (passwords as hashes): "nothing changed" in Redis."""
    client = server.client()
    try:
        return sorted(str(line) for line in client.acl_list())
    finally:
        client.close()


def version_count(emu: KeyVaultEmulator, name: str) -> int:
    return len(emu.versions(name))


def admin_still_works(pg: PostgresServer | None = None, redis_server: RedisServer | None = None) -> None:
    if pg is not None:
        assert pg_can_login(pg.admin_dsn)
    if redis_server is not None:
        client = redis_server.client()
        try:
            assert client.ping()
        finally:
            client.close()


def failures(summary: Any, name: str) -> list[dict[str, Any]]:
    return [e for e in summary.errors if e["secret"] == name]


# ------------------------------------------------------------------------------------ 1 and 2: Redis


@pytest.mark.parametrize(
    "tags",
    [
        pytest.param({"rotation-nodes": "127.0.0.1:{port}"}, id="1-tag-rotation-nodes"),
        pytest.param({"rotation-user": "admin"}, id="2-tag-rotation-user-admin"),
        pytest.param({"Rotation-Admin-Secret": "redis-admin"}, id="5-tag-admin-secret-other-case"),
    ],
)
async def test_redis_target_tags_are_refused_and_nothing_is_sent_anywhere(
    emulator: KeyVaultEmulator, container: Container, redis_server_fresh: RedisServer, listener: Listener,
    tags: dict[str, str],
) -> None:
    setup_redis(emulator, redis_server_fresh)
    current = emulator.latest("redis-password")
    assert current is not None
    hostile = {k: v.format(port=listener.port) for k, v in tags.items()}
    emulator.put("redis-password", str(current["value"]), tags={**current["tags"], **hostile}, expires_on=due())
    acl_before, versions_before = acl(redis_server_fresh), version_count(emulator, "redis-password")

    summary = await sweep(container)

    [error] = failures(summary, "redis-password")
    assert error["code"] == "TagRefused" and next(iter(tags)).lower() in error["message"]
    assert listener.connections == 0 and not listener.received
    assert acl(redis_server_fresh) == acl_before
    assert version_count(emulator, "redis-password") == versions_before
    admin_still_works(redis_server=redis_server_fresh)


@pytest.mark.parametrize("form", ["url-to-attacker-host", "url-naming-the-admin-user"])
async def test_a_redis_secret_value_pointing_elsewhere_is_refused_before_any_connection(
    emulator: KeyVaultEmulator, container: Container, redis_server_fresh: RedisServer, listener: Listener,
    form: str,
) -> None:
    """The value is data: a URL to another host, or naming another ACL user, is refused, not followed."""
    rs = redis_server_fresh
    setup_redis(emulator, rs)
    if form == "url-to-attacker-host":
        value = f"redis://default:{rs.default_password}@127.0.0.1:{listener.port}/0"
    else:
        value = f"redis://{rs.admin_user}:{rs.admin_password}@{rs.host}:{rs.port}/0"
    emulator.put("redis-password", value, tags={"rotation-policy": "redis"}, expires_on=due())
    acl_before, versions_before = acl(rs), version_count(emulator, "redis-password")

    summary = await sweep(container)

    [error] = failures(summary, "redis-password")
    assert error["code"] == "ConfigurationError"
    assert listener.connections == 0
    assert acl(rs) == acl_before
    assert version_count(emulator, "redis-password") == versions_before
    admin_still_works(redis_server=rs)


# ------------------------------------------------------------------------------------ 3 and 4: PostgreSQL


@pytest.mark.parametrize(
    "tags",
    [
        pytest.param({"rotation-roles": "postgres,{green}", "rotation-owner-role": "{owner}"}, id="3-tag-roles"),
        pytest.param({"rotation-owner-role": "postgres"}, id="3-tag-owner-role"),
        pytest.param({"rotation-probe": "COPY (SELECT 1) TO PROGRAM 'touch {marker}'"}, id="4-tag-probe"),
        pytest.param({"rotation-admin-secret": "jwt-signing-key"}, id="5-tag-admin-secret"),
        pytest.param({"rotation-strategy": "single"}, id="tag-strategy"),
    ],
)
async def test_postgres_target_tags_are_refused_and_no_role_changes(
    emulator: KeyVaultEmulator, container: Container, postgres_server: PostgresServer, tmp_path: Path,
    tags: dict[str, str],
) -> None:
    roles = setup_postgres_alternating(emulator, postgres_server)
    marker = tmp_path / f"pwned-{uuid.uuid4().hex}"
    current = emulator.latest("database-connection-string")
    assert current is not None
    hostile = {k: v.format(marker=marker, **roles) for k, v in tags.items()}
    emulator.put("database-connection-string", str(current["value"]), tags={**current["tags"], **hostile},
                 expires_on=due())
    before, versions_before = authid(postgres_server), version_count(emulator, "database-connection-string")

    summary = await sweep(container)

    [error] = failures(summary, "database-connection-string")
    assert error["code"] == "TagRefused"
    assert authid(postgres_server) == before
    assert not marker.exists()
    assert version_count(emulator, "database-connection-string") == versions_before
    assert pg_can_login(str(current["value"]))
    admin_still_works(pg=postgres_server)


@pytest.mark.parametrize(
    "form",
    ["superuser", "another-teams-role", "hostaddr-redirect", "other-database", "other-port"],
)
async def test_a_postgres_secret_value_naming_another_role_or_host_is_refused(
    emulator: KeyVaultEmulator, container: Container, postgres_server: PostgresServer, listener: Listener,
    form: str,
) -> None:
    """3: writing the superuser (or another team's role) into the secret does not get it re-passworded."""
    pg = postgres_server
    roles = setup_postgres_alternating(emulator, pg)
    other = setup_postgres_single(emulator, pg, secret="other-teams-connection-string")
    other_value = str(latest_of(emulator, "other-teams-connection-string")["value"])
    emulator.put("other-teams-connection-string", other_value, expires_on=datetime.now(UTC) + timedelta(days=80))
    password = "attacker-" + uuid.uuid4().hex
    leakscan.register([password])
    value = {
        "superuser": pg.dsn(pg.superuser, password),
        "another-teams-role": pg.dsn(other, password),
        "hostaddr-redirect": pg.dsn(roles["blue"], password) + f" hostaddr=127.0.0.2 port={listener.port}",
        "other-database": pg.dsn(roles["blue"], password, dbname="template1"),
        "other-port": make_conninfo(pg.dsn(roles["blue"], password), port=listener.port),
    }[form]
    emulator.put("database-connection-string", value, tags={"rotation-policy": "postgres"}, expires_on=due())
    before = authid(pg)
    versions_before = version_count(emulator, "database-connection-string")

    summary = await sweep(container)

    [error] = failures(summary, "database-connection-string")
    assert error["code"] == "ConfigurationError"
    assert authid(pg) == before
    assert listener.connections == 0
    assert version_count(emulator, "database-connection-string") == versions_before
    admin_still_works(pg=pg)


async def test_the_admin_credential_goes_only_to_the_declared_host_whatever_the_admin_secret_says(
    emulator: KeyVaultEmulator, container: Container, postgres_server: PostgresServer, listener: Listener,
) -> None:
    """Whoever can write the admin secret cannot redirect where the app sends it."""
    setup_postgres_alternating(emulator, postgres_server)
    admin = str(latest_of(emulator, "pg-admin")["value"])
    emulator.put("pg-admin", make_conninfo(admin, port=listener.port))
    current = emulator.latest("database-connection-string")
    assert current is not None
    emulator.put("database-connection-string", str(current["value"]), tags=current["tags"], expires_on=due())

    summary = await sweep(container)

    assert summary.rotated == 1, summary.errors
    assert listener.connections == 0
    latest = emulator.latest("database-connection-string")
    assert latest is not None and pg_can_login(str(latest["value"]))


# ------------------------------------------------------------------------------------ 5: admin secrets


async def test_an_admin_secret_cannot_be_made_tag_managed(emulator: KeyVaultEmulator, container: Container,
                                                           postgres_server: PostgresServer) -> None:
    """Under a ``*`` pattern, tags that would rotate the admin secret itself are not even read."""
    setup_postgres_alternating(emulator, postgres_server)
    admin = str(latest_of(emulator, "pg-admin")["value"])
    emulator.put("pg-admin", admin, tags={"rotation-policy": "random", "rotation-interval-days": "1"},
                 expires_on=due())
    versions_before = version_count(emulator, "pg-admin")

    summary = await sweep(container)

    assert not failures(summary, "pg-admin")
    assert version_count(emulator, "pg-admin") == versions_before
    admin_still_works(pg=postgres_server)


async def test_an_unlisted_secret_is_not_managed_by_tags_alone(emulator: KeyVaultEmulator,
                                                               container: Container) -> None:
    operator_files.write(emulator, {**operator_files.read(emulator), "tagManaged": []})
    emulator.put("partner-token", "partner-token-value-0123456789",
                 tags={"rotation-policy": "random", "rotation-interval-days": "7"}, expires_on=due())

    summary = await sweep(container)

    assert summary.managed == 0 and summary.rotated == 0
    assert version_count(emulator, "partner-token") == 1


# ------------------------------------------------------------------------------------ 6: strength


@pytest.mark.parametrize(
    "tags",
    [
        {"rotation-encoding": "text", "rotation-alphabet": "hex", "rotation-length": "16"},  # 64 bits
        {"rotation-encoding": "text", "rotation-alphabet": "alnum", "rotation-length": "21"},  # 125 bits
    ],
    ids=["16-hex-characters", "21-alphanumerics"],
)
async def test_a_tag_cannot_weaken_a_random_secret_below_128_bits(
    emulator: KeyVaultEmulator, container: Container, tags: dict[str, str]
) -> None:
    emulator.put("team-token", "team-token-value-0123456789abcdef",
                 tags={"rotation-policy": "random", "rotation-interval-days": "30", **tags}, expires_on=due())

    summary = await sweep(container)

    [error] = failures(summary, "team-token")
    assert error["code"] == "ConfigurationError" and "128" in error["message"]
    assert version_count(emulator, "team-token") == 1


# ------------------------------------------------------------------------------------ 8: force and emergency


async def test_force_during_an_overlap_is_refused_and_keeps_the_previous_credential(
    emulator: KeyVaultEmulator, container: Container, postgres_server: PostgresServer
) -> None:
    setup_postgres_alternating(emulator, postgres_server)
    first = emulator.latest("database-connection-string")
    assert first is not None
    engine = container.engine
    await engine.run(RotationRequest("kv-test", "database-connection-string", Trigger.HTTP))
    before = authid(postgres_server)

    with pytest.raises(OverlapActive, match="emergency"):
        await engine.run(RotationRequest("kv-test", "database-connection-string", Trigger.HTTP, force=True))

    assert authid(postgres_server) == before
    assert version_count(emulator, "database-connection-string") == 2
    assert pg_can_login(str(first["value"]))  # consumers on the previous value still get in


async def test_emergency_rotates_and_revokes_every_earlier_credential_at_once(
    emulator: KeyVaultEmulator, container: Container, postgres_server: PostgresServer,
    redis_server_fresh: RedisServer, caplog: pytest.LogCaptureFixture,
) -> None:
    setup_postgres_alternating(emulator, postgres_server)
    setup_redis(emulator, redis_server_fresh)
    engine = container.engine
    for name, works in (("database-connection-string", pg_can_login),
                        ("redis-password", lambda v: redis_can_auth(redis_server_fresh, v))):
        first = str(latest_of(emulator, name)["value"])
        await engine.run(RotationRequest("kv-test", name, Trigger.HTTP))
        second = str(latest_of(emulator, name)["value"])
        assert works(first) and works(second)  # in the overlap: both valid

        outcome = await engine.run(RotationRequest("kv-test", name, Trigger.EMERGENCY, reason="leaked"))

        third = str(latest_of(emulator, name)["value"])
        assert outcome.status == "rotated" and "emergency" in outcome.reason and "revoked" in outcome.reason
        assert works(third)
        assert not works(first) and not works(second)
        assert latest_of(emulator, name)["tags"]["rotated-trigger"] == "emergency"
    assert any(r.levelname == "WARNING" and "emergency" in r.getMessage() for r in caplog.records)


async def test_emergency_on_a_jwt_key_disables_every_earlier_key(emulator: KeyVaultEmulator,
                                                                container: Container) -> None:
    emulator.put("jwt-signing-key", "initial-jwt-key-0123456789abcdefghijklmnopqrstuvwxyz", expires_on=due())
    engine = container.engine
    await engine.run(RotationRequest("kv-test", "jwt-signing-key", Trigger.HTTP))
    await engine.run(RotationRequest("kv-test", "jwt-signing-key", Trigger.EMERGENCY))
    versions = emulator.versions("jwt-signing-key")
    assert [bool(v["attributes"]["enabled"]) for v in versions] == [False, False, True]


# ------------------------------------------------------------------------------------ 9: status


async def test_status_reads_properties_only(emulator: KeyVaultEmulator, container: Container) -> None:
    emulator.put("session-encryption-key", "c2Vzc2lvbi1rZXktMDEyMzQ1Njc4OWFiY2RlZg==", expires_on=due())
    emulator.reset_counters()

    status = await secret_status(container, "kv-test", "session-encryption-key")

    assert status["currentVersion"] and status["due"] is True
    assert emulator.count("GET", KIND_SECRET) == 0 and emulator.count("GET", KIND_SECRET_VERSION) == 0


async def test_status_of_a_name_no_rule_could_manage_does_not_touch_the_vault(emulator: KeyVaultEmulator,
                                                                             container: Container) -> None:
    operator_files.write(emulator, {**operator_files.read(emulator), "tagManaged": []})
    emulator.put("someone-elses-secret", "someone-elses-value-0123456789")
    emulator.reset_counters()
    with pytest.raises(Exception, match="no managed secret"):
        await secret_status(container, "kv-test", "someone-elses-secret")
    assert emulator.count() == 0


def test_tag_refusals_are_permanent_errors_naming_the_tag() -> None:
    assert TagRefused("secret x: tag rotation-nodes is refused").http_status == 400
