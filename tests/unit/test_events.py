"""Parsing Key Vault events defensively, in both schemas."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from shared.engine import Trigger
from shared.errors import InvalidRequest, VaultNotAllowed
from shared.events import parse_event
from shared.settings import Settings

SAMPLES = Path(__file__).parent.parent / "samples"
SETTINGS = Settings(allowed_vaults=("kv-local",))


def sample(kind: str) -> dict[str, Any]:
    return json.loads((SAMPLES / f"secret-near-expiry.{kind}.json").read_text())


@pytest.mark.parametrize("kind", ["eventgrid", "cloudevents"])
def test_near_expiry_event_in_either_schema_becomes_a_request(kind: str) -> None:
    parsed = parse_event(sample(kind), SETTINGS)
    assert parsed.request is not None
    assert parsed.request.vault == "kv-local"
    assert parsed.request.secret_name == "jwt-signing-key"
    assert parsed.request.event_version == "0" * 32
    assert parsed.request.trigger == Trigger.NEAR_EXPIRY


def test_expired_event_is_handled_and_other_types_are_ignored() -> None:
    raw = sample("eventgrid")
    raw["eventType"] = "Microsoft.KeyVault.SecretExpired"
    assert parse_event(raw, SETTINGS).request.trigger == Trigger.EXPIRED  # type: ignore[union-attr]
    raw["eventType"] = "Microsoft.KeyVault.SecretNewVersionCreated"
    assert parse_event(raw, SETTINGS).request is None


def test_vault_off_the_allow_list_is_refused() -> None:
    raw = sample("eventgrid")
    raw["data"]["VaultName"] = "kv-evil"
    raw["topic"] = raw["topic"].replace("kv-local", "kv-evil")
    with pytest.raises(VaultNotAllowed):
        parse_event(raw, SETTINGS)


def test_the_id_url_in_the_event_is_never_used() -> None:
    raw = sample("eventgrid")
    raw["data"]["Id"] = "https://attacker.example/secrets/jwt-signing-key/" + "0" * 32
    parsed = parse_event(raw, SETTINGS)
    assert parsed.request is not None and parsed.request.vault == "kv-local"


def _mutations() -> list[tuple[str, Any]]:
    return [
        ("data", None), ("data", "text"), ("data.ObjectType", "Key"), ("data.ObjectName", "../etc"),
        ("data.ObjectName", "a" * 128), ("data.ObjectName", "sécret"), ("data.Version", "latest"),
        ("data.Version", 42), ("data.VaultName", None), ("subject", "other-secret"),
        ("topic", "/subscriptions/x/providers/Microsoft.KeyVault/vaults/other"), ("eventType", None),
        ("id", None), ("data.VaultName", "a;drop"),
    ]


@pytest.mark.parametrize(("path", "value"), _mutations())
def test_malformed_event_is_a_clear_invalid_request(path: str, value: Any) -> None:
    raw = copy.deepcopy(sample("eventgrid"))
    target = raw
    parts = path.split(".")
    for part in parts[:-1]:
        target = target[part]
    target[parts[-1]] = value
    with pytest.raises(InvalidRequest):
        parse_event(raw, SETTINGS)
