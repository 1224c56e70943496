"""The event rules that depend on the vault's current state, and HMAC keys in several vaults.

On the real emulator (PATCH through the real SDK) and through the registered
functions: an event for the current version whose expiry was extended after
Key Vault raised it is skipped with the reason; names and versions compare
case-insensitively; with several allowed vaults and no default vault, a
consumer's HMAC key is read from the vault it names.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import azure.functions as func
import pytest

from functions.event_grid import handle_event, rotate_on_event
from functions.http_api import handle_rotate
from kvemulator import KeyVaultEmulator
from shared.bootstrap import Container, set_container
from tests.conftest import VAULT, make_settings
from tests.integration.test_bad_input_events import worker_event
from tests.integration.test_vertical_slice import near_expiry_event
from tests.support.consumer_app import ConsumerApp, ConsumerServer, new_webhook_key
from tests.support.emulator import latest_of

NAME = "jwt-signing-key"


def seed(emu: KeyVaultEmulator, days_left: float = 10) -> tuple[str, datetime]:
    exp = (datetime.now(UTC) + timedelta(days=days_left)).replace(microsecond=0)
    emu.put(NAME, "rules-initial-key-0123456789abcdef", expires_on=exp)
    return str(latest_of(emu, NAME)["version"]), exp


def event(version: str, exp: datetime | None, **kw: Any) -> dict[str, Any]:
    raw = near_expiry_event(NAME, version, **kw)
    raw["data"]["EXP"] = int(exp.timestamp()) if exp is not None else None
    return raw


async def patch_expiry(emu: KeyVaultEmulator, version: str, expires_on: datetime | None) -> None:
    """A PATCH of the version's attributes through the real SDK, as an operator would do it."""
    client = emu.secret_client()
    await asyncio.to_thread(client.update_secret_properties, NAME, version, expires_on=expires_on)


# ---------------------------------------------------------------- extended expiry

async def test_an_event_for_a_version_whose_expiry_was_extended_is_skipped_with_the_reason(
        emulator: KeyVaultEmulator, container: Container) -> None:
    version, exp = seed(emulator)
    raised = event(version, exp)  # Key Vault raised it for the 10-day expiry ...
    extended = exp + timedelta(days=200)
    await patch_expiry(emulator, version, extended)  # ... then the operator extended the expiry
    emulator.reset_counters()
    assert await rotate_on_event(worker_event(raised)) is None  # acknowledged
    result = await handle_event(raised, container)
    assert result.status == "skipped"
    assert result.reason.startswith(f"expiry was extended from {exp.isoformat()} to {extended.isoformat()}")
    assert "not due until" in result.reason
    assert emulator.count(method="PUT") == 0 and emulator.count(method="PATCH") == 0
    assert len(emulator.versions(NAME)) == 1


@pytest.mark.parametrize("event_type", ["Microsoft.KeyVault.SecretNearExpiry", "Microsoft.KeyVault.SecretExpired"])
async def test_without_exp_in_the_event_the_vaults_expiry_alone_decides(
        event_type: str, emulator: KeyVaultEmulator, container: Container) -> None:
    version, exp = seed(emulator)
    await patch_expiry(emulator, version, exp + timedelta(days=365))
    result = await handle_event(event(version, None, event_type=event_type), container)
    assert result.status == "skipped" and result.reason.startswith("expiry was extended to ")
    assert len(emulator.versions(NAME)) == 1


async def test_an_extension_that_stays_inside_the_window_still_rotates_once(
        emulator: KeyVaultEmulator, container: Container) -> None:
    version, exp = seed(emulator)
    await patch_expiry(emulator, version, exp + timedelta(days=5))  # 15 days left: still due
    raised = event(version, exp)
    assert (await handle_event(raised, container)).status == "rotated"
    assert (await handle_event(raised, container)).status == "skipped"
    assert len(emulator.versions(NAME)) == 2


async def test_an_expiry_removed_after_the_event_still_rotates(
        emulator: KeyVaultEmulator, container: Container) -> None:
    """A managed secret without expiry is due: removing the expiry does not dodge the rotation."""
    version, exp = seed(emulator)
    emulator.update(NAME, version, expires_on=None)  # the SDK cannot clear an expiry (None means "unchanged")
    assert (await handle_event(event(version, exp), container)).status == "rotated"


async def test_an_event_that_arrives_at_the_edge_of_the_window_rotates(
        emulator: KeyVaultEmulator, container: Container) -> None:
    """Key Vault raises the event 30 days before expiry; clock skew must not turn it into a skip."""
    version, exp = seed(emulator, days_left=30 + 30 / (24 * 60))  # 30 days and 30 minutes left
    assert (await handle_event(event(version, exp), container)).status == "rotated"


# ---------------------------------------------------------------- case-insensitive

async def test_an_event_naming_the_secret_in_other_casing_rotates_once(
        emulator: KeyVaultEmulator, container: Container) -> None:
    version, exp = seed(emulator)
    shouted = near_expiry_event("JWT-Signing-Key", version.upper())
    shouted["data"]["EXP"] = int(exp.timestamp())
    quiet = event(version, exp)
    results = await asyncio.gather(handle_event(shouted, container), handle_event(quiet, container))
    assert sorted(r.status for r in results) == ["rotated", "skipped"]
    assert len(emulator.versions(NAME)) == 2


async def test_the_http_route_accepts_a_name_and_expected_version_in_other_casing(
        emulator: KeyVaultEmulator, container: Container) -> None:
    version, _ = seed(emulator)
    req = func.HttpRequest(
        method="POST", url="http://localhost:7071/api/secrets/JWT-SIGNING-KEY/rotate", headers={},
        route_params={"name": "JWT-SIGNING-KEY"}, params={},
        body=json.dumps({"expectedVersion": version.upper()}).encode(),
    )
    resp = await handle_rotate(req, container)
    assert resp.status_code == 200 and json.loads(resp.get_body())["status"] == "rotated"


async def test_a_version_in_upper_case_is_the_same_version(emulator: KeyVaultEmulator, container: Container) -> None:
    version, exp = seed(emulator)
    assert (await handle_event(event(version.upper(), exp), container)).status == "rotated"
    again = await handle_event(event(version.upper(), exp), container)
    assert again.status == "skipped" and "duplicate" in again.reason


# ---------------------------------------------------- HMAC keys in several vaults

@pytest.fixture
async def hmac_consumer(emulator: KeyVaultEmulator) -> AsyncIterator[tuple[ConsumerApp, ConsumerServer]]:
    hmac_key = new_webhook_key()  # Standard Webhooks key (whsec_...)
    emulator.put("consumer-hmac-key", hmac_key)
    client = emulator.secret_client()

    async def read(name: str) -> tuple[str, str]:
        secret = await asyncio.to_thread(client.get_secret, name)
        return secret.value or "", secret.properties.version or ""

    app = ConsumerApp(read, secret_name=NAME, hmac_key=hmac_key)
    with ConsumerServer(app) as server:
        yield app, server
        await server.astop()


async def test_with_several_vaults_and_no_default_the_hmac_key_is_read_from_the_vault_the_consumer_names(
        emulator: KeyVaultEmulator, azurite: Any, hmac_consumer: tuple[ConsumerApp, ConsumerServer]) -> None:
    """The shape of infra/main.prod.bicepparam: two vaults, no ROTATION_DEFAULT_VAULT."""
    app, server = hmac_consumer
    catalog = {"consumers": {"backend": {"url": server.url, "auth": "hmac", "hmacSecret": "consumer-hmac-key",
                                         "hmacVault": VAULT}},
               "secrets": {NAME: ["backend"]}}
    settings = make_settings(emulator, azurite, allowed_vaults=(VAULT, "kv-second"), default_vault=None,
                             consumers=catalog, ping_timeout_seconds=2.0, ping_attempts=2)
    container = Container(settings)
    set_container(container)
    try:
        version, exp = seed(emulator)
        assert await rotate_on_event(worker_event(event(version, exp))) is None
        new = latest_of(emulator, NAME)
        assert new["version"] != version
        assert app.pings and app.pings[-1].verified and app.pings[-1].auth == "hmac"
        assert new["tags"]["rotated-acks"] == "1/1" and "rotated-pending" not in new["tags"]
    finally:
        set_container(None)
        await container.aclose()
