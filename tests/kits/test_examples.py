"""The backend example (examples/backend) on real services, and the docs quoting it verbatim.

The example is what docs/consumers.md shows; this runs it against the Key
Vault emulator, PostgreSQL and Redis: a JWT-authenticated request touching
both, a missed rotation healed on the next request, and a real signed ping
from the rotation app's notifier answered with the re-read version while
tokens signed before the rotation keep working.
"""

from __future__ import annotations

import base64
import re
import secrets
import textwrap
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import psycopg
import pytest
from keyvault_rotation_kit import CachedSecretClient, JwtKeyRing
from psycopg import sql

from examples.backend.app import create_app
from kvemulator import KeyVaultEmulator
from shared.adapters.notifiers.http_ping import HttpPingNotifier
from shared.domain.model import SecretProperties, SecretVersion
from shared.domain.ports import Consumer, RotatedNotice, SecretReader
from tests.support import leakscan
from tests.support.consumer_app import ServerThread, new_webhook_key
from tests.support.services import PostgresServer, RedisServer, redis_command

ROOT = Path(__file__).resolve().parents[2]


def secret(value: str) -> str:
    leakscan.register([value])
    return value


class Reader(SecretReader):
    def __init__(self, client: CachedSecretClient) -> None:
        self._client = client

    async def get(self, name: str, version: str | None = None) -> SecretVersion:
        got = await self._client.get(name, use_cache=False)
        return SecretVersion(properties=SecretProperties(name=name, version=got.version), value=got.value)


@pytest.fixture
async def test_client(emulator: KeyVaultEmulator) -> AsyncIterator[CachedSecretClient]:
    async with CachedSecretClient(emulator.async_secret_client()) as client:
        yield client


async def test_backend_example_serves_through_a_missed_rotation_and_a_pinged_one(
    emulator: KeyVaultEmulator, postgres_server: PostgresServer, redis_server: RedisServer,
    test_client: CachedSecretClient,
) -> None:
    role, user = f"ex_{uuid.uuid4().hex[:8]}", f"ex-{uuid.uuid4().hex[:8]}"
    pg_old, pg_new, redis_pw = secret(secrets.token_urlsafe(18)), secret(secrets.token_urlsafe(18)), secret(
        secrets.token_urlsafe(18))
    with psycopg.connect(postgres_server.admin_dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(role), sql.Literal(pg_old)))
    redis_admin = redis_server.client()
    redis_command(redis_admin, "ACL", "SETUSER", user, "on", f">{redis_pw}", "~*", "+@all")
    emulator.put("database-connection-string", postgres_server.dsn(role, pg_old))
    emulator.put("redis-password", redis_pw)
    emulator.put("jwt-signing-key", secret(base64.urlsafe_b64encode(secrets.token_bytes(64)).decode().rstrip("=")))
    emulator.put("backend-refresh-hmac-key", new_webhook_key())
    emulator.put("session-encryption-key", secret(base64.b64encode(secrets.token_bytes(32)).decode()))

    app = create_app(lambda: CachedSecretClient(emulator.async_secret_client()), redis_host=redis_server.host,
                     redis_port=redis_server.port, redis_user=user)
    server = ServerThread(app, lifespan="on")
    server.start()
    notifier = HttpPingNotifier(hmac_keys=Reader(test_client), attempts=2, backoff_initial=0.01)
    bridge = JwtKeyRing(test_client, "jwt-signing-key")  # the bridge signs with the same key
    try:
        async with aiohttp.ClientSession() as http:
            async def get_items(token: str) -> tuple[int, Any]:
                async with http.get(server.base_url + "/api/items",
                                    headers={"Authorization": f"Bearer {token}"}) as response:
                    return response.status, await response.json()

            def claims() -> dict[str, Any]:
                return {"sub": "user-1", "exp": int(time.time()) + 600}

            before = await bridge.sign(claims())
            status, body = await get_items(before)
            assert status == 200 and body["user"] == "user-1"
            assert (await get_items("not-a-token"))[0] == 401

            # A PostgreSQL rotation whose ping this backend missed: the old password is retired.
            emulator.put("database-connection-string", postgres_server.dsn(role, pg_new))
            with psycopg.connect(postgres_server.admin_dsn, autocommit=True) as admin:
                admin.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(role), sql.Literal(pg_new)))
            assert (await get_items(before))[0] == 200

            # A JWT rotation, pinged: the backend re-reads and answers the new version.
            new_version = emulator.put(
                "jwt-signing-key", secret(base64.urlsafe_b64encode(secrets.token_bytes(64)).decode().rstrip("=")))[
                "version"]
            notice = RotatedNotice(vault="kv-test", vault_url=emulator.url, secret_name="jwt-signing-key",
                                   version=new_version, previous_version=None, rotation_id="rot-example",
                                   rotated_at=datetime.now(UTC), expires_on=None, trigger="manual")
            consumer = Consumer("backend", server.base_url + "/internal/secrets/refresh", "hmac",
                                hmac_secret="backend-refresh-hmac-key")
            [result] = await notifier.ping_all(notice, [consumer])
            assert (result.ok, result.acknowledged_version) == (True, new_version), result
            test_client.invalidate("jwt-signing-key")
            await bridge.reload()
            after = await bridge.sign(claims())
            assert (await get_items(after))[0] == 200  # new key
            assert (await get_items(before))[0] == 200  # issued before the rotation, previous key still enabled
    finally:
        await notifier.close()
        await server.astop()
        redis_command(redis_admin, "ACL", "DELUSER", user)
        redis_admin.close()


SNIPPET = re.compile(r"<!-- snippet: (?P<path>[\w./-]+)#(?P<name>[\w-]+) -->\n```\w*\n(?P<code>.*?)```", re.S)


def region(path: Path, name: str) -> str:
    text = path.read_text()
    start = re.search(rf"^.*(#|//) --8<-- \[start:{name}\]\n", text, re.M)
    end = re.search(rf"^.*(#|//) --8<-- \[end:{name}\]\n", text, re.M)
    assert start and end, f"{path}: no region {name}"
    return textwrap.dedent(text[start.end() : end.start()])


def test_docs_consumers_examples_are_the_tested_example_code_verbatim() -> None:
    doc = (ROOT / "docs" / "consumers.md").read_text()
    snippets = list(SNIPPET.finditer(doc))
    assert len(snippets) >= 3
    for match in snippets:
        expected = region(ROOT / match["path"], match["name"])
        assert match["code"] == expected, f"docs/consumers.md snippet {match['path']}#{match['name']} is stale"
