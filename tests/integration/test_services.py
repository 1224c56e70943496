"""Prove the test servers are real: they enforce passwords and behave like production.

Why: every rotator test relies on "the old password stops working and the new
one works". That claim is only worth something if the servers behind the
fixtures actually check passwords, persist ACLs, replicate and implement blob
leases. These tests pin that down, so a fixture that silently degrades (trust
auth, nopass, a fake emulator) fails loudly here instead of making every
rotator test pass for the wrong reason.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from pathlib import Path

import psycopg
import pytest
import redis
from azure.core.exceptions import HttpResponseError
from azure.storage.blob.aio import BlobServiceClient
from psycopg import sql

from tests.support.services import (
    Azurite,
    PostgresServer,
    RedisServer,
    ServiceNotInstalledError,
    free_port,
    no_retry,
    wait_for_port,
)


def _unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------


def test_wait_for_port_times_out_on_closed_port() -> None:
    port = free_port()
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        wait_for_port("127.0.0.1", port, timeout=0.3)
    assert time.monotonic() - started < 2


# --------------------------------------------------------------------------
# PostgreSQL
# --------------------------------------------------------------------------


def test_postgres_rejects_wrong_password_accepts_right(postgres_server: PostgresServer) -> None:
    pg = postgres_server
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(pg.dsn(pg.superuser, "not-the-password")).close()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(pg.dsn(pg.superuser, None)).close()

    with psycopg.connect(pg.admin_dsn) as conn:
        row = conn.execute(
            "SELECT host(inet_server_addr()), inet_server_port(), current_setting('password_encryption'),"
            " (SELECT rolpassword FROM pg_authid WHERE rolname = current_user)"
        ).fetchone()
    assert row is not None
    addr, port, encryption, verifier = row
    assert (addr, port) == ("127.0.0.1", pg.port)  # TCP, not the unix socket
    assert encryption == "scram-sha-256"
    assert verifier.startswith("SCRAM-SHA-256$")


def test_postgres_alter_role_password_changes_what_works(postgres_server: PostgresServer) -> None:
    pg = postgres_server
    role = _unique("rot")
    old, new = "old-" + uuid.uuid4().hex, "new-" + uuid.uuid4().hex
    with psycopg.connect(pg.admin_dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(role), sql.Literal(old)))
        try:
            psycopg.connect(pg.dsn(role, old)).close()

            admin.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(role), sql.Literal(new)))

            with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
                psycopg.connect(pg.dsn(role, old)).close()
            with psycopg.connect(pg.dsn(role, new)) as conn:
                assert conn.execute("SELECT current_user").fetchone() == (role,)
        finally:
            admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def test_postgres_log_records_statements(postgres_server: PostgresServer) -> None:
    marker = _unique("marker")
    with psycopg.connect(postgres_server.admin_dsn) as conn:
        conn.execute(sql.SQL("SELECT {}").format(sql.Literal(marker)))
    deadline = time.monotonic() + 5
    while marker not in postgres_server.log_path.read_text():
        assert time.monotonic() < deadline, "statement never reached the server log"
        time.sleep(0.05)
    assert "statement: SELECT" in postgres_server.log_text()


def test_postgres_stop_then_start_keeps_port_and_roles(postgres_server_fresh: PostgresServer) -> None:
    pg = postgres_server_fresh
    port = pg.port
    with psycopg.connect(pg.admin_dsn, autocommit=True) as admin:
        admin.execute("CREATE ROLE survivor LOGIN PASSWORD 'still-here'")

    pg.stop()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(pg.dsn("survivor", "still-here")).close()

    pg.start()
    assert pg.port == port
    psycopg.connect(pg.dsn("survivor", "still-here")).close()

    pg.kill()  # crash-style shutdown; start() runs recovery
    pg.start()
    psycopg.connect(pg.dsn("survivor", "still-here")).close()


# --------------------------------------------------------------------------
# Redis
# --------------------------------------------------------------------------


def test_redis_default_user_needs_its_password(redis_server: RedisServer) -> None:
    rs = redis_server
    started = time.monotonic()
    with (
        pytest.raises(redis.exceptions.AuthenticationError),
        redis.Redis(host=rs.host, port=rs.port, retry=no_retry(), socket_timeout=5) as anonymous,
    ):
        anonymous.ping()
    with pytest.raises(redis.exceptions.AuthenticationError), rs.client(password="wrong-password") as bad:
        bad.ping()  # AUTH as `default`
    assert time.monotonic() - started < 2, "expected failures must not be retried"

    with rs.client(password=rs.default_password) as ok:
        assert ok.acl_whoami() == "default"
    with rs.client() as admin:
        assert admin.acl_whoami() == rs.admin_user


def test_redis_created_user_rejects_wrong_password(redis_server_fresh: RedisServer) -> None:
    rs = redis_server_fresh
    with rs.client() as admin:
        admin.acl_setuser("svc", enabled=True, passwords=["+pw-one"], keys=["*"], commands=["+@all"])
    with rs.client("svc", "pw-one") as ok:
        assert ok.ping()
    with pytest.raises(redis.exceptions.AuthenticationError), rs.client("svc", "pw-two") as bad:
        bad.ping()


def test_redis_acl_save_persists_to_aclfile(redis_server_fresh: RedisServer) -> None:
    rs = redis_server_fresh
    assert rs.acl_path is not None
    with rs.client() as admin:
        admin.acl_setuser("svc", enabled=True, passwords=["+persist-me"], keys=["*"], commands=["+@all"])
        assert admin.acl_save()
    text = rs.acl_path.read_text()
    assert "user svc" in text
    assert hashlib.sha256(b"persist-me").hexdigest() in text  # stored hashed, never in clear
    assert "persist-me" not in text.replace(hashlib.sha256(b"persist-me").hexdigest(), "")

    rs.stop()
    rs.start()
    with rs.client("svc", "persist-me") as svc:
        assert svc.ping()


def test_redis_config_rewrite_persists_users_without_aclfile() -> None:
    with RedisServer(use_aclfile=False) as rs:
        assert rs.acl_path is None
        with rs.client() as admin:
            admin.acl_setuser("svc", enabled=True, passwords=["+rewrite-me"], keys=["*"], commands=["+@all"])
            with pytest.raises(redis.exceptions.ResponseError):
                admin.acl_save()  # no aclfile: CONFIG REWRITE is the only persistence
            assert admin.config_rewrite()
        assert "user svc" in rs.config_path.read_text()

        rs.stop()
        rs.start()
        with rs.client("svc", "rewrite-me") as svc:
            assert svc.ping()
        with pytest.raises(redis.exceptions.AuthenticationError), rs.client(password="wrong") as bad:
            bad.ping()


def test_redis_replicas_replicate_and_enforce_acl() -> None:
    with RedisServer(replicas=2) as rs:
        assert len(rs.nodes) == 3
        assert len({port for _, port in rs.nodes}) == 3
        key, value = _unique("k"), uuid.uuid4().hex
        with rs.client() as primary:
            primary.set(key, value)
            assert primary.wait(2, 5000) == 2
        for index in (1, 2):
            with rs.client(node=index) as replica:
                assert replica.get(key) == value.encode()
                assert replica.info("replication")["role"] == "slave"
            with pytest.raises(redis.exceptions.AuthenticationError), rs.client(password="wrong", node=index) as bad:
                bad.ping()


# --------------------------------------------------------------------------
# Azurite
# --------------------------------------------------------------------------


async def test_azurite_blob_lease_is_exclusive(azurite: Azurite) -> None:
    container = _unique("locks").replace("_", "-")
    async with BlobServiceClient.from_connection_string(azurite.connection_string) as service:
        await service.create_container(container)
        blob = service.get_blob_client(container, "rotation.lock")
        await blob.upload_blob(b"", overwrite=True)

        lease = await blob.acquire_lease(lease_duration=15)
        assert lease.id

        with pytest.raises(HttpResponseError) as excinfo:
            await blob.acquire_lease(lease_duration=15)
        assert excinfo.value.status_code == 409
        # azure-storage-blob attaches the service's error code at run time.
        assert getattr(excinfo.value, "error_code", None) == "LeaseAlreadyPresent"

        await lease.release()
        second = await blob.acquire_lease(lease_duration=15)
        await second.release()


def test_azurite_missing_install_points_to_bootstrap(tmp_path: Path) -> None:
    with pytest.raises(ServiceNotInstalledError, match=r"scripts/bootstrap\.sh"):
        Azurite(tools_dir=tmp_path)
