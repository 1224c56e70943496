"""The Key Vault emulator, checked through the real SDK.

Every other Key Vault test in the project trusts this emulator to behave like
Azure for the calls our adapter makes, so these tests pin that behaviour down
with the real ``azure.keyvault.secrets`` sync and aio clients (never mocks):
versions, paging, PATCH semantics, error shapes and status codes, challenge
authentication, soft delete, and the faults reliability tests depend on.
"""

from __future__ import annotations

import asyncio
import base64
import http.client
import json
import re
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from azure.core.exceptions import (
    HttpResponseError,
    ResourceExistsError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.keyvault.secrets import KeyVaultSecretIdentifier, SecretClient
from azure.keyvault.secrets.aio import SecretClient as AsyncSecretClient

from kvemulator import (
    AsyncStaticTokenCredential,
    KeyVaultEmulator,
    StaticTokenCredential,
    seed_standard,
    standard_inventory,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
VERSION_RE = re.compile(r"^[0-9a-f]{32}$")
CHALLENGE_RE = re.compile(
    r'^Bearer authorization="https://login\.microsoftonline\.com/[0-9a-f-]{36}", resource="https://vault\.azure\.net"$'
)


# ---------------------------------------------------------------- fixtures


@pytest.fixture
def emu() -> Iterator[KeyVaultEmulator]:
    with KeyVaultEmulator() as emulator:
        yield emulator


def make_client(emu: KeyVaultEmulator, **kwargs: object) -> SecretClient:
    return SecretClient(
        vault_url=emu.url,
        credential=StaticTokenCredential(),
        verify_challenge_resource=False,
        connection_verify=emu.ca_path,
        **kwargs,
    )


@pytest.fixture
def client(emu: KeyVaultEmulator) -> Iterator[SecretClient]:
    with make_client(emu) as secret_client:
        yield secret_client


@pytest.fixture
async def aclient(emu: KeyVaultEmulator) -> AsyncIterator[AsyncSecretClient]:
    async with AsyncSecretClient(
        vault_url=emu.url,
        credential=AsyncStaticTokenCredential(),
        verify_challenge_resource=False,
        connection_verify=emu.ca_path,
    ) as secret_client:
        yield secret_client


def raw_request(
    emu: KeyVaultEmulator,
    method: str,
    path: str,
    *,
    token: str | None = "raw-token",
    body: object | None = None,
    connection: http.client.HTTPSConnection | None = None,
) -> tuple[int, http.client.HTTPMessage, bytes]:
    conn = connection or http.client.HTTPSConnection(
        "127.0.0.1", emu.port, context=ssl.create_default_context(cafile=emu.ca_path), timeout=10
    )
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    payload = json.dumps(body).encode() if body is not None else None
    conn.request(method, path, body=payload, headers=headers)
    response = conn.getresponse()
    data = response.read()
    if connection is None:
        conn.close()
    return response.status, response.headers, data


def error_code(exc: HttpResponseError) -> str | None:
    return exc.error.code if exc.error is not None else None


# ------------------------------------------------------- versions and reads


def test_set_secret_creates_a_new_version_every_time(emu: KeyVaultEmulator, client: SecretClient) -> None:
    first = client.set_secret("db-password", "one")
    second = client.set_secret("db-password", "two")
    third = client.set_secret("db-password", "two")  # same value: still a new version

    versions = [first.properties.version, second.properties.version, third.properties.version]
    assert len(set(versions)) == 3
    assert all(v is not None and VERSION_RE.fullmatch(v) for v in versions)
    assert [v["version"] for v in emu.versions("db-password")] == versions
    assert [v["value"] for v in emu.versions("db-password")] == ["one", "two", "two"]


def test_secret_id_has_vault_url_name_and_version_shape(emu: KeyVaultEmulator, client: SecretClient) -> None:
    secret = client.set_secret("shape-check", "v")

    assert secret.id == f"{emu.url}/secrets/shape-check/{secret.properties.version}"
    parsed = KeyVaultSecretIdentifier(secret.id)
    assert parsed.vault_url == emu.url
    assert parsed.name == "shape-check"
    assert secret.properties.recoverable_days == 90
    assert secret.properties.recovery_level == "Recoverable+Purgeable"
    assert secret.properties.created_on is not None
    assert secret.properties.updated_on == secret.properties.created_on


def test_get_secret_returns_latest_unless_a_version_is_given(client: SecretClient) -> None:
    old = client.set_secret("api-key", "old", content_type="text/plain", tags={"owner": "team-a"})
    new = client.set_secret("api-key", "new")

    latest = client.get_secret("api-key")
    pinned = client.get_secret("api-key", old.properties.version)

    assert (latest.value, latest.properties.version) == ("new", new.properties.version)
    assert (pinned.value, pinned.properties.version) == ("old", old.properties.version)
    assert pinned.properties.content_type == "text/plain"
    assert pinned.properties.tags == {"owner": "team-a"}
    assert latest.properties.tags is None


def test_secret_names_are_case_insensitive(client: SecretClient) -> None:
    client.set_secret("Mixed-Case", "v1")
    client.set_secret("mixed-case", "v2")

    assert client.get_secret("MIXED-CASE").value == "v2"
    assert [p.name for p in client.list_properties_of_secrets()] == ["Mixed-Case"]


def test_expiry_and_not_before_round_trip_in_unix_seconds(client: SecretClient) -> None:
    expires = datetime(2031, 5, 6, 7, 8, 9, tzinfo=UTC)
    not_before = datetime(2030, 1, 1, tzinfo=UTC)

    client.set_secret("timed", "v", expires_on=expires, not_before=not_before, enabled=True)
    secret = client.get_secret("timed")

    assert secret.properties.expires_on == expires
    assert secret.properties.not_before == not_before


# ----------------------------------------------------------------- listing


def test_sixty_secrets_list_in_three_pages_of_25_25_10(emu: KeyVaultEmulator, client: SecretClient) -> None:
    for i in range(60):
        emu.put(f"bulk-{i:02d}", f"value-{i}")
    emu.reset_counters()

    pages = [list(page) for page in client.list_properties_of_secrets().by_page()]

    assert [len(page) for page in pages] == [25, 25, 10]
    names = [p.name for page in pages for p in page]
    assert names == [f"bulk-{i:02d}" for i in range(60)]
    assert all(p.version is None for page in pages for p in page)  # list ids carry no version
    assert emu.count("GET", "secrets") == 3


def test_list_honours_max_page_size(emu: KeyVaultEmulator, client: SecretClient) -> None:
    for i in range(12):
        emu.put(f"small-{i:02d}", "v")
    emu.reset_counters()

    pages = [list(page) for page in client.list_properties_of_secrets(max_page_size=5).by_page()]

    assert [len(page) for page in pages] == [5, 5, 2]
    assert emu.count("GET", "secrets") == 3


def test_list_pages_link_with_absolute_next_link_and_null_on_last_page(emu: KeyVaultEmulator) -> None:
    for i in range(30):
        emu.put(f"link-{i:02d}", "v")

    status, _, body = raw_request(emu, "GET", "/secrets?api-version=7.6")
    first = json.loads(body)
    assert status == 200
    assert first["nextLink"].startswith(f"{emu.url}/secrets?")
    assert "$skiptoken=" in first["nextLink"]

    next_path = first["nextLink"][len(emu.url) :]
    status, _, body = raw_request(emu, "GET", next_path)
    second = json.loads(body)
    assert status == 200
    assert len(second["value"]) == 5
    assert second["nextLink"] is None


def test_list_items_never_carry_values(emu: KeyVaultEmulator) -> None:
    emu.put("listed", "top-secret", tags={"a": "b"}, content_type="text/plain")
    emu.put("listed", "top-secret-2")

    _, _, secrets_body = raw_request(emu, "GET", "/secrets?api-version=7.6")
    _, _, versions_body = raw_request(emu, "GET", "/secrets/listed/versions?api-version=7.6")

    items = json.loads(secrets_body)["value"] + json.loads(versions_body)["value"]
    assert len(items) == 3
    for item in items:
        assert "value" not in item
        assert set(item) <= {"id", "contentType", "attributes", "tags", "managed"}
    assert b"top-secret" not in secrets_body + versions_body


def test_versions_listing_pages_too(emu: KeyVaultEmulator, client: SecretClient) -> None:
    created = [emu.put("many-versions", f"v{i}")["version"] for i in range(30)]
    emu.reset_counters()

    pages = [list(page) for page in client.list_properties_of_secret_versions("many-versions").by_page()]

    assert [len(page) for page in pages] == [25, 5]
    assert [p.version for page in pages for p in page] == created
    assert emu.count("GET", "secret_versions") == 2


def test_ten_thousand_seeded_secrets_seed_fast_and_list_in_400_pages(
    emu: KeyVaultEmulator, client: SecretClient
) -> None:
    started = time.perf_counter()
    for i in range(10_000):
        emu.put(f"load-{i:05d}", "x", expires_on=1_900_000_000)
    seeding = time.perf_counter() - started
    emu.reset_counters()

    started = time.perf_counter()
    listed = sum(1 for _ in client.list_properties_of_secrets())
    listing = time.perf_counter() - started

    assert seeding < 1.0
    assert listed == 10_000
    assert emu.count("GET", "secrets") == 400
    assert listing < 15.0


# -------------------------------------------------------------- PATCH


def test_update_changes_tags_enabled_and_expiry_but_never_the_value(
    emu: KeyVaultEmulator, client: SecretClient
) -> None:
    old = client.set_secret("rotating", "old-value", tags={"stage": "current"})
    client.set_secret("rotating", "new-value")
    expires = datetime(2032, 1, 2, 3, 4, 5, tzinfo=UTC)

    updated = client.update_secret_properties(
        "rotating",
        old.properties.version,
        enabled=False,
        tags={"stage": "retired"},
        expires_on=expires,
        content_type="text/plain",
    )

    assert updated.version == old.properties.version
    assert updated.enabled is False
    assert updated.tags == {"stage": "retired"}
    assert updated.expires_on == expires
    assert updated.content_type == "text/plain"
    stored = emu.versions("rotating")[0]
    assert stored["value"] == "old-value"
    assert stored["attributes"]["updated"] >= stored["attributes"]["created"]
    # The latest version is untouched.
    assert client.get_secret("rotating").value == "new-value"


def test_update_without_version_targets_the_latest(emu: KeyVaultEmulator, client: SecretClient) -> None:
    client.set_secret("patch-latest", "a")
    latest = client.set_secret("patch-latest", "b")
    emu.reset_counters()

    updated = client.update_secret_properties("patch-latest", tags={"k": "v"})

    assert updated.version == latest.properties.version
    assert emu.versions("patch-latest")[0].get("tags") is None
    assert emu.count("PATCH", "secret") == 1


def test_patch_ignores_a_value_in_the_body(emu: KeyVaultEmulator) -> None:
    version = emu.put("immutable", "original")["version"]

    status, _, body = raw_request(
        emu, "PATCH", f"/secrets/immutable/{version}?api-version=7.6", body={"value": "changed", "tags": {"a": "b"}}
    )

    assert status == 200
    assert "value" not in json.loads(body)
    latest = emu.latest("immutable")
    assert latest is not None
    assert latest["value"] == "original"
    assert latest["tags"] == {"a": "b"}


# ------------------------------------------------------------------ errors


def test_disabled_version_answers_403_with_inner_error_secret_disabled(client: SecretClient) -> None:
    disabled = client.set_secret("switch", "off", enabled=False)

    with pytest.raises(HttpResponseError) as pinned:
        client.get_secret("switch", disabled.properties.version)
    with pytest.raises(HttpResponseError) as latest:
        client.get_secret("switch")

    for exc in (pinned.value, latest.value):
        assert exc.status_code == 403
        assert error_code(exc) == "Forbidden"
        assert exc.error is not None
        assert exc.error.innererror == {"code": "SecretDisabled"}
        assert "Operation get is not allowed on a disabled secret." in str(exc)


def test_disabled_latest_hides_older_enabled_versions_from_get_latest(client: SecretClient) -> None:
    enabled = client.set_secret("half", "good")
    client.set_secret("half", "bad", enabled=False)

    with pytest.raises(HttpResponseError) as exc:
        client.get_secret("half")

    assert exc.value.status_code == 403
    assert client.get_secret("half", enabled.properties.version).value == "good"


def test_missing_secret_or_version_raises_resource_not_found_404(client: SecretClient) -> None:
    client.set_secret("present", "v")

    with pytest.raises(ResourceNotFoundError) as missing:
        client.get_secret("absent")
    with pytest.raises(ResourceNotFoundError) as missing_version:
        client.get_secret("present", "0" * 32)

    for exc in (missing.value, missing_version.value):
        assert exc.status_code == 404
        assert error_code(exc) == "SecretNotFound"


@pytest.mark.parametrize(
    ("name", "value", "tags"),
    [
        pytest.param("bad_name", "v", None, id="underscore-in-name"),
        pytest.param("x" * 128, "v", None, id="name-over-127-chars"),
        pytest.param("big", "x" * (25 * 1024 + 1), None, id="value-over-25KB"),
        pytest.param("tagged", "v", {f"t{i}": "v" for i in range(16)}, id="16-tags"),
        pytest.param("tagged", "v", {"n" * 513: "v"}, id="tag-name-over-512"),
        pytest.param("tagged", "v", {"t": "v" * 257}, id="tag-value-over-256"),
    ],
)
def test_invalid_set_secret_answers_400_bad_parameter(
    client: SecretClient, name: str, value: str, tags: dict[str, str] | None
) -> None:
    with pytest.raises(HttpResponseError) as exc:
        client.set_secret(name, value, tags=tags)

    assert exc.value.status_code == 400
    assert error_code(exc.value) == "BadParameter"


def test_limits_are_inclusive(client: SecretClient) -> None:
    client.set_secret("x" * 127, "x" * (25 * 1024), tags={f"t{i}": "v" * 256 for i in range(14)} | {"n" * 512: "v"})

    assert client.get_secret("x" * 127).value == "x" * (25 * 1024)


def test_bad_secret_name_in_a_read_answers_400(client: SecretClient) -> None:
    with pytest.raises(HttpResponseError) as exc:
        client.get_secret("no.dots")

    assert exc.value.status_code == 400


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("", 400),
        ("?api-version=", 400),
        ("?api-version=6.0", 400),
        ("?api-version=7.0", 404),
        ("?api-version=7.6", 404),
        ("?api-version=2025-07-01", 404),
        ("?api-version=2026-04-01", 404),
    ],
)
def test_api_version_is_required_and_checked(emu: KeyVaultEmulator, query: str, expected: int) -> None:
    status, _, body = raw_request(emu, "GET", f"/secrets/nothing-here{query}")

    assert status == expected
    assert json.loads(body)["error"]["code"] == ("BadParameter" if expected == 400 else "SecretNotFound")


def test_maxresults_outside_1_to_25_is_rejected(emu: KeyVaultEmulator) -> None:
    for bad in ("0", "26", "ten"):
        status, _, body = raw_request(emu, "GET", f"/secrets?api-version=7.6&maxresults={bad}")
        assert status == 400
        assert json.loads(body)["error"]["code"] == "BadParameter"


# ------------------------------------------------------ auth and transport


def test_request_without_bearer_token_gets_401_challenge(emu: KeyVaultEmulator) -> None:
    emu.put("guarded", "v")

    for token in (None, ""):
        status, headers, body = raw_request(emu, "GET", "/secrets/guarded?api-version=7.6", token=token)

        assert status == 401
        assert CHALLENGE_RE.fullmatch(headers["WWW-Authenticate"])
        assert emu.tenant_id in headers["WWW-Authenticate"]
        assert json.loads(body)["error"]["code"] == "Unauthorized"
        assert b"guarded" not in body and b'"v"' not in body
    assert emu.count() == 0
    assert emu.count(include_challenges=True) == 2


def test_sdk_does_the_challenge_once_then_sends_bearer_tokens(emu: KeyVaultEmulator, client: SecretClient) -> None:
    client.set_secret("handshake", "v")
    client.get_secret("handshake")

    statuses = [(r.method, r.status, r.authenticated) for r in emu.requests]
    assert statuses == [("PUT", 401, False), ("PUT", 200, True), ("GET", 200, True)]


def test_responses_carry_key_vault_headers_and_keep_the_connection_alive(emu: KeyVaultEmulator) -> None:
    emu.put("hdr", "v")
    conn = http.client.HTTPSConnection(
        "127.0.0.1", emu.port, context=ssl.create_default_context(cafile=emu.ca_path), timeout=10
    )
    try:
        seen_sockets = set()
        request_ids = set()
        for path in ("/secrets/hdr?api-version=7.6", "/secrets/nope?api-version=7.6", "/secrets?api-version=7.6"):
            status, headers, body = raw_request(emu, "GET", path, connection=conn)
            assert status in (200, 404)
            assert headers["Content-Type"] == "application/json; charset=utf-8"
            assert int(headers["Content-Length"]) == len(body)
            assert headers["x-ms-keyvault-service-version"]
            request_ids.add(headers["x-ms-request-id"])
            assert conn.sock is not None
            seen_sockets.add(id(conn.sock))
        assert len(request_ids) == 3
        assert len(seen_sockets) == 1  # one TCP/TLS connection served all three requests
    finally:
        conn.close()


def test_certificate_is_trusted_only_with_the_emulator_ca(emu: KeyVaultEmulator) -> None:
    conn = http.client.HTTPSConnection("127.0.0.1", emu.port, context=ssl.create_default_context(), timeout=10)
    with pytest.raises(ssl.SSLCertVerificationError):
        conn.request("GET", "/secrets?api-version=7.6")
    conn.close()

    localhost = http.client.HTTPSConnection(
        "localhost", emu.port, context=ssl.create_default_context(cafile=emu.ca_path), timeout=10
    )
    localhost.request("GET", "/secrets?api-version=7.6")
    assert localhost.getresponse().status == 401
    localhost.close()


# --------------------------------------------------------- delete/recover


def test_soft_delete_recover_and_purge(emu: KeyVaultEmulator, client: SecretClient) -> None:
    first = client.set_secret("doomed", "v1", tags={"keep": "me"})
    client.set_secret("doomed", "v2")

    deleted = client.begin_delete_secret("doomed").result()
    assert deleted.name == "doomed"
    assert deleted.recovery_id == f"{emu.url}/deletedsecrets/doomed"
    assert deleted.deleted_date is not None and deleted.scheduled_purge_date is not None
    assert deleted.scheduled_purge_date - deleted.deleted_date == timedelta(days=90)
    with pytest.raises(ResourceNotFoundError):
        client.get_secret("doomed")
    assert [d.name for d in client.list_deleted_secrets()] == ["doomed"]
    assert client.get_deleted_secret("doomed").name == "doomed"
    assert "doomed" not in [p.name for p in client.list_properties_of_secrets()]

    with pytest.raises(ResourceExistsError) as conflict:
        client.set_secret("doomed", "v3")
    assert conflict.value.status_code == 409

    recovered = client.begin_recover_deleted_secret("doomed").result()
    assert recovered.name == "doomed"
    assert client.get_secret("doomed").value == "v2"
    assert client.get_secret("doomed", first.properties.version).properties.tags == {"keep": "me"}

    client.begin_delete_secret("doomed").wait()
    client.purge_deleted_secret("doomed")
    with pytest.raises(ResourceNotFoundError):
        client.get_deleted_secret("doomed")
    assert emu.deleted_names() == []
    assert client.set_secret("doomed", "reborn").value == "reborn"
    assert len(emu.versions("doomed")) == 1


def test_delete_poller_waits_out_propagation_delay() -> None:
    with (
        KeyVaultEmulator(propagation_delay=0.3) as emu,
        make_client(emu) as client,
    ):
        emu.put("slow-delete", "v")
        poller = client.begin_delete_secret("slow-delete", _polling_interval=0.1)
        poller.wait()

        assert poller.done()
        assert emu.count("GET", "deleted_secret") >= 2


def test_backup_and_restore_round_trip(emu: KeyVaultEmulator, client: SecretClient) -> None:
    client.set_secret("portable", "v1")
    client.set_secret("portable", "v2")
    blob = client.backup_secret("portable")
    client.begin_delete_secret("portable").wait()
    client.purge_deleted_secret("portable")

    restored = client.restore_secret_backup(blob)

    assert restored.name == "portable"
    assert [v["value"] for v in emu.versions("portable")] == ["v1", "v2"]


# ------------------------------------------------------------------ faults


def test_throttling_429_with_retry_after_is_retried_by_the_sdk(emu: KeyVaultEmulator, client: SecretClient) -> None:
    emu.put("busy", "v")
    client.get_secret("busy")  # challenge done
    emu.reset_counters()
    emu.faults.add(status=429, retry_after=1, times=2, method="GET", path_regex=r"^/secrets/busy")

    started = time.monotonic()
    secret = client.get_secret("busy")
    elapsed = time.monotonic() - started

    assert secret.value == "v"
    assert [r.status for r in emu.requests] == [429, 429, 200]
    assert elapsed >= 1.9  # Retry-After honoured twice
    assert emu.faults.armed == []


def test_throttled_response_has_key_vault_shape(emu: KeyVaultEmulator) -> None:
    emu.faults.add(status=429, retry_after=3)

    status, headers, body = raw_request(emu, "GET", "/secrets?api-version=7.6")

    assert status == 429
    assert headers["Retry-After"] == "3"
    assert json.loads(body)["error"]["code"] == "Throttled"


@pytest.mark.parametrize(("status", "code"), [(503, "ServiceUnavailable"), (500, "InternalServerError")])
def test_server_errors_are_retried_until_success(emu: KeyVaultEmulator, status: int, code: str) -> None:
    emu.put("flaky", "v")
    emu.faults.add(status=status, times=2)

    with make_client(emu, retry_backoff_factor=0.01) as client:
        assert client.get_secret("flaky").value == "v"

    failures = [r for r in emu.requests if r.fault == "status"]
    assert [r.status for r in failures] == [status, status]


def test_persistent_fault_surfaces_once_retries_are_exhausted(emu: KeyVaultEmulator) -> None:
    emu.put("down", "v")
    emu.faults.add(status=503, times=None)

    with make_client(emu, retry_total=2, retry_backoff_factor=0.01) as client, pytest.raises(HttpResponseError) as exc:
        client.get_secret("down")

    assert exc.value.status_code == 503
    assert error_code(exc.value) == "ServiceUnavailable"
    assert emu.count("GET", "secret") == 3
    emu.faults.clear()
    assert emu.faults.armed == []


def test_dropped_connection_is_retried_by_the_sdk(emu: KeyVaultEmulator) -> None:
    emu.put("reset", "v")
    emu.faults.disconnect(times=1, method="GET")

    with make_client(emu, retry_backoff_factor=0.01) as client:
        assert client.get_secret("reset").value == "v"

    assert [r.fault for r in emu.requests if r.authenticated] == ["disconnect", None]


def test_latency_injection_delays_only_matching_requests(emu: KeyVaultEmulator, client: SecretClient) -> None:
    emu.put("slow", "v")
    emu.put("fast", "v")
    client.get_secret("fast")  # challenge done
    emu.faults.latency(0.5, times=1, path_regex=r"/secrets/slow")

    started = time.monotonic()
    client.get_secret("fast")
    fast = time.monotonic() - started
    started = time.monotonic()
    client.get_secret("slow")
    slow = time.monotonic() - started
    started = time.monotonic()
    client.get_secret("slow")
    slow_again = time.monotonic() - started

    assert fast < 0.4
    assert slow >= 0.5
    assert slow_again < 0.4


def test_restart_keeps_port_ca_and_secrets_so_clients_recover() -> None:
    emu = KeyVaultEmulator().start()
    try:
        emu.put("survivor", "v")
        port, ca_path = emu.port, emu.ca_path
        with make_client(emu, retry_total=0) as client:
            assert client.get_secret("survivor").value == "v"
            emu.stop()
            with pytest.raises((ServiceRequestError, ServiceResponseError)):
                client.get_secret("survivor")
            emu.start()
            assert (emu.port, emu.ca_path) == (port, ca_path)
            assert client.get_secret("survivor").value == "v"
    finally:
        emu.stop()


def test_latency_timeout_surfaces_as_sdk_error(emu: KeyVaultEmulator) -> None:
    emu.put("sluggish", "v")
    emu.faults.latency(2.0)

    with make_client(emu, read_timeout=0.3, retry_total=0) as client, pytest.raises(Exception) as exc:
        client.get_secret("sluggish")

    assert "timed out" in str(exc.value).lower() or "timeout" in type(exc.value).__name__.lower()
    emu.faults.clear()


# -------------------------------------------------------------- aio client


async def test_async_client_sets_gets_lists_and_updates(emu: KeyVaultEmulator, aclient: AsyncSecretClient) -> None:
    first = await aclient.set_secret("async-secret", "one")
    await aclient.set_secret("async-secret", "two")

    assert (await aclient.get_secret("async-secret")).value == "two"
    assert (await aclient.get_secret("async-secret", first.properties.version)).value == "one"
    versions = [p.version async for p in aclient.list_properties_of_secret_versions("async-secret")]
    assert versions == [v["version"] for v in emu.versions("async-secret")]
    updated = await aclient.update_secret_properties("async-secret", first.properties.version, enabled=False)
    assert updated.enabled is False
    with pytest.raises(HttpResponseError) as exc:
        await aclient.get_secret("async-secret", first.properties.version)
    assert exc.value.status_code == 403
    with pytest.raises(ResourceNotFoundError):
        await aclient.get_secret("never-set")


async def test_async_client_handles_20_concurrent_writes(emu: KeyVaultEmulator, aclient: AsyncSecretClient) -> None:
    await aclient.set_secret("warmup", "v")
    emu.faults.latency(0.2)  # make the requests overlap on the server

    started = time.monotonic()
    results = await asyncio.gather(*(aclient.set_secret("fan-in", f"value-{i}") for i in range(20)))
    elapsed = time.monotonic() - started

    assert len({r.properties.version for r in results}) == 20
    assert sorted(v["value"] for v in emu.versions("fan-in")) == sorted(f"value-{i}" for i in range(20))
    assert elapsed < 2.0  # served concurrently: one after another would take 4 s
    assert emu.count("PUT", "secret") == 21


async def test_async_client_lists_pages_and_honours_retry_after(
    emu: KeyVaultEmulator, aclient: AsyncSecretClient
) -> None:
    for i in range(30):
        emu.put(f"apage-{i:02d}", "v")
    emu.faults.add(status=429, retry_after=0.2, times=1, path_regex=r"^/secrets$")

    names = [p.name async for p in aclient.list_properties_of_secrets()]

    assert len(names) == 30
    assert [r.status for r in emu.requests if r.kind == "secrets" and r.authenticated] == [429, 200, 200]


async def test_async_delete_and_recover_pollers(emu: KeyVaultEmulator, aclient: AsyncSecretClient) -> None:
    await aclient.set_secret("async-doomed", "v")

    deleted = await aclient.delete_secret("async-doomed")
    assert deleted.recovery_id == f"{emu.url}/deletedsecrets/async-doomed"
    recovered = await aclient.recover_deleted_secret("async-doomed")
    assert recovered.name == "async-doomed"
    assert (await aclient.get_secret("async-doomed")).value == "v"


# ---------------------------------------------------- inspection and seeding


def test_inspection_api_sees_state_without_the_sdk(emu: KeyVaultEmulator) -> None:
    expires = datetime(2030, 1, 1, tzinfo=UTC)
    first = emu.put("inspect-me", "v1", tags={"a": "1"}, expires_on=expires, content_type="text/plain")
    second = emu.put("inspect-me", "v2", enabled=False)
    emu.put("another", "x")

    assert emu.secret_names() == ["another", "inspect-me"]
    versions = emu.versions("inspect-me")
    assert [v["version"] for v in versions] == [first["version"], second["version"]]
    assert versions[0]["attributes"]["exp"] == int(expires.timestamp())
    assert versions[0]["tags"] == {"a": "1"}
    latest = emu.latest("inspect-me")
    assert latest is not None
    assert latest["value"] == "v2" and latest["attributes"]["enabled"] is False
    assert emu.latest("nope") is None and emu.versions("nope") == []

    emu.update("inspect-me", first["version"], enabled=False, tags=None, expires_on=None)
    assert emu.versions("inspect-me")[0]["attributes"]["enabled"] is False
    assert "exp" not in emu.versions("inspect-me")[0]["attributes"]

    emu.delete("another")
    assert emu.deleted_names() == ["another"]
    emu.delete("another", purge=True)
    assert emu.deleted_names() == []


def test_counters_reset(emu: KeyVaultEmulator, client: SecretClient) -> None:
    client.set_secret("counted", "v")
    assert emu.counters[("PUT", "secret")] == 1

    emu.reset_counters()

    assert emu.requests == [] and emu.count() == 0
    client.get_secret("counted")
    assert emu.counters == {("GET", "secret"): 1}


def test_standard_seed_writes_the_inventory_with_one_secret_near_expiry(
    emu: KeyVaultEmulator, client: SecretClient
) -> None:
    now = datetime(2030, 6, 1, tzinfo=UTC)

    seeded = seed_standard(emu, now=now)

    expected = {
        "jwt-signing-key",
        "database-connection-string",
        "redis-password",
        "session-encryption-key",
        "openai-api-key",
        "azure-openai-api-key",
        "foundry-api-key",
        "api-gateway-client-secret",
        "encryption-master-key",
    }
    assert set(seeded) == expected == {spec.name for spec in standard_inventory()}
    expiry = {p.name: p.expires_on for p in client.list_properties_of_secrets()}
    assert expiry["jwt-signing-key"] == now + timedelta(days=10)
    assert all(expiry[name] == now + timedelta(days=120) for name in expected - {"jwt-signing-key"})
    jwt = client.get_secret("jwt-signing-key").value
    assert jwt is not None
    assert len(base64.urlsafe_b64decode(jwt + "=" * (-len(jwt) % 4))) == 32
    assert (client.get_secret("database-connection-string").value or "").startswith("postgresql://")


def test_standard_seed_without_near_expiry_puts_jwt_60_days_out(emu: KeyVaultEmulator) -> None:
    now = datetime(2030, 6, 1, tzinfo=UTC)

    seed_standard(emu, now=now, near_expiry=())

    latest = emu.latest("jwt-signing-key")
    assert latest is not None
    assert latest["attributes"]["exp"] == int((now + timedelta(days=60)).timestamp())


def test_standard_seed_values_are_fresh_each_time() -> None:
    values = [{spec.name: spec.make_value() for spec in standard_inventory()} for _ in range(2)]

    assert all(values[0][name] != values[1][name] for name in values[0])


# --------------------------------------------------------------- standalone


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait_for_port(port: int, process: subprocess.Popen[str], deadline: float) -> None:
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"emulator exited early with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError("emulator did not start listening in time")


def test_standalone_main_serves_seeded_vault_and_stops_on_terminate(tmp_path: Path) -> None:
    port = _free_port()
    state_dir = tmp_path / "state"
    process = subprocess.Popen(
        [sys.executable, "-m", "kvemulator", "--port", str(port), "--seed", "standard", "--state-dir", str(state_dir)],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_for_port(port, process, time.monotonic() + 20)
        ca_path = state_dir / "ca.pem"
        with SecretClient(
            vault_url=f"https://127.0.0.1:{port}",
            credential=StaticTokenCredential(),
            verify_challenge_resource=False,
            connection_verify=str(ca_path),
        ) as client:
            jwt = client.get_secret("jwt-signing-key")
            assert jwt.properties.expires_on is not None
            assert jwt.properties.expires_on - datetime.now(UTC) < timedelta(days=30)
            names = {p.name for p in client.list_properties_of_secrets()}
            assert len(names) == 9
    finally:
        process.terminate()
        stdout, stderr = process.communicate(timeout=15)

    assert process.returncode == 0, stderr
    assert f"ROTATION_VAULT_URLS=kv-local=https://127.0.0.1:{port}" in stdout
    assert f"ROTATION_VAULT_CA_BUNDLE={ca_path}" in stdout
    assert "ROTATION_VAULT_VERIFY_CHALLENGE_RESOURCE=false" in stdout
    assert "ROTATION_VAULT_CREDENTIAL=emulator" in stdout
    assert "ROTATION_ALLOWED_VAULTS=kv-local" in stdout
    assert jwt.value is not None and jwt.value not in stdout + stderr
    assert json.loads((state_dir / "settings.json").read_text())["ROTATION_ALLOWED_VAULTS"] == "kv-local"


def test_last_request_is_the_newest_match(emu: KeyVaultEmulator, client: SecretClient) -> None:
    client.set_secret("lr", "one")
    client.set_secret("lr", "two")
    client.get_secret("lr")
    last_put = emu.last_request("put", "/secrets/lr", status=200)
    assert last_put is not None
    assert last_put == [r for r in emu.requests if r.method == "PUT" and r.path == "/secrets/lr"][-1]
    assert emu.last_request("PUT", "/secrets/lr", status=404) is None
    assert emu.last_request("DELETE", "/secrets/lr") is None
