"""keyvault_rotation_kit: the cached secret client and the JWT key ring, on the real SDK and the emulator."""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import jwt
import pytest
from keyvault_rotation_kit import CachedSecretClient, JwtKeyRing, SecretNotFound, SecretUnavailable, TokenInvalid

from kvemulator import KeyVaultEmulator
from kvemulator.credentials import AsyncStaticTokenCredential
from shared.rotators.jwt_key import new_private_jwk
from tests.support import leakscan


class Clock:
    """A monotonic clock of our own, moved by the test."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def client(emulator: KeyVaultEmulator) -> AsyncIterator[CachedSecretClient]:
    async with CachedSecretClient(emulator.async_secret_client(retry_total=0)) as cached:
        yield cached


def reads(emulator: KeyVaultEmulator) -> int:
    return emulator.count("GET", "secret")


async def test_get_secret_is_a_drop_in_and_caches_with_the_version(
    emulator: KeyVaultEmulator, client: CachedSecretClient
) -> None:
    v1 = emulator.put("database-connection-string", "conninfo-v1")["version"]
    assert await client.get_secret("database-connection-string") == "conninfo-v1"
    secret = await client.get("database-connection-string")
    assert (secret.version, secret.value) == (v1, "conninfo-v1")
    assert "conninfo-v1" not in repr(secret)
    assert reads(emulator) == 1
    emulator.put("database-connection-string", "conninfo-v2")
    # Still cached; use_cache=False reads through.
    assert await client.get_secret("database-connection-string") == "conninfo-v1"
    assert await client.get_secret("database-connection-string", use_cache=False) == "conninfo-v2"
    assert await client.get_secret("database-connection-string") == "conninfo-v2"


async def test_ttl_expiry_rereads(emulator: KeyVaultEmulator) -> None:
    clock = Clock()
    emulator.put("redis-password", "p1")
    async with CachedSecretClient(emulator.async_secret_client(), ttl_seconds=60, clock=clock) as client:
        assert await client.get_secret("redis-password") == "p1"
        emulator.put("redis-password", "p2")
        clock.now += 59
        assert await client.get_secret("redis-password") == "p1"
        clock.now += 2
        assert await client.get_secret("redis-password") == "p2"


async def test_encryption_master_key_is_never_cached_by_default(
    emulator: KeyVaultEmulator, client: CachedSecretClient
) -> None:
    emulator.put("encryption-master-key", "mk1")
    for _ in range(3):
        assert await client.get_secret("Encryption-Master-Key") == "mk1"
    assert reads(emulator) == 3
    assert client.cached_version("encryption-master-key") is None


async def test_concurrent_cold_reads_share_one_vault_read(
    emulator: KeyVaultEmulator, client: CachedSecretClient
) -> None:
    emulator.put("jwt-signing-key", "k1")
    emulator.faults.latency(0.2, times=1)
    values = await asyncio.gather(*(client.get_secret("jwt-signing-key") for _ in range(25)))
    assert set(values) == {"k1"}
    assert reads(emulator) == 1


async def test_invalidation_is_per_secret(emulator: KeyVaultEmulator, client: CachedSecretClient) -> None:
    emulator.put("a", "a1")
    emulator.put("b", "b1")
    await client.get("a")
    await client.get("b")
    emulator.put("a", "a2")
    emulator.put("b", "b2")
    client.invalidate("a")
    assert await client.get_secret("a") == "a2"
    assert await client.get_secret("b") == "b1"
    client.clear_cache()
    assert await client.get_secret("b") == "b2"


async def test_a_read_started_before_an_invalidation_does_not_repopulate_the_cache(
    emulator: KeyVaultEmulator, client: CachedSecretClient
) -> None:
    """A ping that arrives while a slow read of the old version is in flight is answered from a new read."""
    emulator.put("s", "old")
    emulator.faults.latency(0.3, times=1)
    slow = asyncio.ensure_future(client.get("s"))
    await asyncio.sleep(0.1)  # the slow read has started (it only stalls longer under load)
    emulator.put("s", "new")
    refreshed = await client.refresh("s")
    assert refreshed.value == "new"
    assert (await slow).value in {"old", "new"}
    assert await client.get_secret("s") == "new"


async def test_missing_and_unreadable_secrets_raise_the_kits_errors(
    emulator: KeyVaultEmulator, client: CachedSecretClient
) -> None:
    with pytest.raises(SecretNotFound):
        await client.get("no-such-secret")
    emulator.put("s", "v")
    emulator.faults.add(403, times=1)
    with pytest.raises(SecretUnavailable) as caught:
        await client.get("s")
    assert "v" not in str(caught.value).split("'")  # names the secret, never the value


async def test_previous_is_the_newest_older_version_still_enabled(
    emulator: KeyVaultEmulator, client: CachedSecretClient
) -> None:
    now = datetime.now(UTC)
    emulator.put("k", "ancient", created_on=now - timedelta(days=3))
    v1 = emulator.put("k", "v1", created_on=now - timedelta(days=2))["version"]
    emulator.put("k", "expired", created_on=now - timedelta(days=1), expires_on=now - timedelta(hours=1))
    emulator.put("k", "v2")
    previous = await client.previous("k")
    assert previous is not None and (previous.version, previous.value) == (v1, "v1")
    assert [v.value for v in await client.enabled_versions("k")] == ["v2", "v1", "ancient"]
    emulator.update("k", v1, enabled=False)
    assert [v.value for v in await client.enabled_versions("k")] == ["v2", "ancient"]


async def test_a_version_is_read_once_the_listing_after_a_rotation_reads_no_value_already_held(
    emulator: KeyVaultEmulator, client: CachedSecretClient
) -> None:
    """A version's value never changes: the previous key, read when it was current, is not read again
    when the ring reloads after a rotation (one listing, no value read), and what is retired is dropped."""
    v1 = emulator.put("k", "v1")["version"]
    await client.get("k")
    emulator.put("k", "v2")
    await client.refresh("k")
    before = emulator.count("GET", "secret_version")
    assert [v.value for v in await client.enabled_versions("k")] == ["v2", "v1"]
    assert emulator.count("GET", "secret_version") == before
    emulator.update("k", v1, enabled=False)  # retired
    assert [v.value for v in await client.enabled_versions("k")] == ["v2"]
    emulator.update("k", v1, enabled=True)  # (a retired value is not kept: enabling it again reads it)
    assert [v.value for v in await client.enabled_versions("k")] == ["v2", "v1"]
    assert emulator.count("GET", "secret_version") == before + 1


# ------------------------------------------------------------------ JWT ring


def raw_key() -> str:
    key = base64.urlsafe_b64encode(secrets.token_bytes(64)).rstrip(b"=").decode()
    leakscan.register([key])
    return key


def claims(lifetime: int = 600) -> dict[str, object]:
    return {"sub": "user-1", "iat": int(time.time()), "exp": int(time.time()) + lifetime}


async def test_raw_ring_verifies_tokens_of_the_previous_key_until_it_is_disabled(
    emulator: KeyVaultEmulator, client: CachedSecretClient
) -> None:
    v1 = emulator.put("jwt-signing-key", raw_key())["version"]
    ring = JwtKeyRing(client, "jwt-signing-key")
    before = await ring.sign(claims())
    emulator.put("jwt-signing-key", raw_key())  # rotation: v1 stays enabled for the overlap
    client.invalidate("jwt-signing-key")
    await ring.reload()
    after = await ring.sign(claims())
    assert (await ring.verify(before))["sub"] == "user-1"
    assert (await ring.verify(after))["sub"] == "user-1"
    with pytest.raises(jwt.InvalidSignatureError):  # the new token is signed with the new key only
        jwt.decode(after, base64.urlsafe_b64decode(emulator.versions("jwt-signing-key")[0]["value"] + "=="),
                   algorithms=["HS256"])
    emulator.update("jwt-signing-key", v1, enabled=False)  # retirement
    await ring.reload()
    with pytest.raises(TokenInvalid):
        await ring.verify(before)
    with pytest.raises(TokenInvalid):
        await ring.verify(jwt.encode(claims(), b"x" * 64, algorithm="HS256"))


async def test_a_retired_previous_key_stops_verifying_within_the_recheck_interval_without_a_reload(
    emulator: KeyVaultEmulator, client: CachedSecretClient
) -> None:
    """A token signed with the previous key is accepted only while a check no older than
    ``recheck_seconds`` found that key enabled: retirement shows within that time, not the ring's TTL."""
    v1 = emulator.put("jwt-signing-key", raw_key())["version"]
    checking = JwtKeyRing(client, "jwt-signing-key", recheck_seconds=0)  # confirms on every such token
    lenient = JwtKeyRing(client, "jwt-signing-key", recheck_seconds=3600)
    before = await checking.sign(claims())
    emulator.put("jwt-signing-key", raw_key())  # rotation: v1 stays enabled for the overlap
    client.invalidate("jwt-signing-key")
    await checking.reload()
    await lenient.reload()
    assert (await checking.verify(before))["sub"] == "user-1"  # still enabled: accepted
    listings = emulator.count("GET", "secret_versions")
    assert (await checking.verify(await checking.sign(claims())))["sub"] == "user-1"
    assert emulator.count("GET", "secret_versions") == listings  # current-key tokens cost nothing
    emulator.update("jwt-signing-key", v1, enabled=False)  # retirement
    with pytest.raises(TokenInvalid):
        await checking.verify(before)
    assert (await lenient.verify(before))["sub"] == "user-1"  # its last check is recent enough
    # Key Vault cannot tell: the keys held keep verifying (no outage of the service).
    emulator.update("jwt-signing-key", v1, enabled=True)
    await checking.reload()
    emulator.faults.add(503, times=None, path_regex=r"/versions$")
    try:
        assert (await checking.verify(before))["sub"] == "user-1"
    finally:
        emulator.faults.clear()


async def test_a_stale_replica_reloads_once_to_verify_a_token_signed_with_a_newer_key(
    emulator: KeyVaultEmulator, client: CachedSecretClient
) -> None:
    emulator.put("jwt-signing-key", raw_key())
    async with CachedSecretClient(emulator.async_secret_client()) as other_client:
        stale = JwtKeyRing(other_client, "jwt-signing-key", reload_interval_seconds=0)
        await stale.sign(claims())  # loads the ring with the current key
        emulator.put("jwt-signing-key", raw_key())
        client.invalidate("jwt-signing-key")
        fresh = JwtKeyRing(client, "jwt-signing-key")
        token = await fresh.sign(claims())
        assert (await stale.verify(token))["sub"] == "user-1"


async def test_jwks_ring_picks_the_key_by_kid_and_exports_only_public_members(
    emulator: KeyVaultEmulator, client: CachedSecretClient
) -> None:
    first = new_private_jwk("RS256")
    emulator.put("jwt-signing-key", json.dumps({"keys": [first]}))
    ring = JwtKeyRing(client, "jwt-signing-key", format="jwks")
    old_token = await ring.sign(claims())
    second = new_private_jwk("ES256")
    emulator.put("jwt-signing-key", json.dumps({"keys": [second, first]}))  # rotation keeps the old key
    await ring.reload()
    client.invalidate("jwt-signing-key")
    await ring.reload()
    new_token = await ring.sign(claims())
    assert jwt.get_unverified_header(new_token)["kid"] == second["kid"]
    assert (await ring.verify(old_token))["sub"] == "user-1"
    assert (await ring.verify(new_token))["sub"] == "user-1"

    published = await ring.public_jwks()
    private_members = {"d", "p", "q", "dp", "dq", "qi", "oth", "k"}
    assert [k["kid"] for k in published["keys"]] == [second["kid"], first["kid"]]
    for jwk in published["keys"]:
        assert not private_members & set(jwk), jwk
    # The export alone verifies both tokens (what an outside verifier does).
    keyset = jwt.PyJWKSet.from_dict(published)
    for token in (old_token, new_token):
        header = jwt.get_unverified_header(token)
        key = keyset[header["kid"]]
        assert jwt.decode(token, key.key, algorithms=[header["alg"]])["sub"] == "user-1"


async def test_from_vault_url_with_a_private_ca_file_keeps_one_connection_alive_across_reads(
    emulator: KeyVaultEmulator,
) -> None:
    """With ``connection_verify=<CA file>`` azure-core builds an SSL context per request and aiohttp pools
    connections per context: every read would open a new TLS connection. The kit shares one context."""
    emulator.put("db-password", "v1")
    before = emulator.open_connections
    async with CachedSecretClient.from_vault_url(emulator.url, credential=AsyncStaticTokenCredential(),
                                                 verify_challenge_resource=False,
                                                 connection_verify=emulator.ca_path) as client:
        for _ in range(5):
            assert (await client.get("db-password", use_cache=False)).value == "v1"
        assert emulator.open_connections - before == 1
