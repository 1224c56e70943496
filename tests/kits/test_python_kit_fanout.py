"""Replica fan-out over real Redis pub/sub: one ping, three instances, one service-wide acknowledgement."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from datetime import UTC, datetime
from typing import Any

import pytest
from keyvault_rotation_kit import CachedSecretClient, RedisFanout, RefreshEndpoint, SecretValue, SelfHealingRedis
from standardwebhooks.webhooks import Webhook

from kvemulator import KeyVaultEmulator
from tests.support import leakscan
from tests.support.services import RedisServer, redis_command

SECRET = "database-connection-string"


class Instance:
    def __init__(self, secrets_client: CachedSecretClient, redis: SelfHealingRedis, fanout: RedisFanout,
                 endpoint: RefreshEndpoint) -> None:
        self.secrets, self.redis, self.fanout, self.endpoint = secrets_client, redis, fanout, endpoint


@pytest.fixture
async def instances(emulator: KeyVaultEmulator, redis_server: RedisServer) -> AsyncIterator[
        Callable[[str], Any]]:
    user = f"fan-{uuid.uuid4().hex[:8]}"
    password = secrets.token_urlsafe(18)
    leakscan.register([password])
    admin = redis_server.client()
    redis_command(admin, "ACL", "SETUSER", user, "on", f">{password}", "~*", "&*", "+@all")
    emulator.put("redis-password", password)
    service = f"svc-{uuid.uuid4().hex[:6]}"
    async with AsyncExitStack() as stack:
        async def start(key: str, on_refreshed: Any = None) -> Instance:
            client = await stack.enter_async_context(CachedSecretClient(emulator.async_secret_client()))
            redis = SelfHealingRedis(client, "redis-password", host=redis_server.host, port=redis_server.port,
                                     username=user)
            stack.push_async_callback(redis.aclose)
            fanout = RedisFanout(redis, client, service=service, timeout_seconds=5.0, on_refreshed=on_refreshed)
            await fanout.start()
            stack.push_async_callback(fanout.stop)
            endpoint = RefreshEndpoint(client, allowed_secrets=[SECRET], webhook_key=key, fanout=fanout)
            return Instance(client, redis, fanout, endpoint)

        yield start
    redis_command(admin, "ACL", "DELUSER", user)
    admin.close()


def signed_ping(key: str, version: str, rotation_id: str) -> tuple[dict[str, str], bytes]:
    body = json.dumps({"secretName": SECRET, "version": version, "rotationId": rotation_id}).encode()
    now = datetime.now(UTC)
    return ({"webhook-id": rotation_id, "webhook-timestamp": str(int(now.timestamp())),
             "webhook-signature": Webhook(key).sign(rotation_id, now, body.decode())}, body)


async def test_one_ping_refreshes_every_live_instance_before_a_service_wide_acknowledgement(
    emulator: KeyVaultEmulator, instances: Callable[[str], Any]
) -> None:
    key = "whsec_" + base64.b64encode(os.urandom(32)).decode()
    emulator.put(SECRET, "conninfo-v1")
    replicas: list[Instance] = [await instances(key) for _ in range(3)]
    for replica in replicas:
        await replica.secrets.get(SECRET)  # every replica cached v1
    read_started = time.perf_counter()
    await replicas[0].secrets.refresh("redis-password")  # one Key Vault read, for scale
    read_ms = (time.perf_counter() - read_started) * 1000
    v2 = emulator.put(SECRET, "conninfo-v2")["version"]

    started = time.perf_counter()
    answer = await replicas[0].endpoint.handle(*signed_ping(key, v2, "rot-fan-1"))
    elapsed_ms = (time.perf_counter() - started) * 1000

    assert (answer.status, answer.body) == (200, {"version": v2, "coverage": "service", "instances": 3})
    assert [r.secrets.cached_version(SECRET) for r in replicas] == [v2, v2, v2]
    # A figure, not an assertion (a loaded machine must not fail the test).
    print(f"\nfan-out: 3 replicas converged in {elapsed_ms:.0f} ms; one Key Vault read took {read_ms:.0f} ms")


async def test_a_live_instance_that_does_not_answer_makes_the_acknowledgement_wait(
    emulator: KeyVaultEmulator, instances: Callable[[str], Any]
) -> None:
    """Its heartbeat says it is live, but it cannot refresh: 503 (retried), never a wrong service-wide ack."""
    key = "whsec_" + base64.b64encode(os.urandom(32)).decode()
    emulator.put(SECRET, "conninfo-v1")
    first = await instances(key)
    silent = await instances(key)
    silent.fanout._tasks[0].cancel()  # stop its listener, keep its heartbeat entry
    v2 = emulator.put(SECRET, "conninfo-v2")["version"]
    first.fanout._timeout = 0.5
    answer = await first.endpoint.handle(*signed_ping(key, v2, "rot-fan-2"))
    assert answer.status == 503
    assert answer.body == {"error": "not every instance confirmed", "live": 2, "confirmed": 1}
    assert answer.headers == {"Retry-After": "1"}


async def test_a_sibling_busy_refreshing_one_secret_still_refreshes_and_confirms_another(
    emulator: KeyVaultEmulator, instances: Callable[[str, Any], Any]
) -> None:
    """Notices are handled concurrently: four secrets rotating together do not queue behind one another's
    re-reads on a sibling (here one refresh hangs until released, and another secret still converges)."""
    other = "session-encryption-key"
    release = asyncio.Event()

    async def hang(secret: SecretValue) -> None:
        if secret.name == other:
            await release.wait()

    key = "whsec_" + base64.b64encode(os.urandom(32)).decode()
    emulator.put(SECRET, "conninfo-v1")
    emulator.put(other, "other-v1")
    first = await instances(key, None)
    busy = await instances(key, hang)
    o2 = emulator.put(other, "other-v2")["version"]
    hanging = asyncio.ensure_future(first.fanout.broadcast(other, o2, "rot-other"))
    while busy.secrets.cached_version(other) != o2:  # the busy sibling is inside its hanging refresh
        await asyncio.sleep(0.01)
    v2 = emulator.put(SECRET, "conninfo-v2")["version"]
    answer = await first.endpoint.handle(*signed_ping(key, v2, "rot-fan-3"))
    assert (answer.status, answer.body) == (200, {"version": v2, "coverage": "service", "instances": 2})
    assert busy.secrets.cached_version(SECRET) == v2
    release.set()
    assert (await hanging).complete
