"""The HTTP routes, driven as the worker drives them (func.HttpRequest in,
func.HttpResponse out), against the Key Vault emulator and Azurite."""

from __future__ import annotations

import base64
import copy
import dataclasses
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import azure.functions as func
import pytest
from azure.storage.blob import BlobServiceClient

from functions.http_api import (
    handle_plan,
    handle_rotate,
    handle_status,
    rotate_secret,
    rotation_plan,
    rotation_status,
)
from kvemulator import KeyVaultEmulator
from shared.bootstrap import Container, set_container
from shared.config.settings import Settings
from shared.domain.errors import DownstreamError
from shared.domain.model import NewSecret, RetireResult, SecretVersion
from shared.rotators.base import RotationContext, Rotator, RotatorDefaults
from tests.conftest import VAULT, make_settings
from tests.support import operator_files
from tests.support.emulator import latest_of

SAMPLES = Path(__file__).parent.parent / "samples"
KEY = "session-encryption-key"
INITIAL_VALUE = "initial-session-key-value-abcdefghijklmnop"


def sample(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((SAMPLES / name).read_text())
    return data


def principal_header(data: dict[str, Any]) -> str:
    return base64.b64encode(json.dumps(data).encode()).decode()


def request(method: str, route: str, *, name: str | None = None, body: bytes | dict[str, Any] | None = None,
            params: dict[str, str] | None = None, headers: dict[str, str] | None = None) -> func.HttpRequest:
    raw = json.dumps(body).encode() if isinstance(body, dict) else (body or b"")
    return func.HttpRequest(method=method, url=f"http://localhost:7071/api/{route}", headers=headers or {},
                            params=params or {}, route_params={"name": name} if name is not None else {}, body=raw)


def rotate(name: str, body: bytes | dict[str, Any] | None = None, **kw: Any) -> func.HttpRequest:
    return request("POST", f"secrets/{name}/rotate", name=name, body=body, **kw)


def status_req(name: str, **kw: Any) -> func.HttpRequest:
    return request("GET", f"secrets/{name}/rotation", name=name, **kw)


def read(resp: func.HttpResponse) -> dict[str, Any]:
    assert resp.mimetype == "application/json"
    data: dict[str, Any] = json.loads(resp.get_body())
    return data


def seed_key(emu: KeyVaultEmulator, days_left: int = 60, name: str = KEY,
             tags: dict[str, str] | None = None) -> str:
    props = emu.put(name, INITIAL_VALUE, expires_on=datetime.now(UTC) + timedelta(days=days_left), tags=tags)
    return str(props["version"])


def writes(emu: KeyVaultEmulator) -> int:
    return emu.count("PUT") + emu.count("PATCH") + emu.count("DELETE") + emu.count("POST")


def lease_blobs(settings: Settings) -> list[str]:
    assert settings.storage_connection_string
    service = BlobServiceClient.from_connection_string(settings.storage_connection_string)
    try:
        container = service.get_container_client(settings.lease_container)
        if not container.exists():
            return []
        return [b.name for b in container.list_blobs()]
    finally:
        service.close()


def assert_no_value(resp: func.HttpResponse, emu: KeyVaultEmulator) -> None:
    text = resp.get_body().decode()
    for name in emu.secret_names():
        for version in emu.versions(name):
            assert version["value"] not in text


@pytest.fixture
async def easy_auth_container(emulator: KeyVaultEmulator, azurite: Any) -> AsyncIterator[Container]:
    """The app as deployed behind App Service Authentication (the platform sets
    WEBSITE_AUTH_ENABLED=True), installed as the process container."""
    c = Container(make_settings(emulator, azurite, platform_auth_enabled=True))
    set_container(c)
    try:
        yield c
    finally:
        set_container(None)
        await c.aclose()


@pytest.fixture
async def slow_lease_container(emulator: KeyVaultEmulator, azurite: Any) -> AsyncIterator[Container]:
    c = Container(make_settings(emulator, azurite, lease_wait_seconds=0.3))
    try:
        yield c
    finally:
        await c.aclose()


# ------------------------------------------------------------------ rotate


async def test_rotate_writes_a_new_version_recording_reason_and_caller(emulator: KeyVaultEmulator,
                                                                      easy_auth_container: Container) -> None:
    old = seed_key(emulator)
    headers = {"x-ms-client-principal": principal_header(sample("client-principal.json"))}
    resp = await rotate_secret(rotate(KEY, sample("rotate-request.json"), headers=headers))
    assert resp.status_code == 200, resp.get_body()
    outcome = read(resp)
    assert outcome["status"] == "rotated" and outcome["previousVersion"] == old
    versions = emulator.versions(KEY)
    assert len(versions) == 2
    tags = versions[-1]["tags"]
    assert tags["rotated-reason"] == "quarterly rotation drill"
    assert tags["rotated-caller"] == "alice@contoso.example"
    assert tags["rotated-trigger"] == "http"
    assert outcome["version"] == versions[-1]["version"]
    assert_no_value(resp, emulator)


async def test_rotate_without_a_body_rotates_a_managed_secret_that_is_not_due(emulator: KeyVaultEmulator,
                                                                             container: Container) -> None:
    seed_key(emulator, days_left=300)
    resp = await handle_rotate(rotate(KEY), container)
    assert resp.status_code == 200 and read(resp)["status"] == "rotated"
    assert latest_of(emulator, KEY)["tags"]["rotated-caller"] == "function-key"


@pytest.mark.parametrize(("headers", "caller"), [
    ({"x-ms-client-principal-name": "bob@contoso.example"}, "bob@contoso.example"),
    ({"x-ms-client-principal": principal_header(
        {"auth_typ": "aad", "claims": [{"typ": "oid", "val": "11111111-2222-3333-4444-555555555555"}]})},
     "11111111-2222-3333-4444-555555555555"),
    ({"x-ms-client-principal": principal_header({"identityProvider": "aad", "userDetails": "carol@contoso.example",
                                                 "userRoles": ["authenticated"]})}, "carol@contoso.example"),
    ({"x-ms-client-principal": "not base64 json", "x-ms-client-principal-name": "dave@contoso.example"},
     "dave@contoso.example"),
    ({"x-ms-client-principal": principal_header({"claims": 5, "userDetails": 7}),
      "x-ms-client-principal-name": "erin@contoso.example"}, "erin@contoso.example"),
    ({}, "function-key"),
])
async def test_behind_app_service_authentication_the_recorded_caller_falls_back_from_principal_to_name_header(
        emulator: KeyVaultEmulator, easy_auth_container: Container, headers: dict[str, str], caller: str) -> None:
    seed_key(emulator)
    resp = await handle_rotate(rotate(KEY, headers=headers), easy_auth_container)
    assert resp.status_code == 200, resp.get_body()
    assert latest_of(emulator, KEY)["tags"]["rotated-caller"] == caller


FORGED_ADMIN = {"auth_typ": "aad", "userDetails": "ceo@contoso.example",
                "name_typ": "evil", "role_typ": "evil",
                "claims": [{"typ": "name", "val": "ceo@contoso.example"}, {"typ": "roles", "val": "Rotation.Operator"},
                           {"typ": "evil", "val": "Rotation.Operator"}]}


@pytest.mark.parametrize("headers", [
    {"x-ms-client-principal": principal_header(FORGED_ADMIN)},
    {"x-ms-client-principal-name": "ceo@contoso.example"},
    {"x-ms-client-principal": principal_header(FORGED_ADMIN), "x-ms-client-principal-name": "ceo@contoso.example"},
])
async def test_without_app_service_authentication_a_forged_principal_is_ignored_and_the_caller_is_the_function_key(
        emulator: KeyVaultEmulator, container: Container, headers: dict[str, str]) -> None:
    """Attack 7: a function-key holder forges x-ms-client-principal; with no
    platform authentication in front of the app nothing in it is believed."""
    assert container.settings.platform_auth_enabled is False
    seed_key(emulator)
    resp = await rotate_secret(rotate(KEY, headers=headers))
    assert resp.status_code == 200, resp.get_body()
    tags = latest_of(emulator, KEY)["tags"]
    assert tags["rotated-caller"] == "function-key"
    assert "ceo@contoso.example" not in json.dumps(tags)


async def test_dry_run_plans_without_writing_or_revealing_the_value(emulator: KeyVaultEmulator,
                                                                   container: Container) -> None:
    seed_key(emulator)
    emulator.reset_counters()
    resp = await handle_rotate(rotate(KEY, sample("rotate-dry-run.json")), container)
    assert resp.status_code == 200
    outcome = read(resp)
    assert outcome["status"] == "planned" and outcome["plan"]["wouldRotate"] is True
    assert outcome["plan"]["rotator"] == "random"
    assert writes(emulator) == 0
    assert len(emulator.versions(KEY)) == 1
    assert lease_blobs(container.settings) == []
    assert_no_value(resp, emulator)


async def test_expected_version_that_is_no_longer_current_skips_with_the_reason(emulator: KeyVaultEmulator,
                                                                              container: Container) -> None:
    old = seed_key(emulator)
    seed_key(emulator)  # someone rotated in between
    resp = await handle_rotate(rotate(KEY, {"expectedVersion": old.upper()}), container)
    assert resp.status_code == 200
    outcome = read(resp)
    assert outcome["status"] == "skipped" and "already rotated" in outcome["reason"]
    assert len(emulator.versions(KEY)) == 2


@pytest.mark.parametrize(("body", "fragment"), [
    (b"{not json", "not valid JSON"),
    (b"\xff\xfe", "not valid JSON"),
    (b"[1, 2]", "JSON object"),
    (b"null", "JSON object"),
    ({"dryrun": True}, "unknown fields: dryrun"),
    ({"force": "yes"}, "force must be a boolean"),
    ({"dryRun": 1}, "dryRun must be a boolean"),
    ({"vault": 7}, "vault must be a string"),
    ({"reason": ["x"]}, "reason must be a string"),
    ({"reason": "r" * 257}, "256"),
    ({"reason": "line\nbreak"}, "control characters"),
    ({"expectedVersion": "abc"}, "expectedVersion"),
    ({"expectedVersion": "g" * 32}, "expectedVersion"),
    ({"expectedVersion": "a" * 32 + "\n"}, "expectedVersion"),
    (json.dumps({"reason": "x" * 200, "pad": "y" * 4000}).encode(), "4096 bytes"),
])
async def test_malformed_bodies_are_refused_with_400_and_write_nothing(
        emulator: KeyVaultEmulator, container: Container, body: bytes | dict[str, Any], fragment: str) -> None:
    seed_key(emulator)
    emulator.reset_counters()
    resp = await handle_rotate(rotate(KEY, body), container)
    assert resp.status_code == 400
    error = read(resp)["error"]
    assert error["code"] == "InvalidRequest" and fragment in error["message"]
    assert emulator.count() == 0


async def test_a_body_of_exactly_4_kb_is_still_accepted(emulator: KeyVaultEmulator, container: Container) -> None:
    seed_key(emulator)
    body = json.dumps({"reason": "ok", "dryRun": True}).encode()
    body += b" " * (4096 - len(body))
    resp = await handle_rotate(rotate(KEY, body), container)
    assert resp.status_code == 200 and read(resp)["status"] == "planned"


@pytest.mark.parametrize("name", ["bad_name", "a" * 128, "", "dots.are.not.allowed", "new\nline", "../admin",
                                  "..%2Fadmin", "jwt-signing-k\u0435y", "sécret", "jwt-signing-key\x00", "a/b",
                                  "name with space"])
async def test_secret_names_outside_key_vaults_alphabet_are_refused_with_400(emulator: KeyVaultEmulator,
                                                                             container: Container, name: str) -> None:
    resp = await handle_rotate(rotate(name), container)
    assert resp.status_code == 400 and read(resp)["error"]["code"] == "InvalidRequest"
    assert emulator.count() == 0


async def test_a_vault_off_the_allow_list_is_refused_with_403(emulator: KeyVaultEmulator,
                                                              container: Container) -> None:
    seed_key(emulator)
    resp = await handle_rotate(rotate(KEY, {"vault": "kv-foreign"}), container)
    assert resp.status_code == 403 and read(resp)["error"]["code"] == "VaultNotAllowed"
    assert emulator.count() == 0


async def test_a_missing_secret_is_404_like_an_unmanaged_one(emulator: KeyVaultEmulator,
                                                            container: Container) -> None:
    emulator.put("plain-secret", "plain-secret-value-123456789")
    missing = await handle_rotate(rotate("does-not-exist"), container)
    unmanaged = await handle_rotate(rotate("plain-secret"), container)
    assert missing.status_code == unmanaged.status_code == 404
    assert read(missing)["error"]["code"] == read(unmanaged)["error"]["code"] == "NotManaged"
    assert read(missing)["error"]["message"].replace("does-not-exist", "X") == \
        read(unmanaged)["error"]["message"].replace("plain-secret", "X")


async def test_a_secret_without_a_policy_is_404_and_untouched(emulator: KeyVaultEmulator,
                                                             container: Container) -> None:
    emulator.put("someone-elses-secret", "unmanaged-value-123456789")
    resp = await handle_rotate(rotate("someone-elses-secret"), container)
    assert resp.status_code == 404 and read(resp)["error"]["code"] == "NotManaged"
    assert len(emulator.versions("someone-elses-secret")) == 1


async def test_a_manual_only_secret_without_force_is_409(emulator: KeyVaultEmulator, container: Container) -> None:
    emulator.put("openai-api-key", "sk-manual-only-value-123456")
    resp = await handle_rotate(rotate("openai-api-key", {"reason": "leaked?"}), container)
    assert resp.status_code == 409 and read(resp)["error"]["code"] == "ManualOnly"
    assert len(emulator.versions("openai-api-key")) == 1


@pytest.mark.parametrize("dry_run", [False, True])
async def test_forcing_a_manual_only_secret_without_a_rotator_is_409_and_writes_nothing(
        emulator: KeyVaultEmulator, container: Container, dry_run: bool) -> None:
    emulator.put("openai-api-key", "sk-manual-only-value-123456")
    resp = await handle_rotate(rotate("openai-api-key", {"force": True, "dryRun": dry_run}), container)
    assert len(emulator.versions("openai-api-key")) == 1
    assert resp.status_code == 409


async def test_forcing_a_manual_only_secret_that_names_a_generator_rotates_it_without_expiry(
        emulator: KeyVaultEmulator, container: Container) -> None:
    operator_files.declare(emulator, secrets={
        "encryption-master-key": {"rotator": "manual", "generator": "random", "options": {"length": "32"}}})
    emulator.put("encryption-master-key", "manual-master-key-0123456789abcdefghij")
    resp = await handle_rotate(rotate("encryption-master-key", {"force": True, "reason": "yearly ceremony"}), container)
    assert resp.status_code == 200 and read(resp)["status"] == "rotated"
    latest = latest_of(emulator, "encryption-master-key")
    assert latest["tags"]["rotated-by"] == "random" and latest["tags"]["rotated-reason"] == "yearly ceremony"
    assert latest["attributes"].get("exp") is None
    assert_no_value(resp, emulator)


async def test_a_rotation_already_holding_the_lease_answers_409(emulator: KeyVaultEmulator,
                                                                slow_lease_container: Container) -> None:
    seed_key(emulator)
    async with slow_lease_container.locker.hold(f"{VAULT}/{KEY}"):
        resp = await handle_rotate(rotate(KEY), slow_lease_container)
    assert resp.status_code == 409 and read(resp)["error"]["code"] == "RotationInProgress"
    assert len(emulator.versions(KEY)) == 1


async def test_key_vault_failing_beyond_retries_is_503_without_secret_material(emulator: KeyVaultEmulator,
                                                                             azurite: Any) -> None:
    seed_key(emulator)
    c = Container(make_settings(emulator, azurite, vault_max_retries=0))
    try:
        emulator.faults.add(status=503, times=None)
        resp = await handle_rotate(rotate(KEY), c)
    finally:
        emulator.faults.clear()
        await c.aclose()
    assert resp.status_code == 503
    assert read(resp)["error"]["code"] == "VaultUnavailable"
    assert_no_value(resp, emulator)


class _FailingRotator(RotatorDefaults, Rotator):
    """Stands in for a rotator whose downstream system is down (or buggy)."""

    kind = "random"

    def __init__(self, error: Exception) -> None:
        self.error = error

    async def create(self, ctx: RotationContext) -> NewSecret:
        return NewSecret(value="candidate-value-never-committed-0123", content_type="text/plain")

    async def apply(self, ctx: RotationContext, new: NewSecret) -> None:
        raise self.error

    async def verify(self, ctx: RotationContext, new: NewSecret) -> None:
        return None

    async def retire(self, ctx: RotationContext, previous: SecretVersion | None) -> RetireResult:
        return RetireResult(done=True)


async def test_a_downstream_failure_is_502_and_nothing_is_committed(emulator: KeyVaultEmulator,
                                                                   container: Container) -> None:
    seed_key(emulator)
    container.rotators["random"] = _FailingRotator(DownstreamError("downstream refused the new credential"))
    resp = await handle_rotate(rotate(KEY), container)
    assert resp.status_code == 502
    assert read(resp)["error"] == {"code": "DownstreamError", "message": "downstream refused the new credential"}
    assert len(emulator.versions(KEY)) == 1
    assert "candidate-value-never-committed" not in resp.get_body().decode()


async def test_an_unexpected_error_is_a_generic_500(emulator: KeyVaultEmulator, container: Container) -> None:
    seed_key(emulator)
    container.rotators["random"] = _FailingRotator(RuntimeError("internal detail candidate-value-never-committed"))
    resp = await handle_rotate(rotate(KEY), container)
    assert resp.status_code == 500
    assert read(resp)["error"] == {"code": "InternalError", "message": "an unexpected error occurred"}
    assert len(emulator.versions(KEY)) == 1


# -------------------------------------------------------------- role check


@pytest.fixture
async def role_container(emulator: KeyVaultEmulator, azurite: Any) -> AsyncIterator[Container]:
    c = Container(make_settings(emulator, azurite, required_role="Rotation.Operator", platform_auth_enabled=True))
    try:
        yield c
    finally:
        await c.aclose()


def principal_with_roles(*roles: str) -> dict[str, str]:
    data = copy.deepcopy(sample("client-principal.json"))
    data["claims"] = [c for c in data["claims"] if c["typ"] != "roles"] + [{"typ": "roles", "val": r} for r in roles]
    return {"x-ms-client-principal": principal_header(data)}


@pytest.mark.parametrize("headers", [
    {},
    {"x-ms-client-principal-name": "bob@contoso.example"},
    principal_with_roles(),
    principal_with_roles("Rotation.Reader"),
    {"x-ms-client-principal": "garbage"},
])
async def test_with_a_required_role_callers_without_it_get_403_on_every_route(
        emulator: KeyVaultEmulator, role_container: Container, headers: dict[str, str]) -> None:
    seed_key(emulator)
    emulator.reset_counters()
    for handler, req in ((handle_rotate, rotate(KEY, headers=headers)),
                         (handle_status, status_req(KEY, headers=headers)),
                         (handle_plan, request("GET", "secrets", headers=headers))):
        resp = await handler(req, role_container)
        assert resp.status_code == 403 and read(resp)["error"]["code"] == "Forbidden"
    assert emulator.count() == 0


async def test_with_a_required_role_a_caller_holding_it_may_rotate(emulator: KeyVaultEmulator,
                                                                   role_container: Container) -> None:
    seed_key(emulator)
    resp = await handle_rotate(rotate(KEY, headers=principal_with_roles("Rotation.Reader", "Rotation.Operator")),
                               role_container)
    assert resp.status_code == 200 and read(resp)["status"] == "rotated"
    assert latest_of(emulator, KEY)["tags"]["rotated-caller"] == "alice@contoso.example"


@pytest.mark.parametrize("role_typ", ["http://schemas.microsoft.com/ws/2008/06/identity/claims/role", "groups",
                                      "name"])
async def test_a_role_under_a_claim_type_the_header_names_itself_does_not_count(
        emulator: KeyVaultEmulator, role_container: Container, role_typ: str) -> None:
    """Only the "roles" claim carries app roles; role_typ is never followed."""
    seed_key(emulator)
    emulator.reset_counters()
    data = sample("client-principal.json")
    data["role_typ"] = role_typ
    others = [c for c in data["claims"] if c["typ"] != "roles"]
    data["claims"] = [*others, {"typ": role_typ, "val": "Rotation.Operator"}]
    headers = {"x-ms-client-principal": principal_header(data)}
    resp = await handle_rotate(rotate(KEY, headers=headers), role_container)
    assert resp.status_code == 403 and read(resp)["error"]["code"] == "Forbidden"
    assert emulator.count() == 0 and len(emulator.versions(KEY)) == 1


@pytest.fixture
async def role_without_auth_container(emulator: KeyVaultEmulator, azurite: Any) -> AsyncIterator[Container]:
    """A required role, but App Service Authentication is not on (WEBSITE_AUTH_ENABLED absent)."""
    c = Container(make_settings(emulator, azurite, required_role="Rotation.Operator", platform_auth_enabled=False))
    try:
        yield c
    finally:
        await c.aclose()


@pytest.mark.parametrize("headers", [
    {},
    principal_with_roles("Rotation.Operator"),
    {"x-ms-client-principal": principal_header(FORGED_ADMIN), "x-ms-client-principal-name": "ceo@contoso.example"},
])
async def test_a_required_role_without_app_service_authentication_is_refused_with_503_on_every_route(
        emulator: KeyVaultEmulator, role_without_auth_container: Container, headers: dict[str, str]) -> None:
    """Attack 7: with only a function key, a forged principal carrying the
    required role must not pass; the deployment is reported as misconfigured
    and nothing is read or written."""
    seed_key(emulator)
    emulator.reset_counters()
    for handler, req in ((handle_rotate, rotate(KEY, {"force": True}, headers=headers)),
                         (handle_status, status_req(KEY, headers=headers)),
                         (handle_plan, request("GET", "secrets", headers=headers))):
        resp = await handler(req, role_without_auth_container)
        assert resp.status_code == 503
        error = read(resp)["error"]
        assert error["code"] == "DeploymentMisconfigured"
        assert "App Service Authentication is not enabled" in error["message"]
    assert emulator.count() == 0
    assert len(emulator.versions(KEY)) == 1
    assert lease_blobs(role_without_auth_container.settings) == []


# ------------------------------------------------------------------ status


async def test_status_reports_policy_schedule_and_last_rotation(emulator: KeyVaultEmulator,
                                                               easy_auth_container: Container) -> None:
    old = seed_key(emulator, days_left=20)
    headers = {"x-ms-client-principal-name": "bob@contoso.example"}
    rotated = await handle_rotate(rotate(KEY, {"reason": "drill"}, headers=headers), easy_auth_container)
    assert rotated.status_code == 200
    emulator.reset_counters()
    resp = await rotation_status(status_req(KEY))
    assert resp.status_code == 200
    status = read(resp)
    current = emulator.latest(KEY)
    assert current is not None
    assert status["currentVersion"] == current["version"]
    assert status["policy"]["rotator"] == "random" and status["policy"]["intervalDays"] == 90
    assert status["due"] is False
    expires = datetime.fromisoformat(status["expires"])
    assert datetime.fromisoformat(status["nextRotation"]) == expires - timedelta(days=30)
    last = status["lastRotation"]
    assert last["trigger"] == "http" and last["previousVersion"] == old
    assert last["reason"] == "drill" and last["caller"] == "bob@contoso.example"
    assert last["state"] == "notified" and last["acks"] == "0/0"
    pending = status["pendingRetirement"]
    assert pending["state"] == "notified" and pending["previousVersion"] == old
    assert pending["previousEnabled"] is True
    assert writes(emulator) == 0
    assert_no_value(resp, emulator)


async def test_status_of_a_secret_never_rotated_shows_it_is_due(emulator: KeyVaultEmulator,
                                                               container: Container) -> None:
    seed_key(emulator, days_left=5)
    status = read(await handle_status(status_req(KEY, params={"vault": VAULT.upper()}), container))
    assert status["due"] is True and "near-expiry window" in status["dueReason"]
    assert status["lastRotation"] is None and status["pendingRetirement"] is None


async def test_status_of_a_secret_with_invalid_policy_tags_explains_the_error(emulator: KeyVaultEmulator,
                                                                            container: Container) -> None:
    emulator.put("custom-token", "custom-token-value-123456789", tags={"rotation-policy": "nonsense"})
    resp = await handle_status(status_req("custom-token"), container)
    assert resp.status_code == 200
    assert "may use only jwt, manual, random" in read(resp)["policyError"]


async def test_status_answers_a_missing_and_an_unmanaged_secret_alike(emulator: KeyVaultEmulator,
                                                                     container: Container) -> None:
    """A caller learns nothing about secrets the app does not manage, not even that they exist."""
    emulator.put("plain-secret", "plain-secret-value-123456789")
    emulator.put("plain-other", "plain-secret-value-123456789")
    answers = []
    for name in ("does-not-exist", "plain-secret"):
        resp = await handle_status(status_req(name), container)
        assert resp.status_code == 404
        answers.append(json.dumps(read(resp)).replace(name, "NAME"))
    assert answers[0] == answers[1]
    assert read(resp)["error"]["code"] == "NotManaged"


async def test_status_for_a_vault_off_the_allow_list_is_403(emulator: KeyVaultEmulator,
                                                            container: Container) -> None:
    resp = await handle_status(status_req(KEY, params={"vault": "kv-foreign"}), container)
    assert resp.status_code == 403


# -------------------------------------------------------------------- plan


async def test_plan_lists_only_managed_secrets_with_flags_and_never_reads_a_value(
        emulator: KeyVaultEmulator, container: Container) -> None:
    seed_key(emulator, days_left=5)
    emulator.put("jwt-signing-key", "jwt-initial-key-value-0123456789",
                 expires_on=datetime.now(UTC) + timedelta(days=200))
    emulator.put("openai-api-key", "sk-manual-only-value-123456")
    emulator.put("plain-secret", "plain-secret-value-123456789")
    emulator.put("tagged-token", "tagged-token-value-123456789",
                 tags={"rotation-policy": "random", "rotation-interval-days": "7"})
    emulator.reset_counters()
    resp = await rotation_plan(request("GET", "secrets"))
    assert resp.status_code == 200
    body = read(resp)
    assert body["vaults"] == [VAULT]
    entries = {e["name"]: e for e in body["secrets"]}
    assert sorted(entries) == ["jwt-signing-key", "openai-api-key", KEY, "tagged-token"]
    assert entries[KEY]["overdue"] is True and entries[KEY]["rotator"] == "random"
    assert entries["jwt-signing-key"]["overdue"] is False and entries["jwt-signing-key"]["nextRotation"]
    assert entries["openai-api-key"]["manual"] is True and entries["openai-api-key"]["nextRotation"] is None
    assert entries["tagged-token"]["overdue"] is True  # managed but no expiry: due now
    assert emulator.count("GET", "secrets") >= 1
    assert emulator.count() == emulator.count("GET", "secrets")  # listing only: no value was fetched
    assert lease_blobs(container.settings) == []
    assert_no_value(resp, emulator)


async def test_plan_for_a_named_vault_and_for_a_foreign_one(emulator: KeyVaultEmulator,
                                                            container: Container) -> None:
    seed_key(emulator)
    ok = await handle_plan(request("GET", "secrets", params={"vault": VAULT}), container)
    assert ok.status_code == 200 and [e["name"] for e in read(ok)["secrets"]] == [KEY]
    refused = await handle_plan(request("GET", "secrets", params={"vault": "kv-foreign"}), container)
    assert refused.status_code == 403 and read(refused)["error"]["code"] == "VaultNotAllowed"


async def test_get_routes_change_nothing_even_for_due_and_pending_secrets(emulator: KeyVaultEmulator,
                                                                          container: Container) -> None:
    seed_key(emulator, days_left=1)
    assert (await handle_rotate(rotate(KEY), container)).status_code == 200  # leaves a pending retirement
    emulator.put("jwt-signing-key", "jwt-initial-key-value-0123456789",
                 expires_on=datetime.now(UTC) - timedelta(days=1))
    # A fresh container whose lease container does not exist yet: any lease taken would create it.
    reader = Container(dataclasses.replace(container.settings, lease_container=f"locks-{uuid.uuid4().hex[:12]}"))
    try:
        emulator.reset_counters()
        before = {n: [(v["version"], v["attributes"], v.get("tags")) for v in emulator.versions(n)]
                  for n in emulator.secret_names()}
        for req, handler in ((status_req(KEY), handle_status), (status_req("jwt-signing-key"), handle_status),
                             (request("GET", "secrets"), handle_plan)):
            assert (await handler(req, reader)).status_code == 200
        after = {n: [(v["version"], v["attributes"], v.get("tags")) for v in emulator.versions(n)]
                 for n in emulator.secret_names()}
        assert emulator.count("PUT") == 0 and emulator.count("PATCH") == 0
        assert writes(emulator) == 0
        assert before == after
        assert lease_blobs(reader.settings) == []
    finally:
        await reader.aclose()
