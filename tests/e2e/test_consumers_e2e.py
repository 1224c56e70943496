"""make e2e-consumers: the bridge and the backend, 3 replicas each behind nginx, under load through rotations.

Not part of ``make test`` (it runs for a minute or two); ``make e2e-consumers``
sets ``E2E_CONSUMERS=1``. Each replica has its own cache: the backend replicas
are the FastAPI example (examples/backend) served by uvicorn, the bridge
replicas are Node processes of the Express example (examples/bridge), all
reading the Key Vault emulator through the official SDKs. nginx (Debian)
balances each service round-robin, without retrying a failed request on
another replica (``proxy_next_upstream off``), so every failure counts.

While steady load runs (every request carries a JWT and touches PostgreSQL
and Redis), the real rotation engine rotates ``jwt-signing-key``,
``database-connection-string``, ``redis-password`` and
``session-encryption-key`` ``ROUNDS`` times each with a tiny grace period,
pinging both services through nginx. Two modes:

* ``fanout``: replicas fan each ping out over Redis pub/sub and acknowledge for
  the whole service (``acknowledges: service``), so retirement follows the
  acknowledgement;
* ``no-fanout``: one replica per ping; retirement waits for the declared
  ``maxCacheSeconds`` (the replicas' cache TTL).

Convergence is the time from the vault commit (first seen by a 5 ms poller)
until every replica reports the new version as the one it uses.
"""

from __future__ import annotations

import asyncio
import base64
import os
import secrets
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from keyvault_rotation_kit import CachedSecretClient, JwtKeyRing

from examples.backend.app import create_app
from kvemulator import KeyVaultEmulator
from shared.bootstrap import Container
from shared.domain.record import RotationRequest, Trigger
from tests.conftest import VAULT, make_settings
from tests.integration.rotation_harness import setup_postgres_alternating, setup_redis
from tests.support import leakscan
from tests.support.consumer_app import ServerThread, new_webhook_key
from tests.support.emulator import latest_of
from tests.support.services import PostgresServer, RedisServer, free_port, redis_command

pytestmark = pytest.mark.skipif(os.environ.get("E2E_CONSUMERS") != "1", reason="run with make e2e-consumers")

ROOT = Path(__file__).resolve().parents[2]
REPLICAS = 3
ROUNDS = int(os.environ.get("E2E_ROUNDS", "3"))
SECRETS = ["jwt-signing-key", "database-connection-string", "redis-password", "session-encryption-key"]
CACHE_SECONDS = 3  # the replicas' cache TTL = the catalog's maxCacheSeconds
JWT_OVERLAP_SECONDS = 8  # tokens live 6 s: shorter than the overlap the rotator keeps the old key for
TOKEN_LIFETIME_SECONDS = 6
WORKERS_PER_SERVICE = 3


class Nginx:
    """Debian's nginx as a round-robin reverse proxy in front of each service, in a private prefix."""

    def __init__(self, upstreams: dict[str, list[int]]) -> None:
        binary = shutil.which("nginx") or "/usr/sbin/nginx"
        if not Path(binary).exists():
            raise RuntimeError("nginx is not installed: run scripts/e2e-consumers.sh (apt-get install nginx-light)")
        self.dir = Path(tempfile.mkdtemp(prefix="e2e-nginx-"))
        self.dir.chmod(0o777)
        self.ports = {name: free_port() for name in upstreams}
        blocks = []
        for name, ports in upstreams.items():
            servers = "".join(f"server 127.0.0.1:{p} max_fails=0;" for p in ports)
            blocks.append(f"upstream {name} {{ {servers} keepalive 32; }}")
            blocks.append(
                f"server {{ listen 127.0.0.1:{self.ports[name]}; location / {{ proxy_pass http://{name}; "
                "proxy_http_version 1.1; proxy_set_header Connection \"\"; proxy_next_upstream off; "
                "proxy_read_timeout 30s; } }"
            )
        temp = " ".join(f"{kind}_temp_path {self.dir}/{kind};" for kind in
                        ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        user = "user root;" if os.geteuid() == 0 else ""
        (self.dir / "nginx.conf").write_text(
            f"{user} worker_processes 1; pid {self.dir}/nginx.pid; error_log {self.dir}/error.log warn; "
            f"events {{ worker_connections 1024; }} http {{ access_log off; {temp} {' '.join(blocks)} }}"
        )
        self.proc = subprocess.Popen(
            [binary, "-p", str(self.dir), "-c", str(self.dir / "nginx.conf"), "-g", "daemon off;"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 10
        while not all(_port_open(p) for p in self.ports.values()):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                detail = self.proc.stderr.read().decode() if self.proc.stderr else ""
                raise RuntimeError("nginx did not start: " + detail)
            time.sleep(0.05)

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


def _port_open(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


class BridgeReplica:
    """One Node process of examples/bridge/server.ts."""

    def __init__(self, emulator: KeyVaultEmulator, redis: RedisServer, fanout: bool) -> None:
        env = {**os.environ, "KV_URL": emulator.url, "KV_EMULATOR": "1", "NODE_EXTRA_CA_CERTS": emulator.ca_path,
               "REDIS_HOST": redis.host, "REDIS_PORT": str(redis.port), "CACHE_TTL_MS": str(CACHE_SECONDS * 1000)}
        if fanout:
            env["FANOUT_SERVICE"] = "bridge"
        script = ROOT / "kits/node/dist/examples/bridge/server.js"
        self.log = Path(tempfile.mkstemp(prefix="e2e-bridge-", suffix=".log")[1])
        with self.log.open("w") as out:  # a file, not a pipe nobody reads (a full pipe would block the replica)
            self.proc = subprocess.Popen(["node", str(script)], env=env, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while not (text := self.log.read_text()).startswith("listening "):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"bridge replica did not start: {text[:200]!r}")
            time.sleep(0.05)
        self.port = int(text.split()[1])

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.unlink(missing_ok=True)


class Load:
    """Steady load on both services through nginx; every request has a JWT and touches PostgreSQL and Redis."""

    def __init__(self, http: aiohttp.ClientSession, targets: dict[str, str], signer: JwtKeyRing,
                 signer_client: CachedSecretClient) -> None:
        self._http, self._targets, self._signer, self._client = http, targets, signer, signer_client
        self.total = 0
        self.failures: list[str] = []
        self._token = ""
        self._stop = asyncio.Event()

    async def issue(self) -> None:
        """The issuer: a fresh token every second, signed with the key the vault serves then."""
        while not self._stop.is_set():
            self._client.invalidate("jwt-signing-key")  # the issuer reads the key the vault serves now
            await self._signer.reload()
            self._token = await self._signer.sign({"sub": "load", "exp": int(time.time()) + TOKEN_LIFETIME_SECONDS})
            await asyncio.sleep(1.0)

    async def worker(self, url: str) -> None:
        while not self._stop.is_set():
            token = self._token  # may have been issued up to a second before a rotation
            status: int | str  # the HTTP status, or the name of the error that prevented one
            try:
                async with self._http.get(url, headers={"Authorization": f"Bearer {token}"}) as response:
                    await response.read()
                    ok = response.status == 200
                    status = response.status
            except (aiohttp.ClientError, TimeoutError) as exc:
                ok, status = False, type(exc).__name__
            self.total += 1
            if not ok:
                self.failures.append(f"{url} -> {status}")

    async def run(self) -> list[asyncio.Task[None]]:
        await self._signer.reload()
        self._token = await self._signer.sign({"sub": "load", "exp": int(time.time()) + TOKEN_LIFETIME_SECONDS})
        tasks = [asyncio.create_task(self.issue())]
        for path in (self._targets["backend"] + "/api/items", self._targets["bridge"] + "/api/session"):
            tasks += [asyncio.create_task(self.worker(path)) for _ in range(WORKERS_PER_SERVICE)]
        return tasks

    def stop(self) -> None:
        self._stop.set()


async def replica_versions(http: aiohttp.ClientSession, replicas: list[str], name: str) -> list[str | None]:
    async def one(base: str) -> str | None:
        async with http.get(f"{base}/internal/secrets/version", params={"name": name}) as response:
            version: str | None = (await response.json())["version"]
            return version

    return list(await asyncio.gather(*(one(base) for base in replicas)))


async def watch_convergence(emulator: KeyVaultEmulator, http: aiohttp.ClientSession, replicas: list[str],
                            name: str, samples: list[float], stop: asyncio.Event,
                            first: list[float] | None = None) -> None:
    seen = str(latest_of(emulator, name)["version"])
    while not stop.is_set():
        latest = str(latest_of(emulator, name)["version"])
        if latest == seen:
            await asyncio.sleep(0.005)
            continue
        committed = time.monotonic()
        seen = latest
        seen_first = False
        while not stop.is_set():
            versions = await replica_versions(http, replicas, name)
            if not seen_first and latest in versions and first is not None:
                first.append((time.monotonic() - committed) * 1000)
                seen_first = True
            if all(v == latest for v in versions):
                samples.append((time.monotonic() - committed) * 1000)
                break
            if str(latest_of(emulator, name)["version"]) != latest:
                break  # rotated again before converging (cannot happen: the overlap blocks it)
            await asyncio.sleep(0.005)


async def sample_reference(http: aiohttp.ClientSession, url: str, client: CachedSecretClient,
                           pings: list[float], reads: list[float], stop: asyncio.Event) -> None:
    """The yardstick, under the same load: one round trip through nginx to a replica, and one vault read."""
    while not stop.is_set():
        started = time.monotonic()
        async with http.get(url + "/internal/secrets/version", params={"name": "jwt-signing-key"}) as response:
            await response.read()
        pings.append((time.monotonic() - started) * 1000)
        started = time.monotonic()
        await client.get("session-encryption-key", use_cache=False)
        reads.append((time.monotonic() - started) * 1000)
        await asyncio.sleep(0.5)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        yield session


@pytest.fixture
def nginx_cleanup() -> Iterator[list[Any]]:
    things: list[Any] = []
    yield things
    for thing in reversed(things):
        thing.stop()


@pytest.mark.parametrize("mode", ["no-fanout", "fanout"])
async def test_consumers_through_rotations_behind_a_load_balancer(
    mode: str, emulator: KeyVaultEmulator, azurite: Any, postgres_server: PostgresServer,
    redis_server_fresh: RedisServer, http: aiohttp.ClientSession, nginx_cleanup: list[Any],
) -> None:
    fanout = mode == "fanout"
    redis = redis_server_fresh
    setup_postgres_alternating(emulator, postgres_server)
    setup_redis(emulator, redis, named_user=True)
    emulator.put("jwt-signing-key", base64.urlsafe_b64encode(secrets.token_bytes(64)).decode().rstrip("="))
    emulator.put("session-encryption-key", base64.b64encode(secrets.token_bytes(32)).decode())
    emulator.put("backend-refresh-hmac-key", new_webhook_key())
    emulator.put("bridge-refresh-hmac-key", new_webhook_key())
    channel_password = secrets.token_urlsafe(18)
    leakscan.register([channel_password])
    redis_command(redis.client(), "ACL", "SETUSER", "fanout", "on", f">{channel_password}", "~kv-rotation:*",
                  "&kv-rotation:*", "+@all")
    emulator.put("fanout-redis-url", f"redis://fanout:{channel_password}@{redis.host}:{redis.port}/0")

    backends = []
    for _ in range(REPLICAS):
        app = create_app(lambda: CachedSecretClient(emulator.async_secret_client(), ttl_seconds=CACHE_SECONDS),
                         redis_host=redis.host, redis_port=redis.port,
                         fanout_service="backend" if fanout else None)
        server = ServerThread(app, lifespan="on")
        server.start()
        nginx_cleanup.append(server)
        backends.append(server)
    bridges = []
    for _ in range(REPLICAS):
        replica = BridgeReplica(emulator, redis, fanout)
        nginx_cleanup.append(replica)
        bridges.append(replica)
    nginx = Nginx({"backend": [s.port for s in backends], "bridge": [b.port for b in bridges]})
    nginx_cleanup.append(nginx)

    def consumer(name: str, key: str) -> dict[str, Any]:
        return {"url": nginx.url(name) + "/internal/secrets/refresh", "auth": "hmac", "hmacSecret": key,
                "maxCacheSeconds": CACHE_SECONDS, "acknowledges": "service" if fanout else "instance"}

    catalog = {"consumers": {"backend": consumer("backend", "backend-refresh-hmac-key"),
                             "bridge": consumer("bridge", "bridge-refresh-hmac-key")},
               "secrets": {name: ["backend", "bridge"] for name in SECRETS}}
    container = Container(make_settings(emulator, azurite, consumers=catalog, grace_period_hours=0.5 / 3600,
                                        jwt_max_token_lifetime_seconds=JWT_OVERLAP_SECONDS,
                                        ping_timeout_seconds=10.0, ping_attempts=5))
    replicas = [s.base_url for s in backends] + [f"http://127.0.0.1:{b.port}" for b in bridges]

    async with CachedSecretClient(emulator.async_secret_client()) as issuer_client:
        load = Load(http, {"backend": nginx.url("backend"), "bridge": nginx.url("bridge")},
                    JwtKeyRing(issuer_client, "jwt-signing-key"), issuer_client)
        tasks = await load.run()
        await asyncio.sleep(2)  # steady state before the first rotation
        stop_watch = asyncio.Event()
        convergence: list[float] = []
        first_replica: list[float] = []
        watchers = [asyncio.create_task(watch_convergence(emulator, http, replicas, name, convergence, stop_watch,
                                                          first_replica))
                    for name in SECRETS]
        ping_ms: list[float] = []
        read_ms: list[float] = []
        watchers.append(asyncio.create_task(
            sample_reference(http, nginx.url("backend"), issuer_client, ping_ms, read_ms, stop_watch)))
        rotations = 0

        async def rotate(name: str) -> None:
            nonlocal rotations
            for i in range(ROUNDS):
                outcome = await container.engine.run(RotationRequest(VAULT, name, Trigger.HTTP, reason=f"e2e {i}"))
                assert outcome.status == "rotated", (name, outcome.reason)
                rotations += 1
                while True:
                    done = await container.engine.complete_pending(VAULT, name)
                    if done.state == "retired":
                        break
                    await asyncio.sleep(0.25)

        try:
            await asyncio.gather(*(rotate(name) for name in SECRETS))
            await asyncio.sleep(1)  # requests in flight at the last retirement
        finally:
            load.stop()
            stop_watch.set()
            await asyncio.gather(*tasks, *watchers, return_exceptions=True)
            await container.aclose()

    ordered = sorted(convergence)
    p50 = statistics.median(ordered) if ordered else float("nan")
    pmax = ordered[-1] if ordered else float("nan")
    bound = 1.5 * (statistics.median(ping_ms) + statistics.median(read_ms))
    print(f"\n[{mode}] first failures: {load.failures[:5]}")
    print(f"[{mode}] reference under load: ping round trip p50 {statistics.median(ping_ms):.0f} ms, vault read p50 "
          f"{statistics.median(read_ms):.0f} ms; 1.5 x their sum = {bound:.0f} ms; convergence p50 {p50:.0f} ms "
          f"(first replica p50 {statistics.median(first_replica) if first_replica else float('nan'):.0f} ms)")
    print(f"e2e-consumers ({mode}): {load.total} requests, {len(load.failures)} failed, {rotations} rotations, "
          f"{REPLICAS} replicas per service, convergence p50 {p50:.0f} ms p max {pmax:.0f} ms")
    assert rotations == ROUNDS * len(SECRETS)
    assert load.failures == []
