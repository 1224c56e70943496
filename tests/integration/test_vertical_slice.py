"""A near-expiry event rotates a secret end to end: Event Grid function ->
engine -> real Key Vault SDK over HTTPS to the emulator, lease in Azurite."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import azure.functions as func
import jwt
import pytest

from functions.event_grid import EventResult, handle_event, rotate_on_event
from kvemulator import KeyVaultEmulator
from shared.bootstrap import Container
from shared.domain.errors import VaultUnavailable
from shared.rotators.jwt_key import b64url_decode
from tests.conftest import VAULT, make_settings
from tests.support.emulator import latest_of

SAMPLES = Path(__file__).parent.parent / "samples"


def near_expiry_event(
    name: str,
    version: str,
    *,
    vault: str = VAULT,
    schema: str = "eventgrid",
    event_type: str = "Microsoft.KeyVault.SecretNearExpiry",
) -> dict[str, Any]:
    raw: dict[str, Any] = json.loads((SAMPLES / f"secret-near-expiry.{schema}.json").read_text())
    topic = (
        "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg/providers/"
        f"Microsoft.KeyVault/vaults/{vault}"
    )
    raw["subject"] = name
    raw["data"].update(
        {
            "VaultName": vault,
            "ObjectName": name,
            "Version": version,
            "Id": f"https://{vault}.vault.azure.net/secrets/{name}/{version}",
        }
    )
    if schema == "eventgrid":
        raw["topic"] = topic
        raw["eventType"] = event_type
    else:
        raw["source"] = topic
        raw["type"] = event_type
    return raw


def seed_jwt(emu: KeyVaultEmulator, days_left: int = 10) -> str:
    props = emu.put(
        "jwt-signing-key",
        "initial-signing-key-value-0123456789",
        expires_on=datetime.now(UTC) + timedelta(days=days_left),
    )
    return str(props["version"]) if isinstance(props, dict) else latest_of(emu, "jwt-signing-key")["version"]


def latest_version(emu: KeyVaultEmulator, name: str) -> str:
    return str(latest_of(emu, name)["version"])


async def test_near_expiry_event_produces_a_new_verified_jwt_version(
    emulator: KeyVaultEmulator, container: Container
) -> None:
    old = seed_jwt(emulator)
    before = datetime.now(UTC)
    result = await handle_event(near_expiry_event("jwt-signing-key", old), container)
    assert result.status == "rotated"
    versions = emulator.versions("jwt-signing-key")
    assert len(versions) == 2
    new = versions[-1]
    key = b64url_decode(new["value"])
    assert len(key) * 8 >= 256
    token = jwt.encode({"sub": "x"}, key, algorithm="HS256")
    assert jwt.decode(token, key, algorithms=["HS256"])["sub"] == "x"
    # exp = now + 30 days interval + 30 days lead
    exp = datetime.fromtimestamp(new["attributes"]["exp"], UTC)
    assert before + timedelta(days=60) - timedelta(seconds=5) <= exp <= datetime.now(UTC) + timedelta(days=60)
    assert new["tags"]["rotated-from"] == old and new["tags"]["rotated-by"] == "jwt"
    assert all(new["value"] not in v for v in new["tags"].values())
    assert new["contentType"]
    # the previous key stays enabled for the token-lifetime overlap
    assert versions[0]["attributes"]["enabled"] is True


async def test_duplicate_event_makes_no_second_version(emulator: KeyVaultEmulator, container: Container) -> None:
    old = seed_jwt(emulator)
    event = near_expiry_event("jwt-signing-key", old)
    assert (await handle_event(event, container)).status == "rotated"
    again = await handle_event(event, container)
    assert again.status == "skipped" and "duplicate" in again.reason
    assert len(emulator.versions("jwt-signing-key")) == 2


async def test_ten_concurrent_deliveries_make_exactly_one_version(
    emulator: KeyVaultEmulator, container: Container
) -> None:
    old = seed_jwt(emulator)
    event = near_expiry_event("jwt-signing-key", old)
    results = await asyncio.gather(*(handle_event(event, container) for _ in range(10)))
    assert len(emulator.versions("jwt-signing-key")) == 2
    assert sorted(r.status for r in results).count("rotated") == 1


async def test_event_for_a_foreign_vault_writes_nothing(emulator: KeyVaultEmulator, container: Container) -> None:
    old = seed_jwt(emulator)
    emulator.reset_counters()
    result = await handle_event(near_expiry_event("jwt-signing-key", old, vault="kv-foreign"), container)
    assert result == EventResult(True, "rejected", "event is for a vault that is not on the allow-list")
    assert emulator.count() == 0
    assert len(emulator.versions("jwt-signing-key")) == 1


async def test_event_for_an_unmanaged_secret_writes_nothing(emulator: KeyVaultEmulator, container: Container) -> None:
    emulator.put("someone-elses-secret", "a-value-nobody-manages-here")
    version = latest_version(emulator, "someone-elses-secret")
    result = await handle_event(near_expiry_event("someone-elses-secret", version), container)
    assert result.acknowledged and result.status == "rejected"
    assert len(emulator.versions("someone-elses-secret")) == 1


async def test_manual_only_secret_event_is_acknowledged_without_rotation(
    emulator: KeyVaultEmulator, container: Container
) -> None:
    emulator.put("openai-api-key", "sk-manual-only-value-123456")
    result = await handle_event(
        near_expiry_event("openai-api-key", latest_version(emulator, "openai-api-key")), container
    )
    assert result.status == "rejected" and "by hand" in result.reason
    assert len(emulator.versions("openai-api-key")) == 1


async def test_cloudevents_schema_is_accepted(emulator: KeyVaultEmulator, container: Container) -> None:
    old = seed_jwt(emulator)
    result = await handle_event(near_expiry_event("jwt-signing-key", old, schema="cloudevents"), container)
    assert result.status == "rotated"


async def test_other_event_types_are_ignored(emulator: KeyVaultEmulator, container: Container) -> None:
    old = seed_jwt(emulator)
    result = await handle_event(
        near_expiry_event("jwt-signing-key", old, event_type="Microsoft.KeyVault.SecretNewVersionCreated"), container
    )
    assert result.status == "ignored"
    assert len(emulator.versions("jwt-signing-key")) == 1


async def test_vault_throttling_is_retried_honouring_retry_after(
    emulator: KeyVaultEmulator, container: Container
) -> None:
    old = seed_jwt(emulator)
    emulator.faults.add(status=429, retry_after=1, times=2)
    result = await handle_event(near_expiry_event("jwt-signing-key", old), container)
    assert result.status == "rotated"


async def test_vault_failing_beyond_retries_raises_so_event_grid_redelivers(
    emulator: KeyVaultEmulator, azurite: Any
) -> None:
    old = seed_jwt(emulator)
    c = Container(make_settings(emulator, azurite, vault_max_retries=1))
    try:
        emulator.faults.add(status=503, times=None)
        with pytest.raises(VaultUnavailable):
            await handle_event(near_expiry_event("jwt-signing-key", old), c)
        emulator.faults.clear()
        assert (await handle_event(near_expiry_event("jwt-signing-key", old), c)).status == "rotated"
    finally:
        await c.aclose()
    assert len(emulator.versions("jwt-signing-key")) == 2


async def test_the_decorated_function_rotates_from_a_worker_event(
    emulator: KeyVaultEmulator, container: Container
) -> None:
    old = seed_jwt(emulator)
    raw = near_expiry_event("jwt-signing-key", old)
    event = func.EventGridEvent(
        id=raw["id"],
        data=raw["data"],
        topic=raw["topic"],
        subject=raw["subject"],
        event_type=raw["eventType"],
        event_time=None,
        data_version="1",
    )
    assert await rotate_on_event(event) is None
    assert len(emulator.versions("jwt-signing-key")) == 2


def test_indexed_function_has_an_event_grid_trigger_binding() -> None:
    import importlib

    import function_app

    app = importlib.reload(function_app).app  # get_functions() works once per app object
    functions = {f.get_function_name(): f for f in app.get_functions()}
    bindings = json.loads(functions["rotate_on_event"].get_function_json())["bindings"]
    assert [b["type"] for b in bindings] == ["eventGridTrigger"]
    assert bindings[0]["direction"] == "IN" and bindings[0]["name"] == "event"


async def test_the_vault_client_keeps_its_connection_alive_with_a_private_ca_bundle(
    emulator: KeyVaultEmulator, container: Container
) -> None:
    """With ``ROTATION_VAULT_CA_BUNDLE`` set, azure-core would build an SSL context per request and aiohttp pools
    connections per context: each vault call would open a new TLS connection. The container shares one."""
    emulator.put("session-encryption-key", "v1")
    before = emulator.open_connections
    store = container.store(VAULT)
    for _ in range(5):
        assert (await store.get("session-encryption-key")).value == "v1"
    assert emulator.open_connections - before == 1
