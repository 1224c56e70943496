"""Zero downtime and no lockout with real PostgreSQL and Redis (issue 3).

A consumer opens a new connection every 10 ms with whatever the vault serves
while rotations run back to back; with the overlap strategies not one
connection may fail. The `single` strategy's window is measured and printed.
"""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
import pytest

from kvemulator import KeyVaultEmulator
from shared.bootstrap import Container
from shared.domain.record import RotationRequest, Trigger
from tests.conftest import VAULT, make_settings
from tests.integration.rotation_harness import (
    Probe,
    pg_can_login,
    redis_can_auth,
    setup_postgres_alternating,
    setup_postgres_single,
    setup_redis,
)
from tests.support.emulator import latest_of
from tests.support.services import PostgresServer, RedisServer

GRACE_HOURS = 0.3 / 3600  # the grace period ends 0.3 s after each commit


async def rotate_back_to_back(container: Container, secret: str, rounds: int) -> None:
    for i in range(rounds):
        outcome = await container.engine.run(
            RotationRequest(VAULT, secret, Trigger.HTTP, reason=f"back-to-back {i}"))
        assert outcome.status == "rotated", outcome.reason
        await asyncio.sleep(0.35)  # consumers re-read; then the grace period has ended
        done = await container.engine.complete_pending(VAULT, secret)
        assert done.state == "retired", done.reason


@pytest.fixture
async def fast_grace(emulator: KeyVaultEmulator, azurite: Any) -> Any:
    c = Container(make_settings(emulator, azurite, grace_period_hours=GRACE_HOURS))
    try:
        yield c
    finally:
        await c.aclose()


async def test_postgres_alternating_five_rotations_zero_failed_connections(
        emulator: KeyVaultEmulator, postgres_server: PostgresServer, fast_grace: Container) -> None:
    roles = setup_postgres_alternating(emulator, postgres_server)
    with Probe(emulator, "database-connection-string", pg_can_login) as probe:
        await rotate_back_to_back(fast_grace, "database-connection-string", 5)
    assert probe.attempts > 50
    assert probe.failures == []
    # the role left behind has no password any more; the one in use works
    with psycopg.connect(postgres_server.admin_dsn) as conn:
        found = conn.execute("SELECT rolname, rolpassword IS NULL FROM pg_authid WHERE rolname = ANY(%s)",
                             [[roles["blue"], roles["green"]]]).fetchall()
    rows: dict[str, bool] = dict(found)
    assert sorted(rows.values()) == [False, True]


async def test_redis_five_rotations_zero_failed_connections(
        emulator: KeyVaultEmulator, redis_server_fresh: RedisServer, fast_grace: Container) -> None:
    setup_redis(emulator, redis_server_fresh)
    with Probe(emulator, "redis-password", lambda v: redis_can_auth(redis_server_fresh, v)) as probe:
        await rotate_back_to_back(fast_grace, "redis-password", 5)
    assert probe.attempts > 50
    assert probe.failures == []
    admin = redis_server_fresh.client()
    try:
        info = admin.acl_getuser("default")
        assert info is not None and isinstance(info["passwords"], list)
        assert len(info["passwords"]) == 1  # the overlap is closed again
    finally:
        admin.close()


async def test_postgres_single_strategy_failure_window_is_measured(
        emulator: KeyVaultEmulator, postgres_server: PostgresServer, fast_grace: Container,
        capsys: pytest.CaptureFixture[str]) -> None:
    setup_postgres_single(emulator, postgres_server)
    with Probe(emulator, "database-connection-string", pg_can_login) as probe:
        await rotate_back_to_back(fast_grace, "database-connection-string", 5)
    # Between ALTER ROLE and the vault write, consumers holding the old value are refused.
    with capsys.disabled():
        print(f"\n[single strategy] {len(probe.failures)} of {probe.attempts} connections failed over 5 rotations; "
              f"window spanned {probe.failure_window_ms:.0f} ms in total")
    assert pg_can_login(str(latest_of(emulator, "database-connection-string")["value"]))
