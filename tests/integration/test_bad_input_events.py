"""Bad and odd input at the Event Grid entry point, with the outcome each one must get.

The corpus holds the shapes Microsoft's documentation and real deliveries
show (stray whitespace in keys and values, NBF/EXP as strings, camelCase
keys, the other schema's field names), broken and hostile variants, and
mix-ups. Every case states its outcome:

* ``rotated``: the secret rotates exactly once (a redelivery is a duplicate);
* ``skipped``: acknowledged with the reason given, nothing written;
* ``retried``: the function raises, so Event Grid retries and finally
  dead-letters it, nothing written;
* ``rejected`` / ``ignored``: acknowledged, nothing written — only for events
  that name no managed secret.

No case may acknowledge-and-drop an event that names a managed secret: a
flawed but clear event is acted on (the vault's current state decides), an
unclear one is retried. Each case runs through the registered function
``rotate_on_event`` with the event decoded by the Functions worker's own
converter, as the host delivers it, against the real emulator and Azurite.

The provider-generated credentials (a key slot of an Azure OpenAI account or
an Azure Cache for Redis, an Entra client secret) get a representative slice
of the corpus against the doubles (azuredoubles/): a rotated case reaches the
provider exactly once (one idle slot regenerated, one password added) and
its redelivery not at all; every other outcome makes no provider call.
"""

from __future__ import annotations

import base64
import copy
import json
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import azure.functions as func
import pytest
from azure.functions import meta
from azure.functions.eventgrid import EventGridEventInConverter

from azuredoubles import AzureDoubles
from functions.event_grid import handle_event, rotate_on_event
from kvemulator import KeyVaultEmulator
from shared.bootstrap import Container, set_container
from shared.config.settings import Settings
from shared.domain.errors import ConfigurationError, RotationError, TransientError, UnclearEvent
from tests.conftest import VAULT, make_settings
from tests.integration.test_vertical_slice import near_expiry_event
from tests.support.azure_targets import (
    cognitive_call_works,
    entra_token_works,
    redis_key_works,
    settings_overrides,
    setup_azure_redis,
    setup_cognitive,
    setup_entra,
)
from tests.support.emulator import latest_of
from tests.support.services import RedisServer

SAMPLES = Path(__file__).parent.parent / "samples"
NAME = "jwt-signing-key"

Mutation = Callable[[dict[str, Any]], Any]


@dataclass(frozen=True)
class Expect:
    outcome: str  # rotated | skipped | retried | rejected | ignored
    reason: str = ""  # a substring of the reason (skipped, rejected)


ROTATED = Expect("rotated")
RETRIED = Expect("retried")
IGNORED = Expect("ignored")


def _set(path: str, value: Any) -> Mutation:
    def mutate(raw: dict[str, Any]) -> Any:
        target = raw
        parts = path.split(".")
        for part in parts[:-1]:
            target = target[part]
        target[parts[-1]] = value
        return raw
    return mutate


def _drop(*paths: str) -> Mutation:
    def mutate(raw: dict[str, Any]) -> Any:
        for path in paths:
            target = raw
            parts = path.split(".")
            for part in parts[:-1]:
                target = target[part]
            del target[parts[-1]]
        return raw
    return mutate


def _chain(*mutations: Mutation) -> Mutation:
    def mutate(raw: dict[str, Any]) -> Any:
        for m in mutations:
            raw = m(raw)
        return raw
    return mutate


def _docs_shape(raw: dict[str, Any]) -> Any:
    """Microsoft's published Key Vault sample: "ObjectName " with a trailing space, " <version>"
    with a leading one, NBF/EXP as strings, the data's Id URL."""
    data = raw["data"]
    raw["data"] = {
        "Id": data["Id"], "VaultName": data["VaultName"], "ObjectType": "Secret",
        "ObjectName ": data["ObjectName"], "Version": " " + data["Version"],
        "NBF": "1559081980", "EXP": str(data["EXP"]),
    }
    return raw


def _camel_case(raw: dict[str, Any]) -> Any:
    """Keys as the Event Grid SDK models spell them, times as numbers."""
    raw["data"] = {k[0].lower() + k[1:]: v for k, v in raw["data"].items()}
    return raw


def _shouting_keys(raw: dict[str, Any]) -> Any:
    raw["data"] = {f" {k.upper()}\t": v for k, v in raw["data"].items()}
    return raw


def _cloudevents_marker_with_eventgrid_fields(raw: dict[str, Any]) -> Any:
    raw["specversion"] = "1.0"  # the worker decodes a CloudEvent with eventType/topic as extension attributes
    return raw


def _eventgrid_with_cloudevents_type(raw: dict[str, Any]) -> Any:
    raw["type"] = raw.pop("eventType")  # the worker reads no type at all
    return raw


def _cloudevents_with_data_base64(raw: dict[str, Any]) -> Any:
    """CloudEvents may carry binary data as data_base64 instead of data: no data object to read."""
    data = raw.pop("data")
    return {"specversion": "1.0", "id": raw["id"], "source": raw["topic"], "subject": raw["subject"],
            "type": raw["eventType"], "data_base64": base64.b64encode(json.dumps(data).encode()).decode()}


def _extra_fields(raw: dict[str, Any]) -> Any:
    """Microsoft: ignore fields you don't understand, new features may add them."""
    raw["dataVersion"] = "2"
    raw["metadataVersion"] = "7"
    raw["data"]["RecoveryLevel"] = "Recoverable+Purgeable"
    raw["future"] = {"nested": [1, 2]}
    return raw


def _subject_only(raw: dict[str, Any]) -> Any:
    raw["subject"] = f"{raw['data']['ObjectName']}/{raw['data']['Version']}"
    del raw["data"]["ObjectName"], raw["data"]["Version"]
    return raw


def _foreign_vault(raw: dict[str, Any]) -> Any:
    raw["topic"] = raw["topic"].replace(VAULT, "kv-other")
    raw["data"]["VaultName"] = "kv-other"
    return raw


CASES: dict[str, tuple[Mutation, Expect]] = {
    # ------------------------------------------------ Microsoft's shapes: liberal, rotated once
    "docs-sample-shape": (_docs_shape, ROTATED),
    "sdk-camel-case-keys": (_camel_case, ROTATED),
    "keys-upper-case-with-whitespace": (_shouting_keys, ROTATED),
    "exp-as-a-string": (lambda raw: _set("data.EXP", str(raw["data"]["EXP"]))(raw), ROTATED),
    "nbf-as-a-string-with-spaces": (_set("data.NBF", " 1559081980 "), ROTATED),
    "exp-null": (_set("data.EXP", None), ROTATED),
    "exp-garbage": (_set("data.EXP", "next tuesday"), ROTATED),
    "version-upper-case": (lambda raw: _set("data.Version", raw["data"]["Version"].upper())(raw), ROTATED),
    "version-with-trailing-newline": (lambda raw: _set("data.Version", raw["data"]["Version"] + "\n")(raw), ROTATED),
    "vault-name-upper-case": (_set("data.VaultName", VAULT.upper()), ROTATED),
    "event-type-odd-casing": (_set("eventType", " microsoft.keyvault.SECRETNEAREXPIRY "), ROTATED),
    "secret-expired-event": (_set("eventType", "Microsoft.KeyVault.SecretExpired"), ROTATED),
    "name-and-version-from-subject-only": (_subject_only, ROTATED),
    "vault-name-missing-taken-from-topic": (_drop("data.VaultName"), ROTATED),
    "object-type-missing": (_drop("data.ObjectType"), ROTATED),
    "unknown-fields-are-ignored": (_extra_fields, ROTATED),
    "cloudevents-with-data-base64": (_cloudevents_with_data_base64, ROTATED),
    "missing-id": (_drop("id"), ROTATED),
    "id-not-a-string": (_set("id", 12345), ROTATED),
    "id-oversized": (_set("id", "x" * 300), ROTATED),
    "cloudevents-marker-with-eventgrid-fields": (_cloudevents_marker_with_eventgrid_fields, ROTATED),
    # ----------------------- flawed version or contradictory: acted on, on the vault's current state
    "version-latest": (_set("data.Version", "latest"), ROTATED),
    "version-too-short": (_set("data.Version", "abc123"), ROTATED),
    "version-null": (_set("data.Version", None), ROTATED),
    "version-a-number": (_set("data.Version", 42), ROTATED),
    "subject-names-another-version": (_set("subject", f"{NAME}/{'1' * 32}"), ROTATED),
    "object-type-key": (_set("data.ObjectType", "Key"), ROTATED),
    "data-missing": (_drop("data"), ROTATED),
    "data-is-a-list": (_set("data", ["VaultName", VAULT]), ROTATED),
    "data-is-not-json": (_set("data", "VaultName=kv-test"), ROTATED),
    # ------------------------------------------------------------- skipped, with the reason
    "version-of-an-older-version": (_set("data.Version", "f" * 32), Expect("skipped", "duplicate")),
    # ------------------------------------------- unclear about a managed secret: retried
    "subject-names-another-secret": (_set("subject", "another-secret"), RETRIED),
    "subject-unreadable": (_set("subject", "a/b/c/d"), RETRIED),
    "two-spellings-of-object-name-disagree": (_set("data.objectName", "another-secret"), RETRIED),
    "topic-from-another-vault": (_set("topic", "/subscriptions/x/providers/Microsoft.KeyVault/vaults/kv-evil"),
                                 RETRIED),
    "topic-not-a-key-vault": (_set("topic", "/subscriptions/x/providers/Microsoft.Storage/storageAccounts/st"),
                              RETRIED),
    "vault-name-with-semicolon": (_set("data.VaultName", f"{VAULT};drop"), RETRIED),
    "vault-name-wrong-type": (_set("data.VaultName", [VAULT]), RETRIED),
    "secret-name-path-traversal": (_set("data.ObjectName", "../../secrets/admin"), RETRIED),
    "secret-name-url-encoded": (_set("data.ObjectName", "jwt%2Fsigning"), RETRIED),
    "secret-name-unicode": (_set("data.ObjectName", "jwt-signing-kéy"), RETRIED),
    "secret-name-homoglyph": (_set("data.ObjectName", "jwt-signing-k\u0435y"), RETRIED),
    "secret-name-null-byte": (_set("data.ObjectName", "jwt-signing-key\x00"), RETRIED),
    "secret-name-too-long": (_set("data.ObjectName", "a" * 128), RETRIED),
    "missing-event-type": (_drop("eventType"), RETRIED),
    "event-type-is-a-number": (_set("eventType", 7), RETRIED),
    "eventgrid-schema-with-cloudevents-type-field": (_eventgrid_with_cloudevents_type, RETRIED),
    # ------------------------------------------------- names no managed secret: acknowledged
    "unknown-event-type-is-ignored": (_set("eventType", "Microsoft.Storage.BlobCreated"), IGNORED),
    "key-event-type-is-ignored": (_set("eventType", "Microsoft.KeyVault.KeyNearExpiry"), IGNORED),
    "new-version-event-is-ignored": (_set("eventType", "Microsoft.KeyVault.SecretNewVersionCreated"), IGNORED),
    "subscription-validation-event-is-ignored": (
        _chain(_set("eventType", "Microsoft.EventGrid.SubscriptionValidationEvent"),
               _set("data", {"validationCode": "512d38b6-c7b8-40c8-89fe-f46f9e9622b6"})), IGNORED),
    "vault-access-policy-changed-is-ignored": (_set("eventType", "Microsoft.KeyVault.VaultAccessPolicyChanged"),
                                               IGNORED),
    "vault-not-on-allow-list": (_foreign_vault, Expect("rejected", "allow-list")),
    "names-no-secret": (_drop("subject", "data.ObjectName"), Expect("rejected", "no valid secret")),
    "names-no-vault": (_drop("topic", "data.VaultName"), Expect("rejected", "no valid vault")),
    "unclear-between-unmanaged-secrets": (
        _chain(_set("subject", "someone-elses-secret"), _set("data.ObjectName", "another-secret")),
        Expect("rejected", "no managed secret"),
    ),
}


def worker_event(raw: Any) -> Any:
    """The event object the Functions worker builds from a delivery (its own converter)."""
    datum = meta.Datum(json.dumps(raw), "json")
    return EventGridEventInConverter.decode(datum, trigger_metadata=None)


def seed_due(emu: KeyVaultEmulator, days_left: int = 10) -> tuple[str, datetime]:
    exp = (datetime.now(UTC) + timedelta(days=days_left)).replace(microsecond=0)
    emu.put(NAME, "bad-input-initial-key-0123456789abcdef", expires_on=exp)
    return str(latest_of(emu, NAME)["version"]), exp


def event_for(version: str, exp: datetime, name: str = NAME) -> dict[str, Any]:
    raw = near_expiry_event(name, version)
    raw["data"]["EXP"] = int(exp.timestamp())
    return raw


@pytest.mark.parametrize("case", sorted(CASES))
async def test_each_event_in_the_corpus_gets_its_stated_outcome_through_the_registered_function(
        case: str, emulator: KeyVaultEmulator, container: Container, caplog: pytest.LogCaptureFixture) -> None:
    mutation, expect = CASES[case]
    version, exp = seed_due(emulator)
    event = worker_event(mutation(copy.deepcopy(event_for(version, exp))))
    emulator.reset_counters()
    caplog.set_level(logging.WARNING, logger="functions.event_grid")

    if expect.outcome == "retried":
        with pytest.raises(RotationError) as info:
            await rotate_on_event(event)
        assert isinstance(info.value, UnclearEvent)  # a TransientError: Event Grid redelivers it
        assert any(r.levelno == logging.WARNING and NAME in r.getMessage() and "retried" in r.getMessage()
                   for r in caplog.records), "a retried event is visible, naming the secret"
    else:
        assert await rotate_on_event(event) is None  # acknowledged

    writes = emulator.count(method="PUT") + emulator.count(method="PATCH")
    if expect.outcome == "rotated":
        assert len(emulator.versions(NAME)) == 2, "rotated"
        # ... exactly once: the same delivery again is a duplicate or not due any more.
        again = await handle_event(mutation(copy.deepcopy(event_for(version, exp))), container)
        assert again.status == "skipped", again
        assert len(emulator.versions(NAME)) == 2
        return
    assert writes == 0 and len(emulator.versions(NAME)) == 1
    if expect.outcome in {"rejected", "skipped", "ignored"}:
        result = await handle_event(mutation(copy.deepcopy(event_for(version, exp))), container)
        assert result.acknowledged and result.status == expect.outcome, result
        assert expect.reason in result.reason, result.reason
        assert len(emulator.versions(NAME)) == 1


@pytest.mark.parametrize("raw", [[{"id": "x"}], "Microsoft.KeyVault.SecretNearExpiry", None, 7])
async def test_an_event_that_is_not_an_object_is_rejected_and_writes_nothing(
        raw: Any, emulator: KeyVaultEmulator, container: Container) -> None:
    seed_due(emulator)
    emulator.reset_counters()
    result = await handle_event(raw, container)
    assert result.acknowledged and result.status == "rejected" and result.reason
    assert emulator.count(method="PUT") == 0 and emulator.count(method="PATCH") == 0


@pytest.mark.parametrize("sample", ["docs-eventgrid", "docs-cloudevents", "camelcase.cloudevents"])
async def test_microsofts_published_samples_rotate_once(
        sample: str, emulator: KeyVaultEmulator, container: Container) -> None:
    """The sample files as published (vault renamed, version set to the current one)."""
    version, exp = seed_due(emulator)
    text = (SAMPLES / f"secret-near-expiry.{sample}.json").read_text()
    text = text.replace("kv-local", VAULT).replace("ee059b2bb5bc48398a53b168c6cdcb10", version)
    text = text.replace("1559082102", str(int(exp.timestamp())))
    delivered = json.loads(text)
    raw = delivered[0] if isinstance(delivered, list) else delivered
    if "specversion" in raw:
        event: Any = func.CloudEvent(
            id=raw["id"], source=raw["source"], type=raw["type"], specversion=raw["specversion"], time=None,
            subject=raw["subject"], datacontenttype=raw.get("datacontenttype"), dataschema=None, data=raw["data"],
        )
    else:
        event = worker_event(raw)
    assert await rotate_on_event(event) is None
    assert len(emulator.versions(NAME)) == 2
    assert (await handle_event(raw, container)).status == "skipped"
    assert len(emulator.versions(NAME)) == 2


async def test_replay_of_an_old_event_after_rotation_writes_nothing(
        emulator: KeyVaultEmulator, container: Container) -> None:
    version, exp = seed_due(emulator)
    event = event_for(version, exp)
    assert (await handle_event(event, container)).status == "rotated"
    emulator.reset_counters()
    replay = await handle_event(copy.deepcopy(event), container)
    assert replay.status == "skipped" and "duplicate" in replay.reason
    assert emulator.count(method="PUT") == 0 and emulator.count(method="PATCH") == 0


async def test_event_for_a_deleted_secret_is_acknowledged(emulator: KeyVaultEmulator, container: Container) -> None:
    result = await handle_event(near_expiry_event("session-encryption-key", "a" * 32), container)
    assert result.acknowledged and result.status == "rejected" and "no managed secret" in result.reason


async def test_a_flawed_event_is_acted_on_with_a_warning_naming_the_secret_and_why(
        emulator: KeyVaultEmulator, container: Container, caplog: pytest.LogCaptureFixture) -> None:
    version, exp = seed_due(emulator)
    caplog.set_level(logging.WARNING, logger="functions.event_grid")
    result = await handle_event(_set("data.Version", "latest")(event_for(version, exp)), container)
    assert result.status == "rotated"
    [warning] = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert NAME in warning.getMessage() and "not a valid version" in warning.getMessage()
    assert "current state" in warning.getMessage()


async def test_flawed_event_after_the_rotation_is_skipped_as_not_due(
        emulator: KeyVaultEmulator, container: Container) -> None:
    """Without a usable version the vault's current state decides: the fresh version is not due
    (and its rotation is still in its overlap), so nothing is written."""
    version, exp = seed_due(emulator)
    assert (await handle_event(event_for(version, exp), container)).status == "rotated"
    result = await handle_event(_set("data.Version", None)(event_for(version, exp)), container)
    assert result.status == "skipped" and ("not due" in result.reason or "overlap" in result.reason)
    assert len(emulator.versions(NAME)) == 2


async def test_managed_secret_with_a_broken_policy_is_retried_not_dropped(
        emulator: KeyVaultEmulator, container: Container, caplog: pytest.LogCaptureFixture) -> None:
    exp = datetime.now(UTC) + timedelta(days=10)
    emulator.put("team-signing-key", "team-initial-key-0123456789abcdef", expires_on=exp,
                 tags={"rotation-policy": "random", "rotation-interval-days": "0"})
    version = str(latest_of(emulator, "team-signing-key")["version"])
    caplog.set_level(logging.WARNING, logger="functions.event_grid")
    event = worker_event(near_expiry_event("team-signing-key", version))
    with pytest.raises(RotationError):
        await rotate_on_event(event)
    assert len(emulator.versions("team-signing-key")) == 1
    assert any("team-signing-key" in r.getMessage() and "retried" in r.getMessage() for r in caplog.records)


async def test_an_unclear_event_is_retried_when_the_vault_cannot_say_whether_the_secret_is_managed(
        emulator: KeyVaultEmulator, container: Container) -> None:
    version, exp = seed_due(emulator)
    emulator.faults.add(status=503, times=None)
    try:
        with pytest.raises(RotationError) as info:
            await handle_event(_set("subject", "another-secret")(event_for(version, exp)), container)
        assert isinstance(info.value, TransientError)
    finally:
        emulator.faults.clear()
    assert len(emulator.versions(NAME)) == 1


class _EnvContainer(Container):
    """The process container as deployed: settings read from an environment on first use."""

    def __init__(self, env: dict[str, str]) -> None:
        super().__init__(None)
        self._env = env

    @property
    def settings(self) -> Settings:
        return Settings.from_env(self._env)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"ROTATION_ALLOWED_VAULTS": VAULT, "ROTATION_LEAD_DAYS": "10"},
         "ROTATION_LEAD_DAYS is 10 but must be at least 30"),
        ({"ROTATION_ALLOWED_VAULTS": f"{VAULT},kv-second",
          "ROTATION_CONSUMERS": json.dumps({"consumers": {"backend": {
              "url": "https://backend.internal/r", "auth": "hmac", "hmacSecret": "backend-key"}}})},
         "hmacVault is required"),
    ],
)
async def test_settings_that_cannot_work_refuse_to_start_and_the_event_is_retried_not_dropped(
        env: dict[str, str], message: str, emulator: KeyVaultEmulator, caplog: pytest.LogCaptureFixture) -> None:
    version, exp = seed_due(emulator)
    caplog.set_level(logging.WARNING, logger="functions.event_grid")
    with pytest.raises(ConfigurationError, match=message):
        await handle_event(event_for(version, exp), _EnvContainer(env))
    assert any("will be retried" in r.getMessage() and message in r.getMessage() for r in caplog.records)
    assert len(emulator.versions(NAME)) == 1


# One or more cases of every outcome, none of whose mutations names the JWT secret.
AZURE_CASES = ["docs-sample-shape", "sdk-camel-case-keys", "cloudevents-with-data-base64", "version-latest",
               "data-missing", "version-of-an-older-version", "subject-names-another-secret",
               "secret-name-homoglyph", "new-version-event-is-ignored", "vault-not-on-allow-list"]


@dataclass
class AzureSecret:
    name: str
    provider_writes: Callable[[], list[str]]  # slots regenerated / keyIds added, in order
    works: Callable[[str], bool]  # the value used as a consumer would: data-plane call, AUTH, token


@pytest.fixture
async def azure_container(emulator: KeyVaultEmulator, azurite: Any, doubles: AzureDoubles) -> AsyncIterator[Container]:
    """The process container, its ARM, Graph and login endpoints on the doubles."""
    c = Container(make_settings(emulator, azurite, **settings_overrides(doubles)))
    set_container(c)
    try:
        yield c
    finally:
        set_container(None)
        await c.aclose()


def seed_azure(kind: str, emu: KeyVaultEmulator, doubles: AzureDoubles, request: pytest.FixtureRequest,
               days_left: int = 10) -> tuple[AzureSecret, str, datetime]:
    if kind == "key-slot-openai":
        account = setup_cognitive(emu, doubles)
        secret = AzureSecret("azure-openai-api-key", lambda: list(account.regenerated),
                             lambda v: cognitive_call_works(account, doubles.ca_path, v))
    elif kind == "key-slot-azure-redis":
        server: RedisServer = request.getfixturevalue("redis_server_fresh")  # its `default` user follows the keys
        cache = setup_azure_redis(emu, doubles, server)
        secret = AzureSecret("redis-password", lambda: list(cache.regenerated), lambda v: redis_key_works(server, v))
    else:
        app = setup_entra(emu, doubles)
        secret = AzureSecret("api-gateway-client-secret", lambda: [k for op, k in app.history[1:] if op == "add"],
                             lambda v: entra_token_works(doubles, app, v))
    exp = (datetime.now(UTC) + timedelta(days=days_left)).replace(microsecond=0)
    emu.update(secret.name, expires_on=exp)
    return secret, str(latest_of(emu, secret.name)["version"]), exp


@pytest.mark.parametrize("case", AZURE_CASES)
@pytest.mark.parametrize("kind", ["key-slot-openai", "key-slot-azure-redis", "entra-client-secret"])
async def test_provider_generated_credentials_get_the_stated_outcome_and_reach_the_provider_at_most_once(
        kind: str, case: str, emulator: KeyVaultEmulator, doubles: AzureDoubles, azure_container: Container,
        request: pytest.FixtureRequest) -> None:
    mutation, expect = CASES[case]
    secret, version, exp = seed_azure(kind, emulator, doubles, request)
    first = str(latest_of(emulator, secret.name)["value"])
    doubles.requests.clear()
    event = worker_event(mutation(copy.deepcopy(event_for(version, exp, secret.name))))

    if expect.outcome == "retried":
        with pytest.raises(RotationError) as info:
            await rotate_on_event(event)
        assert isinstance(info.value, UnclearEvent)
    else:
        assert await rotate_on_event(event) is None  # acknowledged

    served = str(latest_of(emulator, secret.name)["value"])
    if expect.outcome == "rotated":
        assert len(emulator.versions(secret.name)) == 2, "rotated"
        assert len(secret.provider_writes()) == 1, "exactly one slot regenerated / password added"
        assert secret.works(served) and secret.works(first), "the new value works, the previous one still does"
        writes = secret.provider_writes()
        again = await handle_event(mutation(copy.deepcopy(event_for(version, exp, secret.name))), azure_container)
        assert again.status == "skipped", again
        assert secret.provider_writes() == writes and len(emulator.versions(secret.name)) == 2
        return
    assert served == first and len(emulator.versions(secret.name)) == 1
    assert doubles.requests == [], "an event that rotates nothing makes no provider call"
    if expect.outcome in {"rejected", "skipped", "ignored"}:
        result = await handle_event(mutation(copy.deepcopy(event_for(version, exp, secret.name))), azure_container)
        assert result.acknowledged and result.status == expect.outcome, result
        assert expect.reason in result.reason, result.reason
        assert doubles.requests == [] and len(emulator.versions(secret.name)) == 1
