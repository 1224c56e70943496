"""Replica fan-out over Redis pub/sub: one ping, every instance refreshed, one acknowledgement for all.

A ping reaches one instance behind the load balancer. With a :class:`RedisFanout`
the refresh endpoint of that instance publishes the notice on the service's
channel (Redis, which the services already use), every other live instance
re-reads the secret and replies with the version it now uses, and the
endpoint answers ``"coverage": "service"`` only when every live instance
replied with the pinged version (503 otherwise, so the rotation app retries).

Speed: the fan-out is on the path from the vault commit to the last replica
using the new version, so nothing is set up per ping. Each instance
subscribes once, at :meth:`start`, to the service's channel and to its own
reply channel; a broadcast publishes at once and looks up the live instances
while the siblings re-read; each notice is handled in its own task, so
siblings re-read concurrently for concurrent rotations.

Liveness: each instance refreshes its entry in a sorted set every
``heartbeat_seconds`` (scored with the Redis server's clock, so instance
clocks do not matter); an instance is live while its entry is younger than
``live_seconds``. An instance that died stops counting after that window; one
that is live but does not answer in ``timeout_seconds`` makes the
acknowledgement wait (503) rather than be wrong.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from keyvault_rotation_kit.healing import SelfHealingRedis
from keyvault_rotation_kit.refresh import FanoutResult
from keyvault_rotation_kit.secrets import CachedSecretClient, SecretValue


class RedisFanout:
    """See the module docstring. ``start()`` before serving, ``stop()`` on shutdown."""

    def __init__(
        self,
        redis: SelfHealingRedis,
        secrets: CachedSecretClient,
        *,
        service: str,
        instance_id: str | None = None,
        on_refreshed: Callable[[SecretValue], Awaitable[None]] | None = None,
        heartbeat_seconds: float = 1.0,
        live_seconds: float = 5.0,
        timeout_seconds: float = 3.0,
    ) -> None:
        self._redis = redis
        self._secrets = secrets
        self.instance_id = instance_id or uuid.uuid4().hex
        self._on_refreshed = on_refreshed
        self._heartbeat = heartbeat_seconds
        self._live = live_seconds
        self._timeout = timeout_seconds
        self._channel = f"kv-rotation:{service}:refresh"
        self._members = f"kv-rotation:{service}:instances"
        self._replies = f"{self._channel}:reply:{self.instance_id}"
        self._tasks: list[asyncio.Task[None]] = []
        self._handling: set[asyncio.Task[None]] = set()
        self._waiting: dict[str, _Waiting] = {}
        self._subscribed = asyncio.Event()

    async def start(self) -> None:
        """Subscribe, then announce this instance (so it never counts as live before it can answer)."""
        self._tasks.append(asyncio.create_task(self._listen(), name=f"fanout-listen-{self.instance_id}"))
        await asyncio.wait_for(self._subscribed.wait(), timeout=10)
        await self._beat()
        self._tasks.append(asyncio.create_task(self._heartbeat_loop(), name=f"fanout-beat-{self.instance_id}"))

    async def stop(self) -> None:
        for task in [*self._tasks, *self._handling]:
            task.cancel()
        for task in [*self._tasks, *self._handling]:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        self._handling.clear()
        with contextlib.suppress(Exception):
            await self._redis.run(lambda r: r.zrem(self._members, self.instance_id))

    async def broadcast(self, secret_name: str, version: str, rotation_id: str) -> FanoutResult:
        """Tell the siblings; return how many live instances (this one included) confirmed ``version``."""
        if not self._subscribed.is_set():
            raise RuntimeError("RedisFanout.start() was not called (or its subscription is down)")
        waiting = _Waiting(secret_name, version)
        broadcast_id = uuid.uuid4().hex
        self._waiting[broadcast_id] = waiting
        try:
            message = json.dumps({"secretName": secret_name, "version": version, "rotationId": rotation_id,
                                  "origin": self.instance_id, "reply": self._replies, "id": broadcast_id})
            # Published first (inline: no task to schedule before the command is written), and the live
            # instances looked up while the siblings re-read.
            publishing = self._redis.run(lambda r: r.publish(self._channel, message))
            looking_up = asyncio.ensure_future(self._live_instances())
            try:
                await publishing
            except BaseException:
                looking_up.cancel()
                raise
            live = await looking_up
            live.add(self.instance_id)
            waiting.confirmed.add(self.instance_id)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self._timeout
            while not live <= waiting.confirmed and loop.time() < deadline:
                waiting.changed.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(waiting.changed.wait(), timeout=max(0.0, deadline - loop.time()))
        finally:
            del self._waiting[broadcast_id]
        return FanoutResult(live=len(live), confirmed=len(live & waiting.confirmed))

    # ------------------------------------------------------------ internals

    async def _live_instances(self) -> set[str]:
        async def query(r: Any) -> list[Any]:
            seconds, micros = await r.time()
            now = seconds + micros / 1e6
            await r.zremrangebyscore(self._members, "-inf", now - 10 * self._live)
            result: list[Any] = await r.zrangebyscore(self._members, now - self._live, "+inf")
            return result

        members = await self._redis.run(query)
        return {m.decode() if isinstance(m, bytes) else str(m) for m in members}

    async def _beat(self) -> None:
        async def beat(r: Any) -> None:
            seconds, micros = await r.time()
            await r.zadd(self._members, {self.instance_id: seconds + micros / 1e6})

        await self._redis.run(beat)

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self._heartbeat)
            with contextlib.suppress(Exception):  # a missed beat only makes this instance look dead for a while
                await self._beat()

    async def _listen(self) -> None:
        while True:
            try:
                client = await self._redis.client()
                async with client.pubsub() as pubsub:
                    await pubsub.subscribe(self._channel, self._replies)
                    self._subscribed.set()
                    async for message in pubsub.listen():
                        if message.get("type") != "message":
                            continue
                        channel = message.get("channel")
                        if isinstance(channel, bytes):
                            channel = channel.decode()
                        if channel == self._replies:
                            self._on_reply(message["data"])
                        else:
                            # Its own task: a re-read must not hold up replies or other notices.
                            task = asyncio.create_task(self._on_message(message["data"]))
                            self._handling.add(task)
                            task.add_done_callback(self._handling.discard)
            except asyncio.CancelledError:
                raise
            except Exception:
                self._subscribed.clear()
                # Connection lost or the password rotated under us: rebuild and resubscribe.
                with contextlib.suppress(Exception):
                    await self._redis.run(lambda r: r.ping())  # heals a rotated password once
                await asyncio.sleep(0.2)

    def _on_reply(self, data: Any) -> None:
        try:
            answer = json.loads(data)
            waiting = self._waiting.get(str(answer["id"]))
        except (ValueError, TypeError, KeyError):
            return
        if waiting is not None and answer.get("version") == waiting.version:
            waiting.confirmed.add(str(answer.get("instance")))
            waiting.changed.set()

    async def _on_message(self, data: Any) -> None:
        try:
            notice = json.loads(data)
            name, version, origin, reply = notice["secretName"], notice["version"], notice["origin"], notice["reply"]
        except (ValueError, TypeError, KeyError):
            return
        if origin == self.instance_id or not str(reply).startswith(self._channel + ":reply:"):
            return
        if self._secrets.cached_version(name) != version:
            try:
                secret = await self._secrets.refresh(name)
                if self._on_refreshed is not None:
                    await self._on_refreshed(secret)
            except Exception:
                return  # no reply: the acknowledging instance answers 503 and the ping is retried
            current = secret.version
        else:
            current = version
        answer = json.dumps({"instance": self.instance_id, "version": current, "id": notice.get("id")})
        await self._redis.run(lambda r: r.publish(reply, answer))


class _Waiting:
    """One broadcast's replies so far."""

    def __init__(self, secret_name: str, version: str) -> None:
        self.secret_name = secret_name
        self.version = version
        self.confirmed: set[str] = set()
        self.changed = asyncio.Event()
