"""keyvault_rotation_kit's self-healing connections on real PostgreSQL and Redis.

The scenario each test plays: the service cached the old credential, missed
the ping, and the rotation app retired the old credential. The next
connection fails authentication once, the helper re-reads the secret
(bypassing the cache) and succeeds; errors that are not about credentials are
never "healed".
"""

from __future__ import annotations

import asyncio
import secrets
import uuid
from collections.abc import AsyncIterator, Callable, Iterator

import psycopg
import pytest
from keyvault_rotation_kit import CachedSecretClient, SelfHealingRedis, connect_postgres
from psycopg import sql

from kvemulator import KeyVaultEmulator
from tests.support import leakscan
from tests.support.services import PostgresServer, RedisServer, redis_command


@pytest.fixture
async def client(emulator: KeyVaultEmulator) -> AsyncIterator[CachedSecretClient]:
    async with CachedSecretClient(emulator.async_secret_client(retry_total=0)) as cached:
        yield cached


def password() -> str:
    value = secrets.token_urlsafe(24)
    leakscan.register([value])
    return value


def set_pg_password(server: PostgresServer, role: str, value: str, *, create: bool = False) -> None:
    with psycopg.connect(server.admin_dsn, autocommit=True) as admin:
        verb = "CREATE ROLE {} LOGIN PASSWORD {}" if create else "ALTER ROLE {} PASSWORD {}"
        admin.execute(sql.SQL(verb).format(sql.Identifier(role), sql.Literal(value)))


async def test_postgres_connection_heals_once_after_the_cached_password_was_retired(
    emulator: KeyVaultEmulator, client: CachedSecretClient, postgres_server: PostgresServer
) -> None:
    role = f"kit_{uuid.uuid4().hex[:8]}"
    old, new = password(), password()
    set_pg_password(postgres_server, role, old, create=True)
    emulator.put("database-connection-string", postgres_server.dsn(role, old))
    conn = await connect_postgres(client, "database-connection-string")
    await conn.close()  # the service cached the old conninfo

    emulator.put("database-connection-string", postgres_server.dsn(role, new))
    set_pg_password(postgres_server, role, new)  # rotated and retired; the ping was missed
    reads = client.reads
    conns = await asyncio.gather(*(connect_postgres(client, "database-connection-string") for _ in range(5)))
    try:
        for conn in conns:
            cur = await conn.execute("SELECT current_user")
            assert (await cur.fetchone()) == (role,)
    finally:
        for conn in conns:
            await conn.close()
    assert client.reads == reads + 1  # a burst of failures costs one Key Vault read


async def test_postgres_errors_that_are_not_about_credentials_are_not_healed(
    emulator: KeyVaultEmulator, client: CachedSecretClient, postgres_server: PostgresServer
) -> None:
    role = f"kit_{uuid.uuid4().hex[:8]}"
    value = password()
    set_pg_password(postgres_server, role, value, create=True)
    emulator.put("database-connection-string", postgres_server.dsn(role, value, dbname="no_such_db"))
    with pytest.raises(psycopg.OperationalError, match="no_such_db"):
        await connect_postgres(client, "database-connection-string")
    assert client.reads == 1


class RedisUser:
    """A Redis ACL user whose password is the Key Vault secret ``redis-password``; ``admin`` changes it."""

    def __init__(self, emulator: KeyVaultEmulator, server: RedisServer) -> None:
        self.server, self.name, self.password = server, f"kit-{uuid.uuid4().hex[:8]}", password()
        self.admin = server.client()
        redis_command(self.admin, "ACL", "SETUSER", self.name, "on", f">{self.password}", "~*", "+@all")
        emulator.put("redis-password", self.password)

    def acl(self, *rules: str) -> None:
        redis_command(self.admin, "ACL", "SETUSER", self.name, *rules)

    def kill_connections(self) -> None:
        """Fresh connections must authenticate."""
        redis_command(self.admin, "CLIENT", "KILL", "USER", self.name)

    def healing(self, client: CachedSecretClient) -> SelfHealingRedis:
        return SelfHealingRedis(client, "redis-password", host=self.server.host, port=self.server.port,
                                username=self.name)


@pytest.fixture
def redis_user(emulator: KeyVaultEmulator, redis_server: RedisServer) -> Iterator[RedisUser]:
    user = RedisUser(emulator, redis_server)
    try:
        yield user
    finally:
        redis_command(user.admin, "ACL", "DELUSER", user.name)
        user.admin.close()


async def test_redis_client_heals_once_after_the_cached_password_was_retired(
    emulator: KeyVaultEmulator, client: CachedSecretClient, redis_user: RedisUser
) -> None:
    new = password()
    healing = redis_user.healing(client)
    try:
        assert await healing.run(lambda r: r.ping())
        emulator.put("redis-password", new)
        redis_user.acl("resetpass", f">{new}")  # rotated and retired
        redis_user.kill_connections()
        assert await healing.run(lambda r: r.set("kit-key", "1"))
        assert healing.heals == 1
        # Not an authentication failure: propagates without a re-read.
        reads = client.reads
        redis_user.acl("-set")
        from redis.exceptions import NoPermissionError

        with pytest.raises(NoPermissionError):
            await healing.run(lambda r: r.set("kit-key", "2"))
        assert client.reads == reads and healing.heals == 1
    finally:
        await healing.aclose()


async def test_redis_client_follows_the_cache_to_a_new_version_without_a_ping_or_a_failure(
    emulator: KeyVaultEmulator, client: CachedSecretClient, redis_user: RedisUser
) -> None:
    """An instance that missed a ping: once its cache re-reads, its next command runs on a client
    built from the new value (not on connections authenticated with the retired one)."""
    new = password()
    healing = redis_user.healing(client)
    try:
        assert await healing.run(lambda r: r.ping())
        first = await healing.client()
        emulator.put("redis-password", new)
        redis_user.acl(f">{new}")  # both valid: the rotation's overlap
        client.invalidate("redis-password")  # what the cache's TTL does
        reads = client.reads
        assert await healing.run(lambda r: r.ping())  # never waits for Key Vault: re-reads in the background
        await wait_until(lambda: client.reads == reads + 1 and client.cached_version("redis-password") is not None)
        assert await healing.run(lambda r: r.ping())
        assert await healing.client() is not first and healing.heals == 0
        redis_user.acl(f"<{redis_user.password}")  # the old one retired
        redis_user.kill_connections()
        assert await healing.run(lambda r: r.set("kit-key", "1"))
        assert healing.heals == 0  # already on the new value: nothing to heal
    finally:
        await healing.aclose()


async def test_redis_client_keeps_working_when_key_vault_cannot_be_read(
    emulator: KeyVaultEmulator, client: CachedSecretClient, redis_user: RedisUser
) -> None:
    """Following the cache never makes Key Vault a dependency of every command: an expired entry that
    cannot be re-read leaves the working client in use."""
    healing = redis_user.healing(client)
    try:
        assert await healing.run(lambda r: r.ping())
        emulator.faults.add(503, times=None, path_regex=r"^/secrets/redis-password")
        client.invalidate("redis-password")
        reads = client.reads
        assert await healing.run(lambda r: r.set("kit-key", "1"))
        await wait_until(lambda: client.reads == reads + 1)  # the background re-read started (it is refused)
        assert await healing.run(lambda r: r.set("kit-key", "2"))
        assert healing.heals == 0
    finally:
        emulator.faults.clear()
        await healing.aclose()


async def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Yield to the loop until ``condition`` holds (a background re-read finished)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached"
        await asyncio.sleep(0.01)
