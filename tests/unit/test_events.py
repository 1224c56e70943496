"""Parsing Key Vault events: liberal where the meaning is clear, strict where it is not."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from shared.config.settings import Settings
from shared.domain.errors import InvalidRequest, TransientError, UnclearEvent, VaultNotAllowed
from shared.domain.record import Trigger
from shared.service.events import parse_event

SAMPLES = Path(__file__).parent.parent / "samples"
SETTINGS = Settings(allowed_vaults=("kv-local",))
DOCS_VERSION = "ee059b2bb5bc48398a53b168c6cdcb10"


def sample(kind: str) -> dict[str, Any]:
    raw: dict[str, Any] | list[dict[str, Any]] = json.loads((SAMPLES / f"secret-near-expiry.{kind}.json").read_text())
    return raw[0] if isinstance(raw, list) else raw  # Event Grid delivers arrays; the worker hands us one event


def mutate(raw: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    target = raw
    parts = path.split(".")
    for part in parts[:-1]:
        target = target[part]
    target[parts[-1]] = value
    return raw


@pytest.mark.parametrize("kind", ["eventgrid", "cloudevents"])
def test_near_expiry_event_in_either_schema_becomes_a_request(kind: str) -> None:
    parsed = parse_event(sample(kind), SETTINGS)
    assert parsed.request is not None and not parsed.flaws
    assert parsed.request.vault == "kv-local"
    assert parsed.request.secret_name == "jwt-signing-key"
    assert parsed.request.event_version == "0" * 32
    assert parsed.request.trigger == Trigger.NEAR_EXPIRY
    assert parsed.request.event_expires_on == datetime.fromtimestamp(1764000000, UTC)


@pytest.mark.parametrize("kind", ["docs-eventgrid", "docs-cloudevents", "camelcase.cloudevents"])
def test_microsofts_published_shapes_are_read_without_flaws(kind: str) -> None:
    """Microsoft's sample has "ObjectName " (trailing space), " ee05…" (leading space) and
    NBF/EXP as strings; SDK models spell the keys in camelCase with numbers. Same meaning."""
    parsed = parse_event(sample(kind), SETTINGS)
    assert parsed.request is not None, parsed
    assert parsed.flaws == ()
    assert (parsed.request.vault, parsed.request.secret_name) == ("kv-local", "jwt-signing-key")
    assert parsed.request.event_version == DOCS_VERSION
    assert parsed.request.event_expires_on == datetime.fromtimestamp(1559082102, UTC)


def test_expired_event_is_handled_and_other_types_are_ignored() -> None:
    raw = sample("eventgrid")
    raw["eventType"] = "Microsoft.KeyVault.SecretExpired"
    expired = parse_event(raw, SETTINGS).request
    assert expired is not None and expired.trigger == Trigger.EXPIRED
    raw["eventType"] = " microsoft.keyvault.SECRETNEAREXPIRY "
    near_expiry = parse_event(raw, SETTINGS).request
    assert near_expiry is not None and near_expiry.trigger == Trigger.NEAR_EXPIRY
    for ignored in ("Microsoft.KeyVault.SecretNewVersionCreated", "Microsoft.KeyVault.KeyNearExpiry",
                    "Microsoft.KeyVault.CertificateNearExpiry", "Microsoft.Storage.BlobCreated"):
        raw["eventType"] = ignored
        assert parse_event(raw, SETTINGS).request is None


def test_vault_off_the_allow_list_is_refused() -> None:
    raw = sample("eventgrid")
    raw["data"]["VaultName"] = "kv-evil"
    raw["topic"] = raw["topic"].replace("kv-local", "kv-evil")
    with pytest.raises(VaultNotAllowed):
        parse_event(raw, SETTINGS)


def test_the_id_url_in_the_event_is_never_used() -> None:
    raw = sample("eventgrid")
    raw["data"]["Id"] = "https://attacker.example/secrets/other-secret/" + "f" * 32
    parsed = parse_event(raw, SETTINGS)
    assert parsed.request is not None and parsed.request.vault == "kv-local"
    assert parsed.request.secret_name == "jwt-signing-key" and parsed.request.event_version == "0" * 32


# --------------------------------------------------------------- liberal where clear

@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("data.NBF", 1559081980), ("data.NBF", "1559081980"), ("data.NBF", " 1559081980 "),
        ("data.EXP", 1764000000.0), ("data.EXP", "1764000000"), ("data.EXP", None),
        ("data.VaultName", " KV-Local "), ("data.ObjectName", " JWT-Signing-Key"), ("data.ObjectType", "secret "),
        ("data.Version", " " + "0" * 32 + "\t"), ("subject", " jwt-signing-key "), ("subject", "JWT-SIGNING-KEY"),
        ("subject", "jwt-signing-key/" + "0" * 32), ("subject", "/secrets/jwt-signing-key"),
        ("topic", "/subscriptions/x/resourceGroups/rg/providers/microsoft.keyvault/vaults/KV-LOCAL/"),
    ],
)
def test_unambiguous_variations_are_accepted_as_is(path: str, value: Any) -> None:
    raw = mutate(copy.deepcopy(sample("eventgrid")), path, value)
    parsed = parse_event(raw, SETTINGS)
    assert parsed.request is not None and parsed.flaws == ()
    assert parsed.request.vault == "kv-local"
    assert parsed.request.secret_name.lower() == "jwt-signing-key"
    assert parsed.request.event_version == "0" * 32


def test_keys_match_whatever_their_casing_and_whitespace() -> None:
    raw = sample("eventgrid")
    raw["data"] = {f" {k.upper()} ": v for k, v in raw["data"].items()}
    raw = {(k.upper() if k != "data" else k): v for k, v in raw.items()}
    parsed = parse_event(raw, SETTINGS)
    assert parsed.request is not None and parsed.flaws == ()
    assert parsed.request.event_version == "0" * 32


def test_name_and_version_may_come_from_the_subject_alone() -> None:
    raw = sample("eventgrid")
    del raw["data"]["ObjectName"], raw["data"]["Version"]
    raw["subject"] = "jwt-signing-key/" + "A" * 32
    parsed = parse_event(raw, SETTINGS)
    assert parsed.request is not None and parsed.flaws == ()
    assert parsed.request.secret_name == "jwt-signing-key" and parsed.request.event_version == "a" * 32


def test_vault_may_come_from_the_topic_alone() -> None:
    raw = sample("cloudevents")
    del raw["data"]["VaultName"]
    parsed = parse_event(raw, SETTINGS)
    assert parsed.request is not None and parsed.request.vault == "kv-local" and parsed.flaws == ()


def test_either_schemas_field_names_are_read_when_unambiguous() -> None:
    raw = sample("eventgrid")
    raw["type"] = raw.pop("eventType")
    raw["source"] = raw.pop("topic")
    parsed = parse_event(raw, SETTINGS)
    assert parsed.request is not None and parsed.flaws == ()


# ---------------------------------------- flawed but clear: act on the vault's current state

@pytest.mark.parametrize(
    ("path", "value", "flaw"),
    [
        ("data.Version", "latest", "not a valid version"),
        ("data.Version", 42, "not a valid version"),
        ("data.Version", "0" * 32 + "\n", None),  # stripped: a stray newline is whitespace, not a new name
        ("data.Version", None, "names no version"),
        ("data.Version", "0" * 31, "not a valid version"),
        ("subject", "jwt-signing-key/" + "1" * 32, "name different versions"),
        ("data.ObjectType", "Key", "ObjectType is not Secret"),
        ("data", None, "names no version"),
        ("data", "not json", "not a JSON object"),
        ("data", ["VaultName", "kv-local"], "not a JSON object"),
    ],
)
def test_flawed_version_means_acting_on_the_vaults_current_state(path: str, value: Any, flaw: str | None) -> None:
    parsed = parse_event(mutate(copy.deepcopy(sample("eventgrid")), path, value), SETTINGS)
    assert parsed.request is not None
    assert parsed.request.secret_name == "jwt-signing-key"
    if flaw is None:
        assert parsed.request.event_version == "0" * 32 and not parsed.flaws
        return
    assert parsed.request.event_version is None, "no version: the engine decides on the vault's current state"
    assert any(flaw in f for f in parsed.flaws), parsed.flaws


def test_data_as_a_json_string_is_read() -> None:
    raw = sample("cloudevents")
    raw["data"] = json.dumps(raw["data"])
    parsed = parse_event(raw, SETTINGS)
    assert parsed.request is not None and parsed.request.event_version == "0" * 32 and not parsed.flaws


@pytest.mark.parametrize(
    ("path", "value", "flaw"),
    [
        ("id", None, "no valid id"), ("id", 12345, "no valid id"), ("id", "x" * 300, "no valid id"),
        ("data.EXP", "soon", "EXP is not a time"), ("data.EXP", True, "EXP is not a time"),
        ("data.EXP", -5, "EXP is not a time"), ("data.NBF", [1], "NBF is not a time"),
        ("data.EXP", "nan", "EXP is not a time"), ("data.EXP", 10**20, "EXP is not a time"),
    ],
)
def test_other_flaws_are_listed_and_the_event_is_taken_at_face_value(path: str, value: Any, flaw: str) -> None:
    parsed = parse_event(mutate(copy.deepcopy(sample("eventgrid")), path, value), SETTINGS)
    assert parsed.request is not None and parsed.request.event_version == "0" * 32
    assert any(flaw in f for f in parsed.flaws), parsed.flaws


# ------------------------------------------------------------- strict where unclear

@pytest.mark.parametrize(
    ("path", "value", "candidates"),
    [
        ("data.ObjectName", "../etc", {("kv-local", "jwt-signing-key")}),
        ("data.ObjectName", "a" * 128, {("kv-local", "jwt-signing-key")}),
        ("data.ObjectName", "sécret", {("kv-local", "jwt-signing-key")}),
        ("data.ObjectName", "jwt-signing-key\x00", {("kv-local", "jwt-signing-key")}),
        ("subject", "other-secret", {("kv-local", "jwt-signing-key"), ("kv-local", "other-secret")}),
        ("subject", "a/b/c/d", {("kv-local", "jwt-signing-key")}),
        ("topic", "/subscriptions/x/providers/Microsoft.KeyVault/vaults/other", {("kv-local", "jwt-signing-key")}),
        ("topic", "/subscriptions/x/providers/Microsoft.Storage/storageAccounts/kv", {("kv-local", "jwt-signing-key")}),
        ("data.VaultName", "a;drop", {("kv-local", "jwt-signing-key")}),
        ("data.VaultName", ["kv-local"], {("kv-local", "jwt-signing-key")}),
        ("eventType", None, {("kv-local", "jwt-signing-key")}),
        ("eventType", 7, {("kv-local", "jwt-signing-key")}),
    ],
)
def test_unclear_identity_is_an_unclear_event_naming_every_candidate(
        path: str, value: Any, candidates: set[tuple[str, str]]) -> None:
    with pytest.raises(UnclearEvent) as info:
        parse_event(mutate(copy.deepcopy(sample("eventgrid")), path, value), SETTINGS)
    assert set(info.value.candidates) == candidates
    assert isinstance(info.value, TransientError)


def test_two_spellings_of_one_key_with_different_values_are_unclear() -> None:
    raw = sample("eventgrid")
    raw["data"]["objectName"] = "other-secret"  # next to "ObjectName": "jwt-signing-key"
    with pytest.raises(UnclearEvent, match="twice"):
        parse_event(raw, SETTINGS)


def test_types_in_both_schemas_fields_that_disagree_are_unclear() -> None:
    raw = sample("eventgrid")
    raw["type"] = "Microsoft.KeyVault.SecretExpired"
    with pytest.raises(UnclearEvent):
        parse_event(raw, SETTINGS)


@pytest.mark.parametrize(
    "raw",
    [None, [], "Microsoft.KeyVault.SecretNearExpiry", 7],
)
def test_not_an_object_is_a_clear_invalid_request(raw: Any) -> None:
    with pytest.raises(InvalidRequest):
        parse_event(raw, SETTINGS)


def test_an_event_that_names_no_secret_is_a_clear_invalid_request() -> None:
    raw = sample("eventgrid")
    del raw["subject"], raw["data"]["ObjectName"]
    with pytest.raises(InvalidRequest, match="no valid secret"):
        parse_event(raw, SETTINGS)
    raw = sample("eventgrid")
    del raw["topic"], raw["data"]["VaultName"]
    with pytest.raises(InvalidRequest, match="no valid vault"):
        parse_event(raw, SETTINGS)


def test_unclear_event_limited_to_foreign_vaults_is_not_ours() -> None:
    raw = sample("eventgrid")
    raw["data"]["VaultName"] = "kv-evil"
    raw["topic"] = raw["topic"].replace("kv-local", "kv-evil")
    raw["subject"] = "other-secret"
    with pytest.raises(VaultNotAllowed):
        parse_event(raw, SETTINGS)
