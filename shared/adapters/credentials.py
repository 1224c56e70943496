"""Credentials the composition root can choose from.

``DefaultAzureCredential`` (managed identity in Azure, developer sign-in
locally) is the default. ``EmulatorCredential`` serves a fixed bearer token to
the project's local Key Vault emulator, which accepts any token; it is only
selected by ``ROTATION_VAULT_CREDENTIAL=emulator`` and never by default.
"""

from __future__ import annotations

import time
from typing import Any

from azure.core.credentials import AccessToken


class EmulatorCredential:
    """An async token credential with a constant, meaningless token."""

    async def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return AccessToken("local-emulator-token", int(time.time()) + 3600)

    async def close(self) -> None:
        return None

    async def __aenter__(self) -> EmulatorCredential:
        return self

    async def __aexit__(self, *args: object) -> None:
        return None
