"""JWT signing keys, with an overlap so tokens signed just before a rotation
still verify afterwards.

Two formats (option ``format``):

- ``raw`` (default; the bridge service signs with a shared key): a random
  HMAC key of at least 256 bits (option ``bits``, default 512), base64url. The
  previous version stays enabled for at least the maximum token lifetime;
  retirement then disables it.
- ``jwks``: the value is a JSON Web Key Set whose first key signs and whose
  other keys only verify. A rotation puts a new key first and keeps the
  previous ones; retirement (after the overlap) drops every key but the
  signing one. Algorithms (option ``alg``): RS256 (default), ES256, EdDSA.
  Each key's ``kid`` is its RFC 7638 thumbprint.

Verify signs a token with the new key and checks it with the published form.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from shared.domain.errors import ConfigurationError, VerificationFailed
from shared.domain.model import NewSecret, RetireResult, SecretVersion
from shared.rotators.base import RotationContext, RotatorDefaults

RAW_CONTENT_TYPE = "application/octet-stream; encoding=base64url"
JWKS_CONTENT_TYPE = "application/jwk-set+json"
ALGORITHMS = ("RS256", "ES256", "EdDSA")
MIN_BITS = 256


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def thumbprint(jwk: dict[str, Any]) -> str:
    """RFC 7638: SHA-256 over the required public members, sorted, no spaces."""
    required = {"RSA": ("e", "kty", "n"), "EC": ("crv", "kty", "x", "y"), "OKP": ("crv", "kty", "x")}[jwk["kty"]]
    canonical = json.dumps({k: jwk[k] for k in required}, separators=(",", ":"), sort_keys=True)
    return b64url(hashlib.sha256(canonical.encode()).digest())


def new_private_jwk(alg: str) -> dict[str, Any]:
    key: Any
    if alg == "RS256":
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        jwk = RSAAlgorithm.to_jwk(key, as_dict=True)
    elif alg == "ES256":
        key = ec.generate_private_key(ec.SECP256R1())
        jwk = ECAlgorithm.to_jwk(key, as_dict=True)
    elif alg == "EdDSA":
        key = ed25519.Ed25519PrivateKey.generate()
        jwk = OKPAlgorithm.to_jwk(key, as_dict=True)
    else:
        raise ConfigurationError(f"option alg must be one of {ALGORITHMS}")
    jwk = dict(jwk)
    jwk.update({"alg": alg, "use": "sig", "kid": thumbprint(jwk)})
    return jwk


def public_jwk(jwk: dict[str, Any]) -> dict[str, Any]:
    private_members = {"d", "p", "q", "dp", "dq", "qi", "oth", "k"}
    return {k: v for k, v in jwk.items() if k not in private_members}


def parse_jwks(value: str) -> list[dict[str, Any]]:
    try:
        data = json.loads(value)
        keys = data["keys"]
        if not isinstance(keys, list) or not all(isinstance(k, dict) and "kid" in k for k in keys):
            raise ValueError("keys")
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigurationError("current value is not a JSON Web Key Set with kids") from exc
    return keys


def _dump(keys: list[dict[str, Any]]) -> str:
    return json.dumps({"keys": keys}, separators=(",", ":"))


class JwtRotator(RotatorDefaults):
    fences_writes = True  # nothing is written downstream

    def __init__(self, max_token_lifetime: timedelta) -> None:
        self.max_token_lifetime = max_token_lifetime

    def retire_overlap(self, options: Mapping[str, str]) -> timedelta:
        """Tokens signed with the old key must keep verifying this long."""
        return self.max_token_lifetime

    @staticmethod
    def _format(ctx: RotationContext) -> str:
        fmt = ctx.options.get("format", "raw")
        if fmt not in {"raw", "jwks"}:
            raise ConfigurationError("option format must be raw or jwks")
        return fmt

    async def create(self, ctx: RotationContext) -> NewSecret:
        if self._format(ctx) == "raw":
            try:
                bits = int(ctx.options.get("bits", "512"))
            except ValueError as exc:
                raise ConfigurationError("option bits must be a whole number") from exc
            if bits < MIN_BITS or bits % 8:
                raise ConfigurationError(f"option bits must be a multiple of 8 and at least {MIN_BITS}")
            return NewSecret(value=b64url(secrets.token_bytes(bits // 8)), content_type=RAW_CONTENT_TYPE,
                             state={"format": "raw", "bits": bits})
        alg = ctx.options.get("alg", "RS256")
        previous: list[dict[str, Any]] = []
        if ctx.current is not None and ctx.current.value:
            previous = parse_jwks(ctx.current.value)
        key = new_private_jwk(alg)
        return NewSecret(value=_dump([key, *previous]), content_type=JWKS_CONTENT_TYPE,
                         state={"format": "jwks", "alg": alg, "kid": key["kid"]})

    async def apply(self, ctx: RotationContext, new: NewSecret) -> None:
        return None  # consumers pick the key up from the vault; nothing else holds it

    async def verify(self, ctx: RotationContext, new: NewSecret) -> None:
        claims = {"sub": "rotation-verify", "iat": int(time.time()), "exp": int(time.time()) + 60}
        try:
            if self._format(ctx) == "raw":
                key = b64url_decode(new.value)
                if len(key) * 8 < MIN_BITS:
                    raise VerificationFailed("new key is shorter than 256 bits")
                token = jwt.encode(claims, key, algorithm="HS256")
                jwt.decode(token, key, algorithms=["HS256"])
            else:
                keys = parse_jwks(new.value)
                if len({k["kid"] for k in keys}) != len(keys):
                    raise VerificationFailed("key set has duplicate kids")
                signer = jwt.PyJWK(keys[0])
                token = jwt.encode(claims, signer.key, algorithm=keys[0]["alg"], headers={"kid": keys[0]["kid"]})
                verifier = jwt.PyJWK(public_jwk(keys[0]))
                jwt.decode(token, verifier.key, algorithms=[keys[0]["alg"]])
        except jwt.PyJWTError as exc:
            raise VerificationFailed("a token signed with the new key does not verify") from exc

    async def retire(self, ctx: RotationContext, previous: SecretVersion | None) -> RetireResult:
        if self._format(ctx) == "raw":
            return RetireResult(done=True, detail="previous key version disabled", disable_previous=True)
        if ctx.current is None:
            return RetireResult(done=True)
        keys = parse_jwks(ctx.current.value)
        if len(keys) <= 1:
            return RetireResult(done=True, detail="no previous keys in the set")
        replacement = NewSecret(value=_dump(keys[:1]), content_type=JWKS_CONTENT_TYPE,
                                state={"format": "jwks", "dropped": len(keys) - 1})
        return RetireResult(done=True, detail=f"dropped {len(keys) - 1} old key(s)", replacement=replacement,
                            disable_previous=True)
