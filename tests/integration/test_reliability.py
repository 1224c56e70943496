"""Reliability under concurrency and failure (issue 7), on real components."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from azure.storage.blob.aio import BlobLeaseClient, BlobServiceClient

from functions.event_grid import handle_event
from kvemulator import KeyVaultEmulator
from shared.bootstrap import Container
from shared.domain.errors import DownstreamError, LeaseLost
from shared.domain.record import RotationRequest, Step, Trigger
from tests.conftest import VAULT, make_settings
from tests.integration.rotation_harness import (
    pg_can_login,
    redis_can_auth,
    rotation_ids,
    setup_postgres_alternating,
    setup_redis,
)
from tests.integration.test_vertical_slice import near_expiry_event
from tests.support.emulator import latest_of
from tests.support.services import PostgresServer, RedisServer

TRIALS = int(__import__("os").environ.get("TRIALS", "50"))
DELIVERIES = 20


async def test_twenty_concurrent_deliveries_make_exactly_one_version_in_each_of_fifty_trials(
        emulator: KeyVaultEmulator, container: Container) -> None:
    tags = {"rotation-policy": "random", "rotation-interval-days": "30"}
    names = [f"trial-{i:02d}" for i in range(TRIALS)]
    for name in names:
        emulator.put(name, f"initial-value-of-{name}-0123456789", tags=tags)
    started = time.monotonic()
    for name in names:
        event = near_expiry_event(name, str(latest_of(emulator, name)["version"]))
        results = await asyncio.gather(*(handle_event(event, container) for _ in range(DELIVERIES)))
        assert [r.status for r in results].count("rotated") == 1, name
        assert all(r.acknowledged for r in results)
        assert len(emulator.versions(name)) == 2, name
    print(f"\n{TRIALS} trials x {DELIVERIES} concurrent deliveries in {time.monotonic() - started:.1f} s")


async def test_postgres_down_fails_the_delivery_without_touching_the_vault_and_redelivery_converges(
        emulator: KeyVaultEmulator, azurite: Any, postgres_server_fresh: PostgresServer) -> None:
    setup_postgres_alternating(emulator, postgres_server_fresh)
    name = "database-connection-string"
    event = near_expiry_event(name, str(latest_of(emulator, name)["version"]))
    c = Container(make_settings(emulator, azurite))
    try:
        postgres_server_fresh.stop()
        with pytest.raises(DownstreamError):
            await handle_event(event, c)
        assert len(emulator.versions(name)) == 1
        postgres_server_fresh.start()
        assert pg_can_login(str(latest_of(emulator, name)["value"]))
        assert (await handle_event(event, c)).status == "rotated"
        assert pg_can_login(str(latest_of(emulator, name)["value"]))
    finally:
        await c.aclose()


async def test_redis_down_fails_the_delivery_without_touching_the_vault_and_redelivery_converges(
        emulator: KeyVaultEmulator, azurite: Any, redis_server_fresh: RedisServer) -> None:
    setup_redis(emulator, redis_server_fresh)
    name = "redis-password"
    event = near_expiry_event(name, str(latest_of(emulator, name)["version"]))
    c = Container(make_settings(emulator, azurite))
    try:
        redis_server_fresh.stop()
        with pytest.raises(DownstreamError):
            await handle_event(event, c)
        assert len(emulator.versions(name)) == 1
        redis_server_fresh.start()
        assert redis_can_auth(redis_server_fresh, str(latest_of(emulator, name)["value"]))
        assert (await handle_event(event, c)).status == "rotated"
        assert redis_can_auth(redis_server_fresh, str(latest_of(emulator, name)["value"]))
    finally:
        await c.aclose()


async def test_lease_lost_mid_rotation_writes_nothing_and_redelivery_converges(
        emulator: KeyVaultEmulator, azurite: Any, redis_server_fresh: RedisServer) -> None:
    setup_redis(emulator, redis_server_fresh)
    name = "redis-password"
    settings = make_settings(emulator, azurite)

    async def break_lease(step: Step, req: RotationRequest) -> None:
        if step == Step.VERIFY:  # another party breaks our lease while we are between verify and commit
            async with BlobServiceClient.from_connection_string(azurite.connection_string) as svc:
                blob = svc.get_blob_client(settings.lease_container, f"{VAULT}/{name}")
                await BlobLeaseClient(blob).break_lease(lease_break_period=0)

    request = RotationRequest(VAULT, name, Trigger.NEAR_EXPIRY, event_version=str(latest_of(emulator, name)["version"]))
    c = Container(settings, after_step=break_lease)
    healthy = Container(settings)
    try:
        with pytest.raises(LeaseLost):
            await c.engine.run(request)
        assert len(emulator.versions(name)) == 1
        assert redis_can_auth(redis_server_fresh, str(latest_of(emulator, name)["value"]))
        assert (await healthy.engine.run(request)).status == "rotated"
        assert len(rotation_ids(emulator, name)) == 1
    finally:
        await c.aclose()
        await healthy.aclose()
