"""The Node/Express kit (kits/node): its ``node --test`` suite on the project's real services.

pytest starts what the Node tests need, the Key Vault emulator (HTTPS, its CA
handed to Node with ``NODE_EXTRA_CA_CERTS``), PostgreSQL and Redis, then runs
``npm test`` (``tsc`` then ``node --test``) against them. ``scripts/bootstrap.sh``
installed the kit's dependencies with ``npm ci`` from its package-lock.json.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from kvemulator import KeyVaultEmulator
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


def test_node_kit_suite_passes_on_the_emulator_and_real_postgres_and_redis(
    emulator: KeyVaultEmulator, postgres_server: PostgresServer, redis_server: RedisServer
) -> None:
    npm = shutil.which("npm")
    if npm is None or not (KIT / "node_modules").is_dir():
        pytest.fail("kits/node dependencies are missing: run scripts/bootstrap.sh (npm ci)")
    result = subprocess.run(
        [npm, "test", "--silent"], cwd=KIT, env=node_env(emulator, postgres_server, redis_server),
        capture_output=True, text=True, timeout=300, check=False,
    )
    summary = [line for line in result.stdout.splitlines() if line.startswith(("# ", "not ok"))]
    print("\n".join(summary))
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
