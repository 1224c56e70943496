"""Consumers are told, and the old credential waits for them (issue 4).

A real consumer service (tests.support.consumer_app) reads the secret from
the vault through the real SDK, caches it for an hour and uses it for real
(Redis AUTH, JWT verification). The rotation pings its refresh endpoint with
an HMAC signature whose key lives in the vault, and publishes SecretRotated
to a local Event Grid topic.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import AsyncIterator
from typing import Any

import jwt as pyjwt
import pytest
import trustme

from kvemulator import KeyVaultEmulator
from shared.bootstrap import Container
from shared.domain.record import RotationRequest, Trigger
from shared.rotators.jwt_key import b64url_decode
from tests.conftest import VAULT, make_settings
from tests.integration.rotation_harness import redis_can_auth, setup_redis
from tests.support import leakscan
from tests.support.consumer_app import ConsumerApp, ConsumerServer, new_webhook_key
from tests.support.emulator import latest_of
from tests.support.eventgrid_sink import EventGridSink
from tests.support.services import RedisServer

TOPIC_KEY = "local-topic-key-for-tests"


def sdk_reader(emu: KeyVaultEmulator) -> Any:
    client = emu.secret_client()

    async def read(name: str) -> tuple[str, str]:
        secret = await asyncio.to_thread(client.get_secret, name)
        return secret.value or "", secret.properties.version or ""
    return read


@pytest.fixture
async def sink(kv_ca: trustme.CA) -> AsyncIterator[EventGridSink]:
    with EventGridSink(TOPIC_KEY, ca=kv_ca) as running:
        yield running
        await running.astop()


@pytest.fixture
async def consumer(emulator: KeyVaultEmulator) -> AsyncIterator[tuple[ConsumerApp, ConsumerServer]]:
    hmac_key = new_webhook_key()
    emulator.put("consumer-hmac-key", hmac_key)
    app = ConsumerApp(sdk_reader(emulator), secret_name="redis-password", hmac_key=hmac_key)
    with ConsumerServer(app) as server:
        yield app, server
        await server.astop()


def consumer_settings(emu: KeyVaultEmulator, azurite: Any, server: ConsumerServer, secret: str,
                      sink: EventGridSink | None = None, **more: Any) -> Any:
    consumers = {"consumers": {"backend": {"url": server.url, "auth": "hmac", "hmacSecret": "consumer-hmac-key",
                                           "acknowledges": "service"}},
                 "secrets": {secret: ["backend"]}}
    extra: dict[str, Any] = {"consumers": consumers, "ping_timeout_seconds": 2.0, "ping_attempts": 2}
    if sink is not None:
        extra.update(eventgrid_topic_endpoint=sink.endpoint, eventgrid_topic_key=TOPIC_KEY,
                     eventgrid_ca_bundle=sink.ca_path)
    extra.update(more)
    return make_settings(emu, azurite, **extra)


async def test_ping_makes_the_consumer_use_the_new_redis_password_within_a_second_and_then_retires_the_old(
        emulator: KeyVaultEmulator, azurite: Any, redis_server_fresh: RedisServer,
        consumer: tuple[ConsumerApp, ConsumerServer], sink: EventGridSink) -> None:
    app, server = consumer
    setup_redis(emulator, redis_server_fresh)
    old_value, old_version = await app.secret()
    assert redis_can_auth(redis_server_fresh, old_value)
    container = Container(consumer_settings(emulator, azurite, server, "redis-password", sink))
    try:
        started = time.monotonic()
        outcome = await container.engine.run(RotationRequest(VAULT, "redis-password", Trigger.HTTP))
        assert outcome.status == "rotated"
        value, version = await app.secret()
        assert version == outcome.version and time.monotonic() - started < 1.0
        assert redis_can_auth(redis_server_fresh, value)
        # Acknowledged by its only consumer: the old password is gone now, not after the grace period.
        assert outcome.state == "retired"
        assert not redis_can_auth(redis_server_fresh, old_value)
        ping = json.loads(app.pings[-1].raw_body)
        assert ping["version"] == outcome.version and ping["previousVersion"] == old_version
        assert app.pings[-1].verified and app.pings[-1].auth == "hmac"
        assert value not in app.pings[-1].raw_body.decode()
        # SecretRotated reached the topic, without the value.
        events = sink.events
        assert len(events) == 1 and events[0]["eventType"] == "SecretRotation.SecretRotated"
        assert events[0]["data"]["version"] == outcome.version
        assert value not in json.dumps(events) and old_value not in json.dumps(events)
    finally:
        await container.aclose()


async def test_without_the_ping_the_consumer_keeps_the_old_value_and_the_old_credential_is_not_retired(
        emulator: KeyVaultEmulator, azurite: Any, redis_server_fresh: RedisServer,
        consumer: tuple[ConsumerApp, ConsumerServer]) -> None:
    app, server = consumer
    setup_redis(emulator, redis_server_fresh)
    old_value, old_version = await app.secret()
    app.down = True  # the ping does not get through
    container = Container(consumer_settings(emulator, azurite, server, "redis-password"))
    try:
        outcome = await container.engine.run(RotationRequest(VAULT, "redis-password", Trigger.HTTP))
        assert outcome.status == "rotated" and outcome.state == "notified"
        assert latest_of(emulator, "redis-password")["tags"]["rotated-pending"] == "backend"
        # Its cache holds the old value for the hour; the old password keeps working meanwhile.
        value, version = await app.secret()
        assert version == old_version and redis_can_auth(redis_server_fresh, value)
        # The consumer comes back; the sweep re-pings it, it acknowledges, the old password is retired.
        app.down = False
        done = await container.engine.complete_pending(VAULT, "redis-password")
        assert done.state == "retired"
        value, version = await app.secret()
        assert version == outcome.version and redis_can_auth(redis_server_fresh, value)
        assert not redis_can_auth(redis_server_fresh, old_value)
    finally:
        await container.aclose()


async def test_jwt_consumer_verifies_tokens_signed_with_the_new_key_after_the_ping(
        emulator: KeyVaultEmulator, azurite: Any) -> None:
    hmac_key = new_webhook_key()
    emulator.put("consumer-hmac-key", hmac_key)
    old_key = secrets.token_urlsafe(48)
    leakscan.register([old_key])
    emulator.put("jwt-signing-key", old_key)
    app = ConsumerApp(sdk_reader(emulator), secret_name="jwt-signing-key", hmac_key=hmac_key)
    with ConsumerServer(app) as server:
        await app.secret()
        container = Container(consumer_settings(emulator, azurite, server, "jwt-signing-key"))
        try:
            outcome = await container.engine.run(RotationRequest(VAULT, "jwt-signing-key", Trigger.HTTP))
            assert outcome.status == "rotated"
            new_key = b64url_decode(str(latest_of(emulator, "jwt-signing-key")["value"]))
            token = pyjwt.encode({"sub": "user-1"}, new_key, algorithm="HS256")
            value, _ = await app.secret()
            assert pyjwt.decode(token, b64url_decode(value), algorithms=["HS256"])["sub"] == "user-1"
            # acknowledged, but tokens signed with the old key stay valid for the token lifetime
            assert outcome.state == "notified"
            assert emulator.versions("jwt-signing-key")[0]["attributes"]["enabled"] is True
        finally:
            await container.aclose()
        await server.astop()
