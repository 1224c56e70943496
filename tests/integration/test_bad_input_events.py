"""Bad input at the Event Grid entry point (issue 7 corpus, Event Grid half).

Every case gets a clear answer (acknowledged: rejected or ignored or skipped),
none is an unhandled exception, and none writes to the vault or takes a lease.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from functions.event_grid import handle_event
from kvemulator import KeyVaultEmulator
from shared.container import Container
from tests.integration.test_vertical_slice import near_expiry_event

Mutation = Callable[[dict[str, Any]], Any]


def _set(path: str, value: Any) -> Mutation:
    def mutate(raw: dict[str, Any]) -> Any:
        target = raw
        parts = path.split(".")
        for part in parts[:-1]:
            target = target[part]
        target[parts[-1]] = value
        return raw
    return mutate


def _drop(path: str) -> Mutation:
    def mutate(raw: dict[str, Any]) -> Any:
        target = raw
        parts = path.split(".")
        for part in parts[:-1]:
            target = target[part]
        del target[parts[-1]]
        return raw
    return mutate


def _to_cloudevents_with_eventgrid_keys(raw: dict[str, Any]) -> Any:
    raw["specversion"] = "1.0"  # CloudEvents marker, but Event Grid field names
    return raw


def _eventgrid_with_cloudevents_type(raw: dict[str, Any]) -> Any:
    raw["type"] = raw.pop("eventType")
    return raw


CASES: dict[str, Mutation] = {
    "event-is-a-list": lambda raw: [raw],
    "event-is-a-string": lambda raw: "Microsoft.KeyVault.SecretNearExpiry",
    "event-is-null": lambda raw: None,
    "missing-id": _drop("id"),
    "id-not-a-string": _set("id", 12345),
    "id-oversized": _set("id", "x" * 300),
    "missing-event-type": _drop("eventType"),
    "event-type-is-a-number": _set("eventType", 7),
    "unknown-event-type-is-ignored": _set("eventType", "Microsoft.Storage.BlobCreated"),
    "key-event-type-is-ignored": _set("eventType", "Microsoft.KeyVault.KeyNearExpiry"),
    "cloudevents-marker-with-eventgrid-fields": _to_cloudevents_with_eventgrid_keys,
    "eventgrid-schema-with-cloudevents-type-field": _eventgrid_with_cloudevents_type,
    "data-missing": _drop("data"),
    "data-is-a-list": _set("data", ["VaultName", "kv-test"]),
    "data-is-a-string": _set("data", '{"VaultName": "kv-test"}'),
    "object-type-key": _set("data.ObjectType", "Key"),
    "object-type-missing": _drop("data.ObjectType"),
    "vault-name-missing": _drop("data.VaultName"),
    "vault-name-wrong-type": _set("data.VaultName", ["kv-test"]),
    "vault-name-with-semicolon": _set("data.VaultName", "kv-test;drop"),
    "vault-not-on-allow-list": lambda raw: _set("topic", raw["topic"].replace("kv-test", "kv-other"))(
        _set("data.VaultName", "kv-other")(raw)),
    "secret-name-path-traversal": _set("data.ObjectName", "../../secrets/admin"),
    "secret-name-url-encoded": _set("data.ObjectName", "jwt%2Fsigning"),
    "secret-name-unicode": _set("data.ObjectName", "jwt-signing-kéy"),
    "secret-name-homoglyph": _set("data.ObjectName", "jwt-signing-k\u0435y"),
    "secret-name-null-byte": _set("data.ObjectName", "jwt-signing-key\x00"),
    "secret-name-too-long": _set("data.ObjectName", "a" * 128),
    "version-latest": _set("data.Version", "latest"),
    "version-too-short": _set("data.Version", "abc123"),
    "version-null": _set("data.Version", None),
    "subject-mismatch": _set("subject", "another-secret"),
    "topic-from-another-vault": _set("topic", "/subscriptions/x/providers/Microsoft.KeyVault/vaults/kv-evil"),
    "id-url-pointing-elsewhere-with-old-version": _set("data.Version", "f" * 32),
}


@pytest.mark.parametrize("case", sorted(CASES))
async def test_bad_event_gets_a_clear_answer_and_writes_nothing(
        case: str, emulator: KeyVaultEmulator, container: Container) -> None:
    emulator.put("jwt-signing-key", "bad-input-initial-key-0123456789abcdef")
    raw = near_expiry_event("jwt-signing-key", str(emulator.latest("jwt-signing-key")["version"]))
    event = CASES[case](copy.deepcopy(raw))
    emulator.reset_counters()
    result = await handle_event(event, container)
    assert result.acknowledged
    assert result.status in {"rejected", "ignored", "skipped"}, result
    assert result.reason
    assert emulator.count(method="PUT") == 0 and emulator.count(method="PATCH") == 0
    assert len(emulator.versions("jwt-signing-key")) == 1


async def test_replay_of_an_old_event_after_rotation_writes_nothing(
        emulator: KeyVaultEmulator, container: Container) -> None:
    emulator.put("jwt-signing-key", "bad-input-initial-key-0123456789abcdef")
    event = near_expiry_event("jwt-signing-key", str(emulator.latest("jwt-signing-key")["version"]))
    assert (await handle_event(event, container)).status == "rotated"
    emulator.reset_counters()
    replay = await handle_event(copy.deepcopy(event), container)
    assert replay.status == "skipped" and "duplicate" in replay.reason
    assert emulator.count(method="PUT") == 0 and emulator.count(method="PATCH") == 0


async def test_event_for_a_deleted_secret_is_acknowledged(emulator: KeyVaultEmulator, container: Container) -> None:
    result = await handle_event(near_expiry_event("session-encryption-key", "a" * 32), container)
    assert result.acknowledged and result.status == "rejected" and "no managed secret" in result.reason
