"""Entra ID bearer-token validation for the refresh endpoint (``auth: entra`` consumers).

The rotation app's managed identity gets a token for ``<audience>/.default``
and sends it as ``Authorization: Bearer``. This validator checks it as any
Entra access token: RS256 signature against the issuer's published keys,
``exp``/``nbf``, ``iss`` (one of ``issuers``), ``aud`` (one of ``audiences``)
and the caller: ``azp`` (v2 tokens) or ``appid`` (v1) in ``allowed_callers``
and/or a required app role in ``roles``.

Keys come from the issuer's OpenID metadata (``metadata_url``, default
``<first issuer>/.well-known/openid-configuration``) or a ``jwks_url``
given directly, so tests point it at a local issuer. Keys are cached and
re-fetched when a token names an unknown ``kid`` (Entra rolls its keys), at
most once per ``refetch_interval_seconds`` so forged kids cannot make us
hammer the issuer.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Iterable, Mapping
from typing import Any

import aiohttp
import jwt

from keyvault_rotation_kit.errors import CallerNotAllowed, IssuerUnavailable, TokenInvalid

ALGORITHMS = ("RS256",)


class EntraBearerValidator:
    """Validates ``Authorization: Bearer`` tokens; see the module docstring."""

    def __init__(
        self,
        *,
        issuers: Iterable[str],
        audiences: Iterable[str],
        allowed_callers: Iterable[str] = (),
        required_role: str | None = None,
        metadata_url: str | None = None,
        jwks_url: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        refetch_interval_seconds: float = 60.0,
        leeway_seconds: float = 60.0,
    ) -> None:
        self._issuers = [i for i in issuers if i]
        self._audiences = [a for a in audiences if a]
        if not self._issuers or not self._audiences:
            raise ValueError("at least one issuer and one audience are required")
        self._callers = frozenset(allowed_callers)
        self._role = required_role
        if not self._callers and not self._role:
            raise ValueError("name the allowed callers (azp/appid) or a required app role")
        self._metadata_url = metadata_url or self._issuers[0].rstrip("/") + "/.well-known/openid-configuration"
        self._jwks_url = jwks_url
        self._ssl = ssl_context
        self._refetch_interval = refetch_interval_seconds
        self._leeway = leeway_seconds
        self._keys: dict[str, Any] = {}
        self._fetched_at = float("-inf")
        self._lock = asyncio.Lock()

    async def validate(self, authorization: str | None) -> Mapping[str, Any]:
        """The token's claims; raises :class:`TokenInvalid` (401) or :class:`CallerNotAllowed` (403)."""
        if not authorization or not authorization[:7].lower() == "bearer ":
            raise TokenInvalid("no bearer token")
        token = authorization[7:].strip()
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise TokenInvalid("malformed token") from exc
        kid = header.get("kid")
        if not isinstance(kid, str) or header.get("alg") not in ALGORITHMS:
            raise TokenInvalid("token has no kid or an unexpected algorithm")
        key = await self._key(kid)
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=list(ALGORITHMS),
                audience=self._audiences,
                issuer=self._issuers,
                leeway=self._leeway,
                options={"require": ["exp", "iss", "aud"]},
            )
        except jwt.PyJWTError as exc:
            raise TokenInvalid(f"token rejected ({type(exc).__name__})") from exc
        caller = claims.get("azp") or claims.get("appid")
        roles = claims.get("roles") or []
        if self._callers and caller not in self._callers:
            raise CallerNotAllowed("caller is not allowed")
        if self._role and (not isinstance(roles, list) or self._role not in roles):
            raise CallerNotAllowed("caller lacks the required role")
        return claims

    async def _key(self, kid: str) -> Any:
        key = self._keys.get(kid)
        if key is not None:
            return key
        async with self._lock:
            key = self._keys.get(kid)
            if key is None and time.monotonic() - self._fetched_at >= self._refetch_interval:
                await self._fetch()
                key = self._keys.get(kid)
        if key is None:
            raise TokenInvalid("token signed by an unknown key")
        return key

    async def _fetch(self) -> None:
        self._fetched_at = time.monotonic()
        timeout = aiohttp.ClientTimeout(total=10)
        connector = aiohttp.TCPConnector(ssl=self._ssl if self._ssl is not None else True)
        try:
            async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
                jwks_url = self._jwks_url
                if jwks_url is None:
                    async with session.get(self._metadata_url) as response:
                        response.raise_for_status()
                        metadata = await response.json(content_type=None)
                    jwks_url = metadata.get("jwks_uri") if isinstance(metadata, dict) else None
                    if not isinstance(jwks_url, str):
                        raise IssuerUnavailable("issuer metadata has no jwks_uri")
                async with session.get(jwks_url) as response:
                    response.raise_for_status()
                    document = await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise IssuerUnavailable(f"could not fetch the issuer's keys ({type(exc).__name__})") from exc
        keys: dict[str, Any] = {}
        for item in document.get("keys", []) if isinstance(document, dict) else []:
            if not isinstance(item, dict) or not isinstance(item.get("kid"), str):
                continue
            try:
                keys[item["kid"]] = jwt.PyJWK(item, algorithm="RS256").key
            except jwt.PyJWTError:
                continue  # a key type we do not use
        self._keys = keys
