"""Liveness check and repair, durable intent, never retiring the last working credential (issue 11).

Everything runs against real PostgreSQL and Redis servers, the Key Vault
emulator through the real SDK and a real consumer service that is pinged.
"""

from __future__ import annotations

import asyncio
import secrets
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from kvemulator import KeyVaultEmulator
from shared.bootstrap import Container
from shared.domain.errors import RotationError
from shared.domain.record import RotationRequest, Step, Trigger, intent_secret_name
from shared.service.sweep import sweep
from tests.conftest import VAULT, make_settings
from tests.integration.rotation_harness import (
    pg_can_login,
    redis_can_auth,
    rotation_ids,
    setup_postgres_alternating,
    setup_postgres_single,
    setup_redis,
)
from tests.integration.test_consumer_e2e import sdk_reader
from tests.support import leakscan
from tests.support.consumer_app import ConsumerApp, ConsumerServer, new_webhook_key
from tests.support.emulator import latest_of
from tests.support.services import PostgresServer, RedisServer, redis_command

FAR = datetime.now(UTC) + timedelta(days=200)


def not_due(emu: KeyVaultEmulator, secret: str) -> None:
    emu.update(secret, expires_on=FAR)


def change_pg_password_by_hand(pg: PostgresServer, role: str) -> None:
    stranger = "by-hand-" + secrets.token_hex(8)
    leakscan.register([stranger])
    with psycopg.connect(pg.admin_dsn, autocommit=True) as conn:
        conn.execute(f"ALTER ROLE \"{role}\" PASSWORD '{stranger}'")


def role_of(value: str) -> str:
    user = psycopg.conninfo.conninfo_to_dict(value).get("user")
    assert isinstance(user, str)
    return user


@pytest.fixture
async def pinged(emulator: KeyVaultEmulator) -> AsyncIterator[tuple[ConsumerApp, ConsumerServer]]:
    hmac_key = new_webhook_key()
    emulator.put("consumer-hmac-key", hmac_key)
    app = ConsumerApp(sdk_reader(emulator), secret_name="drifting", hmac_key=hmac_key)
    with ConsumerServer(app) as server:
        yield app, server
        await server.astop()


def settings_with_consumer(emu: KeyVaultEmulator, azurite: Any, server: ConsumerServer, secret: str,
                           **more: Any) -> Any:
    consumers = {"consumers": {"backend": {"url": server.url, "auth": "hmac", "hmacSecret": "consumer-hmac-key"}},
                 "secrets": {secret: ["backend"]}}
    return make_settings(emu, azurite, consumers=consumers, ping_timeout_seconds=2.0, ping_attempts=2, **more)


@pytest.mark.parametrize("strategy", ["single", "alternating"])
async def test_a_postgres_password_changed_by_hand_is_repaired_by_the_next_sweep_and_consumers_are_pinged(
        strategy: str, emulator: KeyVaultEmulator, azurite: Any, postgres_server: PostgresServer,
        pinged: tuple[ConsumerApp, ConsumerServer]) -> None:
    app, server = pinged
    secret = f"pg-drift-{strategy}"
    if strategy == "single":
        setup_postgres_single(emulator, postgres_server, secret=secret)
    else:
        setup_postgres_alternating(emulator, postgres_server, secret=secret)
    not_due(emulator, secret)
    served = str(latest_of(emulator, secret)["value"])
    change_pg_password_by_hand(postgres_server, role_of(served))
    assert not pg_can_login(served)

    c = Container(settings_with_consumer(emulator, azurite, server, secret))
    try:
        summary = await sweep(c)
    finally:
        await c.aclose()
    assert (summary.checked, summary.repaired, summary.rotated, summary.failed) == (1, 1, 0, 0)
    assert pg_can_login(served), "the served value works again"
    assert len(emulator.versions(secret)) == 1, "repaired in place: no new version"
    assert "rotated-repaired" in latest_of(emulator, secret)["tags"]
    assert [p.body["secretName"] for p in app.pings] == [secret]
    assert app.pings[0].body["trigger"] == "repair"


async def test_a_redis_password_changed_by_hand_is_repaired_by_the_next_sweep_and_consumers_are_pinged(
        emulator: KeyVaultEmulator, azurite: Any, redis_server_fresh: RedisServer,
        pinged: tuple[ConsumerApp, ConsumerServer]) -> None:
    app, server = pinged
    secret = "redis-drift"
    setup_redis(emulator, redis_server_fresh, secret=secret, named_user=True)
    not_due(emulator, secret)
    served = str(latest_of(emulator, secret)["value"])
    user = served.split("://", 1)[1].split(":", 1)[0]
    stranger = "by-hand-" + secrets.token_hex(8)
    leakscan.register([stranger])
    admin = redis_server_fresh.client()
    redis_command(admin, "ACL", "SETUSER", user, "resetpass", f">{stranger}")
    admin.close()
    assert not redis_can_auth(redis_server_fresh, served)

    c = Container(settings_with_consumer(emulator, azurite, server, secret))
    try:
        summary = await sweep(c)
        again = await sweep(c)
    finally:
        await c.aclose()
    assert (summary.checked, summary.repaired, summary.failed) == (1, 1, 0)
    assert redis_can_auth(redis_server_fresh, served)
    assert redis_can_auth(redis_server_fresh, f"redis://{user}:{stranger}@x/0"), "nothing else was removed"
    assert (again.checked, again.repaired) == (1, 0), "a working value is left alone"
    assert len(app.pings) == 1 and app.pings[0].body["trigger"] == "repair"


async def test_a_duplicate_event_that_finds_nothing_due_still_repairs_a_refused_value(
        emulator: KeyVaultEmulator, azurite: Any, postgres_server: PostgresServer) -> None:
    secret = "pg-duplicate"
    setup_postgres_single(emulator, postgres_server, secret=secret)
    not_due(emulator, secret)
    served = str(latest_of(emulator, secret)["value"])
    change_pg_password_by_hand(postgres_server, role_of(served))
    c = Container(make_settings(emulator, azurite))
    try:
        outcome = await c.engine.run(RotationRequest(VAULT, secret, Trigger.NEAR_EXPIRY, event_version="gone"))
        healthy = await c.engine.run(RotationRequest(VAULT, secret, Trigger.NEAR_EXPIRY, event_version="gone"))
    finally:
        await c.aclose()
    assert (outcome.status, outcome.liveness) == ("repaired", "repaired")
    assert outcome.to_dict()["liveness"] == "repaired"
    assert (healthy.status, healthy.liveness) == ("skipped", "ok")
    assert pg_can_login(served)


async def test_retirement_first_proves_the_kept_value_works_and_never_retires_the_last_working_credential(
        emulator: KeyVaultEmulator, azurite: Any, postgres_server: PostgresServer) -> None:
    secret = "pg-retire-guard"
    setup_postgres_alternating(emulator, postgres_server, secret=secret)
    old = str(latest_of(emulator, secret)["value"])
    c = Container(make_settings(emulator, azurite, grace_period_hours=1.0))
    try:
        first = await c.engine.run(RotationRequest(VAULT, secret, Trigger.HTTP))
        assert first.state == "notified"
        new = str(latest_of(emulator, secret)["value"])
        change_pg_password_by_hand(postgres_server, role_of(new))  # the kept credential breaks
        late = Container(make_settings(emulator, azurite, grace_period_hours=0.0))
        try:
            outcome = await late.engine.complete_pending(VAULT, secret)
            assert outcome.status == "repaired" and "retirement postponed" in outcome.reason
            assert pg_can_login(old), "the previous credential was not retired while the new one failed"
            assert pg_can_login(new)
            done = await late.engine.complete_pending(VAULT, secret)
        finally:
            await late.aclose()
    finally:
        await c.aclose()
    assert done.state == "retired"
    assert pg_can_login(new) and not pg_can_login(old)


class Crash(Exception):
    pass


@pytest.mark.parametrize("crash_after", [Step.INTENT, Step.APPLY, Step.VERIFY])
async def test_single_strategy_recovers_from_its_durable_intent_without_a_second_password_change(
        crash_after: Step, emulator: KeyVaultEmulator, azurite: Any, postgres_server: PostgresServer) -> None:
    """After apply the intended value is live: the next invocation commits exactly that value. Before apply
    (crash right after the intent was recorded) the intent is dropped and the rotation starts over."""
    secret = f"pg-intent-{uuid.uuid4().hex[:6]}"
    setup_postgres_single(emulator, postgres_server, secret=secret)
    first = str(latest_of(emulator, secret)["value"])
    request = RotationRequest(VAULT, secret, Trigger.NEAR_EXPIRY,
                              event_version=str(latest_of(emulator, secret)["version"]))

    async def crash(step: Step, req: RotationRequest) -> None:
        if step == crash_after:
            raise Crash(step)

    settings = make_settings(emulator, azurite)
    crashing, healthy = Container(settings, after_step=crash), Container(settings)
    try:
        with pytest.raises(Crash):
            await crashing.engine.run(request)
        intent = emulator.latest(intent_secret_name(secret))
        assert intent is not None and intent["attributes"]["enabled"]
        assert "rotation-policy" not in intent["tags"], "the intent record is not itself a managed secret"
        outcome = await healthy.engine.run(request)
    finally:
        await crashing.aclose()
        await healthy.aclose()
    assert outcome.status == "rotated"
    served = str(latest_of(emulator, secret)["value"])
    assert pg_can_login(served) and not pg_can_login(first)
    assert len(rotation_ids(emulator, secret)) == 1
    if crash_after != Step.INTENT:
        assert served == str(intent["value"]), "the value already live was committed, not a third password"
        assert "durable intent" in outcome.reason
    assert not latest_of(emulator, intent_secret_name(secret))["attributes"]["enabled"], "the intent is cleared"


async def test_a_served_value_naming_another_role_is_never_repaired_with_the_admin_credential(
        emulator: KeyVaultEmulator, azurite: Any, postgres_server: PostgresServer) -> None:
    """A value in the vault must never make the app re-password a role the operator file does not declare
    (here the admin's own): the liveness check refuses it before connecting, and nothing is changed."""
    secret = "pg-hostile"
    setup_postgres_single(emulator, postgres_server, secret=secret)
    admin_user = role_of(postgres_server.admin_dsn)
    password = "attacker-chosen-" + secrets.token_hex(6)
    leakscan.register([password])
    emulator.put(secret, postgres_server.dsn(admin_user, password), expires_on=FAR)
    c = Container(make_settings(emulator, azurite))
    try:
        outcome = await c.engine.run(RotationRequest(VAULT, secret, Trigger.NEAR_EXPIRY, event_version="gone"))
    finally:
        await c.aclose()
    assert (outcome.status, outcome.liveness) == ("skipped", "unknown")
    assert await asyncio.to_thread(pg_can_login, postgres_server.admin_dsn)
    assert not await asyncio.to_thread(pg_can_login, postgres_server.dsn(admin_user, password))


async def test_single_strategy_vault_write_refused_after_apply_is_finished_by_the_redelivery_with_the_live_value(
        emulator: KeyVaultEmulator, azurite: Any, postgres_server: PostgresServer) -> None:
    """Issue 11: a 403 on the commit left the role re-passworded and the vault on the old value. Now the
    redelivery finds the durable intent, proves the value is live, and commits it."""
    secret = "pg-commit-refused"
    setup_postgres_single(emulator, postgres_server, secret=secret)
    first = str(latest_of(emulator, secret)["value"])
    request = RotationRequest(VAULT, secret, Trigger.NEAR_EXPIRY,
                              event_version=str(latest_of(emulator, secret)["version"]))
    c = Container(make_settings(emulator, azurite))
    try:
        emulator.faults.add(status=403, method="PUT", path_regex=f"/secrets/{secret}$")
        with pytest.raises(RotationError):
            await c.engine.run(request)
        assert len(emulator.versions(secret)) == 1
        intended = str(latest_of(emulator, intent_secret_name(secret))["value"])
        assert pg_can_login(intended) and not pg_can_login(first), "apply happened, the commit did not"
        outcome = await c.engine.run(request)  # Event Grid redelivers
    finally:
        emulator.faults.clear()
        await c.aclose()
    assert outcome.status == "rotated"
    assert str(latest_of(emulator, secret)["value"]) == intended
    assert len(rotation_ids(emulator, secret)) == 1
