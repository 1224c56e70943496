"""A JWT key ring that follows rotations: sign with the current key, verify with any still-enabled one.

The rotation app keeps the previous signing key usable for the tokens'
lifetime (raw keys: the previous Key Vault version stays enabled until
retirement; JWKS: the new set holds the previous keys too), so tokens issued
just before a rotation keep working. This ring gives verifiers exactly that:

* ``format="raw"``: the secret is a base64url HMAC key (HS256). Signing uses
  the current version; verification tries the current key, then every older
  version that is still enabled and not expired.
* ``format="jwks"``: the secret is a JSON Web Key Set whose first key signs;
  verification picks the key by the token's ``kid`` across the enabled
  versions' sets.

A token that verifies only with a key other than the current signing key is
accepted once the ring has confirmed, within the last ``recheck_seconds``, that
the key is still enabled: retirement disables it, so a retired key stops
verifying within that time rather than the ring's TTL. The check is one listing
of the versions at most every ``recheck_seconds`` while such tokens arrive.
If Key Vault cannot be read then, the keys held keep verifying.

A token that verifies with none of the known keys triggers one re-read of the
ring (another replica may already sign with a key this one has not seen);
concurrent failures share that re-read, and such re-reads happen at most once
per ``reload_interval_seconds`` so forged tokens cannot make it hammer Key Vault.

:meth:`public_jwks` exports the public keys for other verifiers; it is built
from each private key's *public key object*, so no private member can slip
through (nothing is "deleted" from the private JWK).
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jwt
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from keyvault_rotation_kit.errors import SecretUnavailable, TokenInvalid
from keyvault_rotation_kit.secrets import CachedSecretClient

_ALGORITHM_CLASS: dict[str, Any] = {"RS256": RSAAlgorithm, "ES256": ECAlgorithm, "EdDSA": OKPAlgorithm}


@dataclass(frozen=True)
class _Key:
    kid: str | None
    alg: str
    signing: Any  # bytes (HS256) or a private key object
    verifying: Any  # bytes (HS256) or a public key object
    version: str


class JwtKeyRing:
    """Sign and verify JWTs with a rotating key kept in Key Vault; see the module docstring."""

    def __init__(
        self,
        secrets: CachedSecretClient,
        secret_name: str = "jwt-signing-key",  # noqa: S107 - a secret name, not a value
        *,
        format: str = "raw",
        key_encoding: str = "base64url",
        max_versions: int = 3,
        ttl_seconds: float = 300.0,
        reload_interval_seconds: float = 5.0,
        recheck_seconds: float = 30.0,
        leeway_seconds: float = 0.0,
    ) -> None:
        if format not in {"raw", "jwks"}:
            raise ValueError("format must be raw or jwks")
        if key_encoding not in {"base64url", "utf8"}:
            raise ValueError("key_encoding must be base64url or utf8")
        self._secrets = secrets
        self._name = secret_name
        self._format = format
        self._encoding = key_encoding
        self._max_versions = max_versions
        self._ttl = ttl_seconds
        self._reload_interval = reload_interval_seconds
        self._recheck = recheck_seconds
        self._rechecked_at = float("-inf")  # the last attempt to confirm a previous key (loaded or not)
        self._leeway = leeway_seconds
        self._keys: list[_Key] = []
        self._loaded_at = float("-inf")
        self._failure_reload_at = float("-inf")  # reloads caused by unknown tokens, rate-limited
        self._lock = asyncio.Lock()

    async def sign(self, claims: Mapping[str, Any], *, headers: Mapping[str, Any] | None = None) -> str:
        """A token signed with the current key (``kid`` set for JWKS keys)."""
        keys = await self._ring()
        current = keys[0]
        extra = dict(headers or {})
        if current.kid is not None:
            extra["kid"] = current.kid
        return jwt.encode(dict(claims), current.signing, algorithm=current.alg, headers=extra or None)

    async def verify(self, token: str, **decode_options: Any) -> dict[str, Any]:
        """The claims of a token signed by any still-enabled key; raises :class:`TokenInvalid`.

        ``decode_options`` go to ``jwt.decode`` (``audience``, ``issuer``, ``options``).
        """
        keys = await self._ring()
        try:
            claims, key = self._verify(keys, token, decode_options)
        except TokenInvalid:
            pass
        else:
            if key is keys[0] or time.monotonic() - max(self._loaded_at, self._rechecked_at) < self._recheck:
                return claims
            # A previous key, on a ring not confirmed lately: is it still enabled (not retired)?
            async with self._lock:
                if self._keys is keys:  # nobody reloaded since our attempt
                    self._rechecked_at = time.monotonic()
                    try:
                        await self._load()
                    except SecretUnavailable:
                        return claims  # Key Vault cannot tell now: the keys held keep verifying
            return self._verify(self._keys, token, decode_options)[0]
        async with self._lock:
            if self._keys is keys:  # nobody reloaded since our attempt
                if time.monotonic() - self._failure_reload_at < self._reload_interval:
                    raise TokenInvalid("no known key verifies the token")
                self._failure_reload_at = time.monotonic()
                self._secrets.invalidate(self._name)
                await self._load()
        return self._verify(self._keys, token, decode_options)[0]

    async def public_jwks(self) -> dict[str, Any]:
        """``{"keys": [...]}`` of the public keys (JWKS format only; raw HMAC keys have no public part)."""
        if self._format != "jwks":
            raise ValueError("a raw HMAC key ring has no public keys to publish")
        keys = await self._ring()
        published: list[dict[str, Any]] = []
        seen: set[str | None] = set()
        for key in keys:
            if key.kid in seen:
                continue
            seen.add(key.kid)
            jwk = json.loads(_ALGORITHM_CLASS[key.alg].to_jwk(key.verifying))
            jwk.update({"kid": key.kid, "alg": key.alg, "use": "sig"})
            published.append(jwk)
        return {"keys": published}

    async def reload(self) -> None:
        """Re-read the ring now (call from the refresh endpoint's ``on_refreshed``)."""
        async with self._lock:
            await self._load()

    # ------------------------------------------------------------ internals

    def _verify(self, keys: list[_Key], token: str, options: Mapping[str, Any]) -> tuple[dict[str, Any], _Key]:
        """The claims and the key that verified them."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise TokenInvalid("malformed token") from exc
        alg = header.get("alg")
        if self._format == "jwks":
            candidates = [k for k in keys if k.kid is not None and k.kid == header.get("kid") and k.alg == alg]
        else:
            candidates = [k for k in keys if alg == "HS256"]
        expired = False
        for key in candidates:
            try:
                claims: dict[str, Any] = jwt.decode(token, key.verifying, algorithms=[key.alg],
                                                    leeway=self._leeway, **options)
                return claims, key
            except jwt.InvalidSignatureError:
                continue
            except jwt.ExpiredSignatureError:
                expired = True
                break
            except jwt.PyJWTError as exc:
                raise TokenInvalid(f"token rejected ({type(exc).__name__})") from exc
        raise TokenInvalid("token expired" if expired else "no known key verifies the token")

    async def _ring(self) -> list[_Key]:
        if self._keys and time.monotonic() - self._loaded_at < self._ttl:
            return self._keys
        async with self._lock:
            if not self._keys or time.monotonic() - self._loaded_at >= self._ttl:
                await self._load()
        return self._keys

    async def _load(self) -> None:
        versions = await self._secrets.enabled_versions(self._name, limit=self._max_versions)
        keys: list[_Key] = []
        for secret in versions:
            if self._format == "raw":
                raw = _decode_raw(secret.value, self._encoding)
                keys.append(_Key(None, "HS256", raw, raw, secret.version))
            else:
                for jwk in _parse_jwks(secret.value):
                    parsed = jwt.PyJWK(jwk)
                    private = parsed.key
                    public = private.public_key() if hasattr(private, "public_key") else private
                    keys.append(_Key(jwk.get("kid"), jwk.get("alg") or parsed.algorithm_name, private, public,
                                     secret.version))
        if not keys:
            raise TokenInvalid("the key ring is empty")
        self._keys = keys
        self._loaded_at = time.monotonic()


def _decode_raw(value: str, encoding: str) -> bytes:
    if encoding == "utf8":
        return value.encode("utf-8")
    return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))


def _parse_jwks(value: str) -> list[dict[str, Any]]:
    try:
        data = json.loads(value)
        keys = data["keys"]
    except (ValueError, KeyError, TypeError) as exc:
        raise TokenInvalid("the signing key secret is not a JSON Web Key Set") from exc
    return [k for k in keys if isinstance(k, dict)]
