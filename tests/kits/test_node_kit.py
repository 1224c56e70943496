"""The Node/Express kit (kits/node): its ``node --test`` suite on the project's real services.

pytest starts what the Node tests need, the Key Vault emulator (HTTPS, its CA
handed to Node with ``NODE_EXTRA_CA_CERTS``), PostgreSQL and Redis, then runs
``npm test`` (``tsc`` then ``node --test``) against them. ``scripts/bootstrap.sh``
installed the kit's dependencies with ``npm ci`` from its package-lock.json.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest

from kvemulator import KeyVaultEmulator
from shared.adapters.notifiers.http_ping import HttpPingNotifier
from shared.domain.model import SecretProperties, SecretVersion
from shared.domain.ports import Consumer, RotatedNotice, SecretReader
from tests.support.consumer_app import ConsumerApp, ConsumerServer, new_webhook_key
from tests.support.services import PostgresServer, RedisServer

KIT = Path(__file__).resolve().parents[2] / "kits" / "node"


def node_env(emulator: KeyVaultEmulator, postgres: PostgresServer, redis: RedisServer) -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "KV_URL": emulator.url,
        "NODE_EXTRA_CA_CERTS": emulator.ca_path,
        "PG_HOST": postgres.host,
        "PG_PORT": str(postgres.port),
        "PG_ADMIN_USER": postgres.superuser,
        "PG_ADMIN_PASSWORD": postgres.password,
        "REDIS_HOST": redis.host,
        "REDIS_PORT": str(redis.port),
        "REDIS_ADMIN_USER": redis.admin_user,
        "REDIS_ADMIN_PASSWORD": redis.admin_password,
    })
    return env


class _KeyReader(SecretReader):
    def __init__(self, key: str) -> None:
        self._key = key

    async def get(self, name: str, version: str | None = None) -> SecretVersion:
        return SecretVersion(properties=SecretProperties(name=name, version="k1"), value=self._key)


async def captured_ping(tmp_path: Path) -> Path:
    """A ping exactly as the rotation app's notifier sends it, for the npm ``standardwebhooks`` to verify."""
    key = new_webhook_key()

    async def read(name: str) -> tuple[str, str]:
        return "unused", "v2"

    app = ConsumerApp(read, secret_name="jwt-signing-key", hmac_key=key)
    notifier = HttpPingNotifier(hmac_keys=_KeyReader(key), attempts=1)
    notice = RotatedNotice(vault="kv-test", vault_url="https://kv-test.vault.azure.net", secret_name="jwt-signing-key",
                           version="v2", previous_version="v1", rotation_id="rot-from-python",
                           rotated_at=datetime.now(UTC), expires_on=None, trigger="near-expiry")
    with ConsumerServer(app) as server:
        [result] = await notifier.ping_all(notice, [Consumer("bridge", server.url, "hmac", hmac_secret="k")])
        await notifier.close()
        await server.astop()
    assert result.ok, result
    [ping] = app.pings
    path = tmp_path / "ping.json"
    path.write_text(json.dumps({"key": key, "headers": ping.headers, "body": ping.raw_body.decode()}))
    return path


def test_node_kit_suite_passes_on_the_emulator_and_real_postgres_and_redis(
    emulator: KeyVaultEmulator, postgres_server: PostgresServer, redis_server: RedisServer, tmp_path: Path
) -> None:
    """Includes verifying a real ping of the Python notifier with the npm standardwebhooks package."""
    ping_file = asyncio.run(captured_ping(tmp_path))
    npm = shutil.which("npm")
    if npm is None or not (KIT / "node_modules").is_dir():
        pytest.fail("kits/node dependencies are missing: run scripts/bootstrap.sh (npm ci)")
    result = subprocess.run(
        [npm, "test", "--silent"], cwd=KIT, env={**node_env(emulator, postgres_server, redis_server),
                                                 "PYTHON_NOTIFIER_PING": str(ping_file)},
        capture_output=True, text=True, timeout=300, check=False,
    )
    summary = [line for line in result.stdout.splitlines() if line.startswith(("# ", "not ok"))]
    print("\n".join(summary))
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
