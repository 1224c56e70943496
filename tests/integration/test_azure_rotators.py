"""Key-slot (Azure OpenAI / Foundry, Azure Redis) and Entra client-secret rotations, end to end.

The engine runs with the real ARM SDKs and azure-core's pipeline against the
local doubles over HTTPS (azuredoubles/), the vault is the emulator, the
Redis behind the Azure Redis double is a real redis-server.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest

from azuredoubles import AzureDoubles
from kvemulator import KeyVaultEmulator
from shared.bootstrap import Container
from shared.config.operator_file import OperatorConfig
from shared.domain.errors import ConfigurationError, DownstreamError, PolicyError, VerificationFailed
from shared.domain.record import RotationRequest, Trigger
from tests.conftest import VAULT, make_settings
from tests.support import operator_files
from tests.support.azure_targets import (
    cognitive_works,
    entra_works,
    redis_key_works,
    settings_overrides,
    setup_azure_redis,
    setup_cognitive,
    setup_entra,
)
from tests.support.emulator import latest_of
from tests.support.services import RedisServer


@pytest.fixture
async def app(emulator: KeyVaultEmulator, azurite: Any, doubles: AzureDoubles) -> AsyncIterator[Container]:
    container = Container(make_settings(emulator, azurite, grace_period_hours=0.0, **settings_overrides(doubles)))
    try:
        yield container
    finally:
        await container.aclose()


def http(secret: str) -> RotationRequest:
    return RotationRequest(VAULT, secret, Trigger.HTTP)


def latest(emu: KeyVaultEmulator, secret: str) -> tuple[str, dict[str, str]]:
    version = emu.latest(secret)
    assert version is not None
    return str(version["value"]), dict(version.get("tags") or {})


@pytest.mark.parametrize("secret", ["azure-openai-api-key", "foundry-api-key"])
async def test_openai_key_rotation_regenerates_only_the_idle_slot_and_records_it(
        secret: str, emulator: KeyVaultEmulator, doubles: AzureDoubles, app: Container) -> None:
    account = setup_cognitive(emulator, doubles, secret=secret, target=f"t-{secret}")
    first = account.key1

    outcome = await app.engine.run(http(secret))

    value, tags = latest(emulator, secret)
    assert outcome.status == "rotated"
    assert value == account.key2 and account.key1 == first, "Key2 regenerated, Key1 (in use) untouched"
    assert tags["rotator-slot"] == "Key2" and tags["rotated-state"] == "retired"
    assert cognitive_works(account, first), "retirement leaves the previous slot valid until the next rotation"
    assert doubles.count("/openai/models") == 1, "the new key was proven on the data plane"

    await app.engine.run(http(secret))
    value2, tags2 = latest(emulator, secret)
    assert tags2["rotator-slot"] == "Key1" and value2 == account.key1 != first
    assert not cognitive_works(account, first) and cognitive_works(account, value)


@pytest.mark.parametrize("managed", [False, True], ids=["azure-cache-for-redis", "azure-managed-redis"])
async def test_azure_redis_access_key_rotation_auths_on_the_real_redis(
        managed: bool, emulator: KeyVaultEmulator, doubles: AzureDoubles, app: Container,
        redis_server_fresh: RedisServer) -> None:
    cache = setup_azure_redis(emulator, doubles, redis_server_fresh, managed=managed)
    first = cache.primary

    await app.engine.run(http("redis-password"))

    value, tags = latest(emulator, "redis-password")
    assert tags["rotator-slot"] == "Secondary" and value == cache.secondary
    assert redis_key_works(redis_server_fresh, value) and redis_key_works(redis_server_fresh, first)
    await app.engine.run(http("redis-password"))
    value2, tags2 = latest(emulator, "redis-password")
    assert tags2["rotator-slot"] == "Primary"
    assert redis_key_works(redis_server_fresh, value2) and not redis_key_works(redis_server_fresh, first)


async def test_entra_secret_is_added_with_the_version_expiry_verified_and_the_previous_removed_at_retirement(
        emulator: KeyVaultEmulator, azurite: Any, doubles: AzureDoubles) -> None:
    entra = setup_entra(emulator, doubles)
    first = latest(emulator, "api-gateway-client-secret")[0]
    # A long grace period: retirement must wait, and the previous password with it.
    waiting = Container(make_settings(emulator, azurite, grace_period_hours=24.0, **settings_overrides(doubles)))
    try:
        outcome = await waiting.engine.run(http("api-gateway-client-secret"))
    finally:
        await waiting.aclose()
    value, tags = latest(emulator, "api-gateway-client-secret")
    assert outcome.state == "notified"
    assert entra_works(entra, value) and entra_works(entra, first), "both valid during the overlap"
    added = next(p for p in entra.passwords if p["keyId"] == tags["rotator-key-id"])
    expiry = datetime.fromtimestamp(latest_of(emulator, "api-gateway-client-secret")["attributes"]["exp"], UTC)
    assert added["endDateTime"] == expiry.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert doubles.count("/removePassword") == 0, "nothing removed before retirement"
    assert doubles.count("/oauth2/v2.0/token") == 1, "the new secret was proven with a token request"

    done = Container(make_settings(emulator, azurite, grace_period_hours=0.0, **settings_overrides(doubles)))
    try:
        await done.engine.complete_pending(VAULT, "api-gateway-client-secret")
    finally:
        await done.aclose()
    assert latest(emulator, "api-gateway-client-secret")[1]["rotated-state"] == "retired"
    assert [p["keyId"] for p in entra.passwords] == [tags["rotator-key-id"]]
    assert not entra_works(entra, first)


# ------------------------------------------------------------------ bad input


async def test_a_refused_new_key_commits_nothing_and_leaves_the_served_key_working(
        emulator: KeyVaultEmulator, doubles: AzureDoubles, app: Container) -> None:
    account = setup_cognitive(emulator, doubles)
    doubles.fail_next("/openai/models", 401)
    with pytest.raises(VerificationFailed):
        await app.engine.run(http("azure-openai-api-key"))
    assert len(emulator.versions("azure-openai-api-key")) == 1
    assert cognitive_works(account, latest(emulator, "azure-openai-api-key")[0])


async def test_arm_refusing_the_regenerate_is_a_downstream_error_and_nothing_is_committed(
        emulator: KeyVaultEmulator, doubles: AzureDoubles, app: Container) -> None:
    setup_cognitive(emulator, doubles)
    doubles.fail_next("/regenerateKey", 403)
    with pytest.raises(DownstreamError) as caught:
        await app.engine.run(http("azure-openai-api-key"))
    assert "HTTP 403" in caught.value.message
    assert len(emulator.versions("azure-openai-api-key")) == 1


async def test_an_entra_secret_refused_by_the_token_endpoint_is_not_committed(
        emulator: KeyVaultEmulator, doubles: AzureDoubles, app: Container) -> None:
    entra = setup_entra(emulator, doubles, verify_timeout=1)
    doubles.fail_next("/oauth2/v2.0/token", 401)  # a 1-second verify timeout: one refusal ends it
    with pytest.raises(VerificationFailed):
        await app.engine.run(http("api-gateway-client-secret"))
    assert len(emulator.versions("api-gateway-client-secret")) == 1
    # The redelivery removes the abandoned password before adding a new one: no orphan stays valid.
    await app.engine.run(http("api-gateway-client-secret"))
    value, tags = latest(emulator, "api-gateway-client-secret")
    assert [p["keyId"] for p in entra.passwords] == [tags["rotator-key-id"]] and entra_works(entra, value)


async def test_a_forged_record_tag_cannot_make_retirement_remove_the_credential_in_force(
        emulator: KeyVaultEmulator, azurite: Any, doubles: AzureDoubles) -> None:
    entra = setup_entra(emulator, doubles)
    waiting = Container(make_settings(emulator, azurite, grace_period_hours=24.0, **settings_overrides(doubles)))
    try:
        await waiting.engine.run(http("api-gateway-client-secret"))
    finally:
        await waiting.aclose()
    version = latest_of(emulator, "api-gateway-client-secret")
    value, tags = str(version["value"]), dict(version["tags"])
    # Someone who may write tags points the record at nothing real: the credential in force survives.
    emulator.update("api-gateway-client-secret", str(version["version"]),
                    tags={**tags, "rotator-key-id": "00000000-0000-0000-0000-000000000000"})
    done = Container(make_settings(emulator, azurite, grace_period_hours=0.0, **settings_overrides(doubles)))
    try:
        await done.engine.complete_pending(VAULT, "api-gateway-client-secret")
    finally:
        await done.aclose()
    assert entra_works(entra, value)
    assert len(entra.passwords) == 1


def test_the_operator_file_refuses_a_target_of_the_wrong_kind_or_a_non_https_endpoint() -> None:
    base = {"version": 1, "targets": {"oai": {"kind": "cognitive-services", "subscriptionId":
            "6d0b3c1e-7f52-4a8e-9b31-0c5e2f7a9d10", "resourceGroup": "rg", "account": "a",
            "endpoint": "https://a.openai.azure.com"}}, "secrets": {}}
    ok = OperatorConfig.from_mapping({**base, "secrets": {"k": {"rotator": "key-slot", "target": "oai",
                                                                "intervalDays": 90}}})
    assert ok.target("oai").kind == "cognitive-services"
    with pytest.raises(ConfigurationError, match=r"secrets\.k\.target: oai is a cognitive-services target"):
        OperatorConfig.from_mapping({**base, "secrets": {"k": {"rotator": "entra-client-secret", "target": "oai",
                                                               "intervalDays": 90}}})
    for endpoint in ("http://a.openai.azure.com", "https://a.openai.azure.com/path", "https://u@evil.example"):
        bad = json.loads(json.dumps(base))
        bad["targets"]["oai"]["endpoint"] = endpoint
        with pytest.raises(ConfigurationError, match=r"targets\.oai\.endpoint"):
            OperatorConfig.from_mapping(bad)
    with pytest.raises(ConfigurationError, match=r"targets\.oai\.subscriptionId"):
        bad = json.loads(json.dumps(base))
        bad["targets"]["oai"]["subscriptionId"] = "../../providers/x"
        OperatorConfig.from_mapping(bad)
    with pytest.raises(ConfigurationError, match=r"secrets\.m\.generator"):
        OperatorConfig.from_mapping({**base, "secrets": {"m": {"rotator": "manual", "generator": "key-slot"}}})


async def test_a_secret_with_too_many_tags_for_the_record_is_refused_before_anything_happens(
        emulator: KeyVaultEmulator, doubles: AzureDoubles, app: Container) -> None:
    setup_cognitive(emulator, doubles)
    value = str(latest_of(emulator, "azure-openai-api-key")["value"])
    emulator.put("azure-openai-api-key", value, tags={f"team-{i}": "x" for i in range(9)})
    with pytest.raises(PolicyError, match="needs 7"):
        await app.engine.run(http("azure-openai-api-key"))
    assert doubles.count("/regenerateKey") == 0


def test_the_shipped_file_parses_with_its_azure_targets_unset() -> None:
    shipped = OperatorConfig.load(None, {})
    assert {t for t in shipped.targets} >= {"azure-openai", "foundry", "api-gateway-app"}
    with pytest.raises(ConfigurationError, match="ROTATION_AZURE_OPENAI_ENDPOINT"):
        shipped.target("azure-openai")
    assert operator_files.base_config()["secrets"]["openai-api-key"] == {"rotator": "manual"}


async def test_an_unconfigured_shipped_target_fails_only_the_rotation_naming_its_settings(
        emulator: KeyVaultEmulator, doubles: AzureDoubles, app: Container) -> None:
    """The shipped azure-openai target's app settings are unset: status and plan still work, a rotation says
    which settings are missing and touches nothing."""
    emulator.put("azure-openai-api-key", "an-unconfigured-key-0123456789abcdef")
    plan = await app.engine.run(RotationRequest(VAULT, "azure-openai-api-key", Trigger.HTTP, dry_run=True))
    assert plan.status == "planned"
    with pytest.raises(ConfigurationError, match="ROTATION_AZURE_OPENAI_ENDPOINT"):
        await app.engine.run(http("azure-openai-api-key"))
    assert len(emulator.versions("azure-openai-api-key")) == 1 and not doubles.requests


async def test_emergency_kills_the_previous_key_slot_and_entra_password_at_once(
        emulator: KeyVaultEmulator, azurite: Any, doubles: AzureDoubles) -> None:
    """Leak response: even with a day of grace left, the previous credential stops working now."""
    account = setup_cognitive(emulator, doubles)
    entra = setup_entra(emulator, doubles)
    leaked = {name: latest(emulator, name)[0] for name in ("azure-openai-api-key", "api-gateway-client-secret")}
    slow = Container(make_settings(emulator, azurite, grace_period_hours=24.0, **settings_overrides(doubles)))
    try:
        for name in leaked:
            await slow.engine.run(RotationRequest(VAULT, name, Trigger.EMERGENCY, reason="key leaked"))
    finally:
        await slow.aclose()
    new_key, new_secret = (latest(emulator, name)[0] for name in leaked)
    assert cognitive_works(account, new_key) and not cognitive_works(account, leaked["azure-openai-api-key"])
    assert entra_works(entra, new_secret) and not entra_works(entra, leaked["api-gateway-client-secret"])
