"""Zero downtime under load (issue 7): consumers doing well over 200
operations per second in total against PostgreSQL, Redis and JWT
verification while each secret is rotated 10 times in a row. Every operation
re-reads the vault, as a consumer whose cache was just cleared would."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

import jwt as pyjwt

from kvemulator import KeyVaultEmulator
from shared.container import Container
from shared.engine import RotationRequest, Trigger
from shared.rotators.jwt_key import b64url_decode
from tests.conftest import VAULT, make_settings
from tests.integration.rotation_harness import (
    pg_can_login,
    redis_can_auth,
    setup_postgres_alternating,
    setup_redis,
)
from tests.support import leakscan
from tests.support.services import PostgresServer, RedisServer

ROTATIONS = 10
RATE_PER_CONSUMER = 110.0  # three consumers: ~330 operations per second offered


class LoadConsumer:
    def __init__(self, name: str, op: Callable[[], bool], rate: float) -> None:
        self.name, self._op, self._period = name, op, 1.0 / rate
        self.ok = 0
        self.failed = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                good = self._op()
            except Exception:
                good = False
            if good:
                self.ok += 1
            else:
                self.failed += 1
            time.sleep(max(0.0, self._period - (time.monotonic() - started)))

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def jwt_roundtrip(emu: KeyVaultEmulator) -> bool:
    """The bridge signs with the key the vault serves; the backend verifies with every enabled version."""
    signing_key = b64url_decode(str(emu.latest("jwt-signing-key")["value"]))
    token = pyjwt.encode({"sub": "load"}, signing_key, algorithm="HS256")
    for version in reversed(emu.versions("jwt-signing-key")):
        if not version["attributes"]["enabled"]:
            continue
        try:
            pyjwt.decode(token, b64url_decode(str(version["value"])), algorithms=["HS256"])
            return True
        except pyjwt.InvalidSignatureError:
            continue
    return False


async def rotate_many(container: Container, secret: str, settle: float) -> None:
    for i in range(ROTATIONS):
        outcome = await container.engine.run(RotationRequest(VAULT, secret, Trigger.HTTP, reason=f"load {i}"))
        assert outcome.status == "rotated", (secret, outcome.reason)
        await asyncio.sleep(settle)
        done = await container.engine.complete_pending(VAULT, secret)
        assert done.state == "retired", (secret, done.reason)


async def test_consumers_at_over_200_operations_per_second_see_zero_failures_through_10_rotations(
        emulator: KeyVaultEmulator, azurite: Any, postgres_server: PostgresServer,
        redis_server_fresh: RedisServer) -> None:
    setup_postgres_alternating(emulator, postgres_server)
    setup_redis(emulator, redis_server_fresh)
    initial = "bG9hZC10ZXN0LWluaXRpYWwtc2lnbmluZy1rZXktMDEyMzQ1Njc4OQ"
    leakscan.register([initial])
    emulator.put("jwt-signing-key", initial)
    consumers = [
        LoadConsumer("postgres", lambda: pg_can_login(str(emulator.latest("database-connection-string")["value"])),
                     RATE_PER_CONSUMER),
        LoadConsumer("redis",
                     lambda: redis_can_auth(redis_server_fresh, str(emulator.latest("redis-password")["value"])),
                     RATE_PER_CONSUMER),
        LoadConsumer("jwt", lambda: jwt_roundtrip(emulator), RATE_PER_CONSUMER),
    ]
    container = Container(make_settings(emulator, azurite, grace_period_hours=0.3 / 3600,
                                        jwt_max_token_lifetime_seconds=1))
    started = time.monotonic()
    for consumer in consumers:
        consumer.start()
    try:
        await asyncio.gather(
            rotate_many(container, "database-connection-string", 0.35),
            rotate_many(container, "redis-password", 0.35),
            rotate_many(container, "jwt-signing-key", 1.1),
        )
    finally:
        for consumer in consumers:
            consumer.stop()
        await container.aclose()
    elapsed = time.monotonic() - started
    total_ok = sum(c.ok for c in consumers)
    rate = (total_ok + sum(c.failed for c in consumers)) / elapsed
    print(f"\nload: {rate:.0f} operations/s over {elapsed:.1f} s; "
          + ", ".join(f"{c.name} {c.ok} ok / {c.failed} failed" for c in consumers))
    assert [c.failed for c in consumers] == [0, 0, 0]
    assert rate >= 200
