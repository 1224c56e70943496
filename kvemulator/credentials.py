"""Token credentials for talking to the emulator through the real SDK.

The emulator accepts any non-empty bearer token, but ``SecretClient`` still
insists on a credential object and asks it for a token after the challenge.
Using ``DefaultAzureCredential`` there would reach out to Entra ID (or fail
slowly), so tests and ``func start`` against the emulator use these instead.
They never touch the network and hand out the same token for every scope and
tenant. They must never be wired up against a real vault.
"""

from __future__ import annotations

import time
from types import TracebackType
from typing import Any

from azure.core.credentials import AccessToken, AccessTokenInfo, TokenRequestOptions

#: Far enough in the future that the SDK never tries to refresh.
_FAR_FUTURE_SECONDS = 10 * 365 * 24 * 3600


def _expiry() -> int:
    return int(time.time()) + _FAR_FUTURE_SECONDS


class StaticTokenCredential:
    """Synchronous ``TokenCredential`` returning a fixed opaque token."""

    def __init__(self, token: str = "emulator-token") -> None:  # noqa: S107 - not a secret
        if not token:
            raise ValueError("token must be non-empty")
        self._token = token

    def get_token(
        self,
        *scopes: str,
        claims: str | None = None,
        tenant_id: str | None = None,
        enable_cae: bool = False,
        **kwargs: Any,
    ) -> AccessToken:
        return AccessToken(self._token, _expiry())

    def get_token_info(self, *scopes: str, options: TokenRequestOptions | None = None) -> AccessTokenInfo:
        return AccessTokenInfo(self._token, _expiry())

    def close(self) -> None:
        return None

    def __enter__(self) -> StaticTokenCredential:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class AsyncStaticTokenCredential:
    """Asynchronous ``AsyncTokenCredential`` returning a fixed opaque token."""

    def __init__(self, token: str = "emulator-token") -> None:  # noqa: S107 - not a secret
        if not token:
            raise ValueError("token must be non-empty")
        self._token = token

    async def get_token(
        self,
        *scopes: str,
        claims: str | None = None,
        tenant_id: str | None = None,
        enable_cae: bool = False,
        **kwargs: Any,
    ) -> AccessToken:
        return AccessToken(self._token, _expiry())

    async def get_token_info(self, *scopes: str, options: TokenRequestOptions | None = None) -> AccessTokenInfo:
        return AccessTokenInfo(self._token, _expiry())

    async def close(self) -> None:
        return None

    async def __aenter__(self) -> AsyncStaticTokenCredential:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc: BaseException | None = None,
        tb: TracebackType | None = None,
    ) -> None:
        return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"
