"""make e2e-consumers: the bridge and the backend, 3 replicas each behind nginx, under load through rotations.

Not part of ``make test`` (it runs for a minute or two); ``make e2e-consumers``
sets ``E2E_CONSUMERS=1``. As in a deployment, each replica is a process of its
own with its own cache: the backend replicas run the FastAPI example
(examples/backend/server.py, uvicorn), the bridge replicas the Express example
(examples/bridge) on Node, all reading the Key Vault emulator through the
official SDKs. The emulator (Key Vault) and the load (the users) run in
processes of their own too; the test process is the rotation app. nginx
(Debian) balances each service round-robin, without retrying a failed request
on another replica (``proxy_next_upstream off``), so every failure counts.

While a steady open-loop load runs (``E2E_RATE`` requests per second to each
service; every request carries a JWT, opens a PostgreSQL connection and uses
Redis), the real rotation engine rotates ``jwt-signing-key``,
``database-connection-string``, ``redis-password`` and
``session-encryption-key`` ``ROUNDS`` times each, one after another
(``E2E_CONCURRENT=1``: all at once), with a tiny grace period, pinging both
services through nginx. Two modes:

* ``fanout``: replicas fan each ping out over Redis pub/sub and acknowledge for
  the whole service (``acknowledges: service``), so retirement follows the
  acknowledgement;
* ``no-fanout``: one replica per ping; retirement waits for the declared
  ``maxCacheSeconds`` (the replicas' cache TTL).

Convergence is the time from the vault commit until the last replica uses the
new version: from the start of the emulator's handling of the PUT that created
the version, to the latest of the moments each replica read it (each replica
reports the version it uses and when it read it; they share this machine's
clock). Polling the replicas only finds out that they have all switched: its
own delay is not counted (it is printed too, as "seen by polling"). The
yardstick is measured in the same run, under the same load: one round trip
through nginx to a replica, and one Key Vault read by the SDK. After the load
stops, the fan-out run also measures what one fan-out notice costs an idle
replica (CPU from ``/proc``) and how long all replicas of a service take to
answer it.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, cast

import aiohttp
import pytest
from keyvault_rotation_kit import CachedSecretClient

from kvemulator import KeyVaultEmulator
from kvemulator.credentials import AsyncStaticTokenCredential
from shared.bootstrap import Container
from shared.domain.record import RotationRequest, Trigger
from tests.conftest import VAULT, make_settings
from tests.integration.rotation_harness import setup_postgres_alternating, setup_redis
from tests.support import leakscan
from tests.support.consumer_app import new_webhook_key
from tests.support.remote_emulator import RemoteEmulator
from tests.support.services import PostgresServer, RedisServer, free_port, redis_command

pytestmark = pytest.mark.skipif(os.environ.get("E2E_CONSUMERS") != "1", reason="run with make e2e-consumers")

ROOT = Path(__file__).resolve().parents[2]
REPLICAS = 3
ROUNDS = int(os.environ.get("E2E_ROUNDS", "3"))
SECRETS = ["jwt-signing-key", "database-connection-string", "redis-password", "session-encryption-key"]
CACHE_SECONDS = 3  # the replicas' cache TTL = the catalog's maxCacheSeconds
JWT_OVERLAP_SECONDS = 8  # tokens live 6 s: shorter than the overlap the rotator keeps the old key for
TOKEN_LIFETIME_SECONDS = 6
CONCURRENT = os.environ.get("E2E_CONCURRENT") == "1"  # rotate the four secrets at once instead of in turn
RATE_PER_SERVICE = float(os.environ.get("E2E_RATE", "40"))  # requests per second to each service
CALIBRATION_NOTICES = 50  # fan-out notices sent to the idle replicas to measure what a refresh costs
POLL_SECONDS = 0.2  # how often the watchers ask the replicas which version they use (they say when they read it)
COMMIT_POLL_SECONDS = 0.05  # how often they ask the vault for new versions (it says when it made them)


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


class Replica:
    """One replica process; it prints ``listening <port>`` once it serves."""

    def __init__(self, kind: str, command: list[str], env: dict[str, str]) -> None:
        self.log = Path(tempfile.mkstemp(prefix=f"e2e-{kind}-", suffix=".log")[1])
        with self.log.open("w") as out:  # a file, not a pipe nobody reads (a full pipe would block the replica)
            self.proc = subprocess.Popen(command, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while not (text := self.log.read_text()).startswith("listening "):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{kind} replica did not start: {text[-300:]!r}")
            time.sleep(0.05)
        self.port = int(text.split()[1])
        self.base_url = f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.unlink(missing_ok=True)


def bridge_replica(emulator: RemoteEmulator, redis: RedisServer, fanout: bool) -> Replica:
    """A Node process of examples/bridge/server.ts."""
    env = {**os.environ, "KV_URL": emulator.url, "KV_EMULATOR": "1", "NODE_EXTRA_CA_CERTS": emulator.ca_path,
           "REDIS_HOST": redis.host, "REDIS_PORT": str(redis.port), "CACHE_TTL_MS": str(CACHE_SECONDS * 1000)}
    if fanout:
        env["FANOUT_SERVICE"] = "bridge"
    return Replica("bridge", ["node", str(ROOT / "kits/node/dist/examples/bridge/server.js")], env)


def backend_replica(emulator: RemoteEmulator, redis: RedisServer, fanout: bool) -> Replica:
    """A Python process of examples/backend/server.py (uvicorn)."""
    env = {**os.environ, "KV_URL": emulator.url, "KV_EMULATOR": "1", "KV_CA_PATH": emulator.ca_path,
           "REDIS_HOST": redis.host, "REDIS_PORT": str(redis.port), "CACHE_TTL_SECONDS": str(CACHE_SECONDS),
           "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "kits/python")])}
    if fanout:
        env["FANOUT_SERVICE"] = "backend"
    return Replica("backend", [sys.executable, "-m", "examples.backend.server"], env)


class LoadProcess:
    """tests/e2e/load.py in a process of its own (users are not in the rotation app's or Key Vault's process)."""

    def __init__(self, emulator: RemoteEmulator, targets: dict[str, str]) -> None:
        config = {"kv_url": emulator.url, "ca_path": emulator.ca_path, "targets": targets,
                  "rate": RATE_PER_SERVICE, "token_lifetime": TOKEN_LIFETIME_SECONDS}
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "kits/python")])}
        self.log = Path(tempfile.mkstemp(prefix="e2e-load-", suffix=".log")[1])
        with self.log.open("w") as err:
            self.proc = subprocess.Popen([sys.executable, "-m", "tests.e2e.load", json.dumps(config)], cwd=ROOT,
                                         env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err,
                                         text=True)
        assert self.proc.stdout is not None
        ready = self.proc.stdout.readline()
        if ready.strip() != "ready":
            self.stop()
            raise RuntimeError(f"the load did not start: {self.log.read_text()[-300:]!r}")
        self.total = 0
        self.failures: list[str] = []

    async def finish(self) -> None:
        """Stop the load and collect what it counted."""
        out, _ = await asyncio.to_thread(self.proc.communicate, timeout=60)
        result = json.loads(out.strip().splitlines()[-1])
        self.total, self.failures = result["total"], result["failures"]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.log.unlink(missing_ok=True)


async def replica_versions(http: aiohttp.ClientSession, replicas: list[str],
                           name: str) -> list[tuple[str | None, float | None]]:
    """Each replica's (version in use, when it read it as epoch seconds)."""
    async def one(base: str) -> tuple[str | None, float | None]:
        async with http.get(f"{base}/internal/secrets/version", params={"name": name}) as response:
            answer = await response.json()
        read_at = answer.get("readAt")
        return answer["version"], datetime.fromisoformat(read_at).timestamp() if read_at else None

    return list(await asyncio.gather(*(one(base) for base in replicas)))


async def detect_commits(emulator: RemoteEmulator, commits: dict[str, asyncio.Queue[tuple[str, float]]],
                         stop: asyncio.Event) -> None:
    """Each new version of the watched secrets, with when the vault committed it (epoch seconds).

    The commit moment is the start of the emulator's handling of the PUT that created the version (it is
    created during it, in well under a millisecond): rotations of one secret follow each other, so it is
    the secret's last PUT. The vault is asked from a thread: its answers cross a process boundary.
    """
    names = list(commits)
    seen = await asyncio.to_thread(emulator.latest_versions, names)
    while not stop.is_set():
        await asyncio.sleep(COMMIT_POLL_SECONDS)
        now = await asyncio.to_thread(emulator.latest_versions, names)
        for name in names:
            version = now[name]
            if version is not None and version != seen[name]:
                seen[name] = version
                commits[name].put_nowait((version, await asyncio.to_thread(emulator.last_put_started, name)))


def cpu_seconds(pid: int) -> float:
    """User + system CPU the process has used so far (``/proc/<pid>/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


async def refresh_cost(redis_url: str, services: dict[str, list[Replica]], notices: int) -> dict[str, Any]:
    """What one sibling refresh costs a replica, measured on idle replicas (after the load stopped).

    Publishes ``notices`` notices on each service's fan-out channel, as an acknowledging instance does,
    one at a time, each answered by every replica of the service after its Key Vault read; counts the
    replicas' CPU (``/proc``) and the time from the publish to the last answer."""
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(redis_url)
    result: dict[str, Any] = {}
    try:
        for service, replicas in services.items():
            channel = f"kv-rotation:{service}:refresh"
            reply = f"{channel}:reply:calibration"
            async with client.pubsub() as pubsub:
                await pubsub.subscribe(reply)
                await pubsub.get_message(timeout=1)  # the subscription's confirmation
                before = [cpu_seconds(r.proc.pid) for r in replicas]
                rounds: list[float] = []
                for i in range(notices):
                    notice = json.dumps({"secretName": "session-encryption-key", "version": f"calibration-{i}",
                                         "rotationId": f"calibration-{i}", "origin": "calibration",
                                         "reply": reply, "id": f"calibration-{i}"})
                    started = time.monotonic()
                    await client.publish(channel, notice)
                    answered = 0
                    while answered < len(replicas):
                        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=5)
                        if message is None:
                            raise AssertionError(f"{service}: a replica did not answer a fan-out notice")
                        answered += 1
                    rounds.append((time.monotonic() - started) * 1000)
                used = [cpu_seconds(r.proc.pid) - b for r, b in zip(replicas, before, strict=True)]
            result[service] = {"cpu_ms": statistics.mean(used) / notices * 1000, "round_ms": statistics.median(rounds)}
    finally:
        await client.aclose()
    return result


class CpuBusy:
    """How busy the machine's CPUs were from construction to :meth:`percent` (``/proc/stat``)."""

    def __init__(self) -> None:
        self._start = self._sample()
        self._end: tuple[int, int] | None = None

    @staticmethod
    def _sample() -> tuple[int, int]:
        fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        idle = fields[3] + fields[4]  # idle + iowait
        return sum(fields) - idle, sum(fields)

    def stop(self) -> None:
        self._end = self._end or self._sample()

    def percent(self) -> float:
        self.stop()
        assert self._end is not None
        busy, total = self._end[0] - self._start[0], self._end[1] - self._start[1]
        return 100.0 * busy / total if total else float("nan")


class Convergence:
    """What the watchers measured: per rotation, per replica (by index) and per secret, in milliseconds."""

    def __init__(self) -> None:
        self.last: list[float] = []  # the last replica: the convergence
        self.first: list[float] = []
        self.polled: list[float] = []  # when polling saw it
        self.per_replica: dict[int, list[float]] = {}
        self.per_secret: dict[str, list[float]] = {}


async def watch_convergence(http: aiohttp.ClientSession, replicas: list[str], name: str,
                            commits: asyncio.Queue[tuple[str, float]], seen: Convergence,
                            stop: asyncio.Event) -> None:
    while not stop.is_set():
        try:
            latest, committed = await asyncio.wait_for(commits.get(), timeout=0.1)
        except TimeoutError:
            continue
        switched: dict[int, float] = {}  # replica -> when it read the new version
        # (A newer version before converging would end this one: cannot happen, the overlap blocks it.)
        while commits.empty() and not stop.is_set():
            for i, (version, read_at) in enumerate(await replica_versions(http, replicas, name)):
                if version == latest and i not in switched:
                    switched[i] = read_at if read_at is not None else time.time()
            if len(switched) == len(replicas):
                seen.last.append((max(switched.values()) - committed) * 1000)
                seen.per_secret.setdefault(name, []).append(seen.last[-1])
                seen.first.append((min(switched.values()) - committed) * 1000)
                seen.polled.append((time.time() - committed) * 1000)
                for i, at in switched.items():
                    seen.per_replica.setdefault(i, []).append((at - committed) * 1000)
                break
            # The replicas say when they switched, so polling often would only add load while they do.
            await asyncio.sleep(POLL_SECONDS)


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
def emulator() -> Iterator[RemoteEmulator]:
    """The vault in a process of its own (tests/support/remote_emulator.py): Key Vault is a service."""
    emu = RemoteEmulator(vault_name=VAULT)
    try:
        yield emu
    finally:
        versions = [v for name in emu.secret_names() for v in emu.versions(name)]
        leakscan.register(str(v["value"]) for v in versions)
        leakscan.record("tags", repr([v.get("tags") for v in versions]))
        emu.stop()


@pytest.fixture
def nginx_cleanup() -> Iterator[list[Any]]:
    things: list[Any] = []
    yield things
    for thing in reversed(things):
        thing.stop()


@pytest.mark.parametrize("mode", ["no-fanout", "fanout"])
async def test_consumers_through_rotations_behind_a_load_balancer(
    mode: str, emulator: RemoteEmulator, azurite: Any, postgres_server: PostgresServer,
    redis_server_fresh: RedisServer, http: aiohttp.ClientSession, nginx_cleanup: list[Any],
) -> None:
    fanout = mode == "fanout"
    redis = redis_server_fresh
    seeded = cast(KeyVaultEmulator, emulator)  # the emulator's process, driven through the same methods
    setup_postgres_alternating(seeded, postgres_server)
    setup_redis(seeded, redis, named_user=True)
    emulator.put("jwt-signing-key", base64.urlsafe_b64encode(secrets.token_bytes(64)).decode().rstrip("="))
    emulator.put("session-encryption-key", base64.b64encode(secrets.token_bytes(32)).decode())
    emulator.put("backend-refresh-hmac-key", new_webhook_key())
    emulator.put("bridge-refresh-hmac-key", new_webhook_key())
    channel_password = secrets.token_urlsafe(18)
    leakscan.register([channel_password])
    redis_command(redis.client(), "ACL", "SETUSER", "fanout", "on", f">{channel_password}", "~kv-rotation:*",
                  "&kv-rotation:*", "+@all")
    emulator.put("fanout-redis-url", f"redis://fanout:{channel_password}@{redis.host}:{redis.port}/0")

    backends: list[Replica] = []
    bridges: list[Replica] = []
    for _ in range(REPLICAS):
        for make, started in ((backend_replica, backends), (bridge_replica, bridges)):
            replica = make(emulator, redis, fanout)
            nginx_cleanup.append(replica)
            started.append(replica)
    nginx = Nginx({"backend": [s.port for s in backends], "bridge": [b.port for b in bridges]})
    nginx_cleanup.append(nginx)

    def consumer(name: str, key: str) -> dict[str, Any]:
        return {"url": nginx.url(name) + "/internal/secrets/refresh", "auth": "hmac", "hmacSecret": key,
                "maxCacheSeconds": CACHE_SECONDS, "acknowledges": "service" if fanout else "instance"}

    catalog = {"consumers": {"backend": consumer("backend", "backend-refresh-hmac-key"),
                             "bridge": consumer("bridge", "bridge-refresh-hmac-key")},
               "secrets": {name: ["backend", "bridge"] for name in SECRETS}}
    container = Container(make_settings(seeded, azurite, consumers=catalog, grace_period_hours=0.5 / 3600,
                                        jwt_max_token_lifetime_seconds=JWT_OVERLAP_SECONDS,
                                        ping_timeout_seconds=10.0, ping_attempts=5))
    replicas = [r.base_url for r in backends + bridges]

    # Read as the replicas read (a kept-alive connection): the yardstick's vault read is one of theirs.
    async with CachedSecretClient.from_vault_url(emulator.url, credential=AsyncStaticTokenCredential(),
                                                 verify_challenge_resource=False,
                                                 connection_verify=emulator.ca_path) as reader:
        load = LoadProcess(emulator, {"backend": nginx.url("backend"), "bridge": nginx.url("bridge")})
        nginx_cleanup.append(load)
        await asyncio.sleep(2)  # steady state before the first rotation
        stop_watch = asyncio.Event()
        seen = Convergence()
        commits: dict[str, asyncio.Queue[tuple[str, float]]] = {name: asyncio.Queue() for name in SECRETS}
        watchers = [asyncio.create_task(detect_commits(emulator, commits, stop_watch))]
        watchers += [asyncio.create_task(watch_convergence(http, replicas, name, commits[name], seen, stop_watch))
                     for name in SECRETS]
        ping_ms: list[float] = []
        read_ms: list[float] = []
        watchers.append(asyncio.create_task(
            sample_reference(http, nginx.url("backend"), reader, ping_ms, read_ms, stop_watch)))
        rotations = 0

        async def rotate(name: str, i: int) -> None:
            nonlocal rotations
            outcome = await container.engine.run(RotationRequest(VAULT, name, Trigger.HTTP, reason=f"e2e {i}"))
            assert outcome.status == "rotated", (name, outcome.reason)
            rotations += 1
            while True:
                done = await container.engine.complete_pending(VAULT, name)
                if done.state == "retired":
                    break
                await asyncio.sleep(0.25)

        async def rounds(names: list[str]) -> None:
            for i in range(ROUNDS):
                for name in names:
                    await rotate(name, i)

        busy = CpuBusy()
        try:
            if CONCURRENT:  # all four secrets at once, each through its rounds
                await asyncio.gather(*(rounds([name]) for name in SECRETS))
            else:  # one rotation after another, round-robin, as their schedules make them in production
                await rounds(SECRETS)
            busy.stop()
            await asyncio.sleep(1)  # requests in flight at the last retirement
        finally:
            busy.stop()
            stop_watch.set()
            await asyncio.gather(*watchers, return_exceptions=True)
            await container.aclose()
            await load.finish()
    cost = (await refresh_cost(f"redis://fanout:{channel_password}@{redis.host}:{redis.port}/0",
                               {"backend": backends, "bridge": bridges}, CALIBRATION_NOTICES) if fanout else {})

    ordered = sorted(seen.last)
    p50 = statistics.median(ordered) if ordered else float("nan")
    pmax = ordered[-1] if ordered else float("nan")
    bound = 1.5 * (statistics.median(ping_ms) + statistics.median(read_ms))
    met = "met" if pmax <= bound else ("p50 met, max not" if p50 <= bound else "not met")
    print(f"\n[{mode}] first failures: {load.failures[:5]}")
    print(f"[{mode}] reference under load: ping round trip p50 {statistics.median(ping_ms):.0f} ms, vault read p50 "
          f"{statistics.median(read_ms):.0f} ms; bound 1.5 x their sum = {bound:.0f} ms; convergence p50 {p50:.0f} "
          f"ms max {pmax:.0f} ms ({met}); first replica p50 "
          f"{statistics.median(seen.first) if seen.first else float('nan'):.0f} ms; seen by polling p50 "
          f"{statistics.median(seen.polled) if seen.polled else float('nan'):.0f} ms")
    print(f"[{mode}] load {RATE_PER_SERVICE:.0f} requests/s to each service (open loop); rotations "
          f"{'concurrent' if CONCURRENT else 'one after another'}; both cores {busy.percent():.0f}% busy meanwhile")
    for service, figures in cost.items():
        print(f"[{mode}] idle {service} replicas, one fan-out notice: {figures['cpu_ms']:.1f} ms of CPU each "
              f"(notice, Key Vault read, answer), all {REPLICAS} answered in {figures['round_ms']:.1f} ms p50")
    print(f"[{mode}] per replica p50 (backends, then bridges): "
          + ", ".join(f"{statistics.median(seen.per_replica[i]):.0f}" for i in sorted(seen.per_replica)) + " ms")
    print(f"[{mode}] convergence by secret: " + ", ".join(
        f"{name} {' / '.join(f'{v:.0f}' for v in seen.per_secret.get(name, []))}" for name in SECRETS) + " ms")
    print(f"e2e-consumers ({mode}): {load.total} requests, {len(load.failures)} failed, {rotations} rotations, "
          f"{REPLICAS} replicas per service, convergence p50 {p50:.0f} ms p max {pmax:.0f} ms")
    assert rotations == ROUNDS * len(SECRETS)
    assert load.failures == []
