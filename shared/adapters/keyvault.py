"""Key Vault adapter: the ``SecretStore`` port over the async SDK.

All Azure SDK errors stop here and become project errors, so the engine and
the triggers never see an SDK type. Throttling (429) and server errors (5xx)
are retried by the SDK's own retry policy, which honours ``Retry-After``; we
only bound it (``ROTATION_VAULT_MAX_RETRIES``). When retries run out the
error becomes ``VaultUnavailable`` and the trigger lets the caller retry later.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)

from shared.domain.errors import InvalidRequest, RotationError, SecretNotFound, VaultUnavailable
from shared.domain.model import SecretProperties, SecretVersion

if TYPE_CHECKING:
    from azure.keyvault.secrets import SecretProperties as SdkProperties
    from azure.keyvault.secrets.aio import SecretClient

log = logging.getLogger(__name__)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _inner_code(exc: HttpResponseError) -> str | None:
    error = getattr(exc, "error", None)
    inner = getattr(error, "innererror", None)
    if isinstance(inner, Mapping):
        code = inner.get("code")
        return str(code) if code else None
    return None


@contextmanager
def translate_errors(operation: str, name: str | None = None) -> Iterator[None]:
    """Map SDK exceptions to the project's tree; messages name the operation, never a value."""
    what = f"{operation} {name}" if name else operation
    try:
        yield
    except RotationError:
        raise
    except ResourceNotFoundError as exc:
        raise SecretNotFound(f"Key Vault: {what}: not found") from exc
    except ClientAuthenticationError as exc:
        raise VaultUnavailable(f"Key Vault: {what}: authentication failed") from exc
    except HttpResponseError as exc:
        status = exc.status_code or 0
        if status == 403 and _inner_code(exc) == "SecretDisabled":
            raise SecretNotFound(f"Key Vault: {what}: version is disabled") from exc
        if status == 429 or status >= 500:
            raise VaultUnavailable(f"Key Vault: {what}: service answered {status} after retries") from exc
        if status == 403:
            raise VaultUnavailable(f"Key Vault: {what}: forbidden (check the app's role assignment)") from exc
        if status == 400:
            raise InvalidRequest(f"Key Vault: {what}: rejected as a bad request") from exc
        raise VaultUnavailable(f"Key Vault: {what}: service answered {status}") from exc
    except (ServiceRequestError, ServiceResponseError) as exc:
        raise VaultUnavailable(f"Key Vault: {what}: unreachable") from exc


def _props(p: SdkProperties) -> SecretProperties:
    return SecretProperties(
        name=p.name or "",
        version=p.version or "",
        enabled=bool(p.enabled),
        created_on=p.created_on,
        updated_on=p.updated_on,
        not_before=p.not_before,
        expires_on=p.expires_on,
        content_type=p.content_type,
        tags=dict(p.tags or {}),
    )


class KeyVaultStore:
    """One vault, one reused async SecretClient."""

    def __init__(self, vault: str, client: SecretClient) -> None:
        self.vault = vault
        self._client = client

    async def get(self, name: str, version: str | None = None) -> SecretVersion:
        with translate_errors("get", name):
            secret = await self._client.get_secret(name, version)
        return SecretVersion(properties=_props(secret.properties), value=secret.value or "")

    async def get_properties(self, name: str) -> SecretProperties:
        """The latest version's properties without reading its value.

        Key Vault has no properties-only read of the latest version, so the
        versions are listed and the newest taken. ``created`` has one-second
        resolution: if two versions share the newest second, the latest
        version is read (and its value dropped here) rather than guessed."""
        newest: list[SecretProperties] = []
        async for props in self.list_versions(name):
            if not newest or (props.created_on or _EPOCH) > (newest[0].created_on or _EPOCH):
                newest = [props]
            elif (props.created_on or _EPOCH) == (newest[0].created_on or _EPOCH):
                newest.append(props)
        if not newest:
            raise SecretNotFound(f"Key Vault: get {name}: not found")
        if len(newest) == 1:
            return newest[0]
        return (await self.get(name)).properties

    async def set(
        self,
        name: str,
        value: str,
        *,
        content_type: str | None,
        tags: Mapping[str, str],
        not_before: datetime | None,
        expires_on: datetime | None,
    ) -> SecretProperties:
        with translate_errors("set", name):
            secret = await self._client.set_secret(
                name,
                value,
                content_type=content_type,
                tags=dict(tags),
                not_before=not_before,
                expires_on=expires_on,
                enabled=True,
            )
        return _props(secret.properties)

    async def update_properties(
        self,
        name: str,
        version: str,
        *,
        enabled: bool | None = None,
        tags: Mapping[str, str] | None = None,
        expires_on: datetime | None = None,
    ) -> SecretProperties:
        kwargs: dict[str, Any] = {}
        if enabled is not None:
            kwargs["enabled"] = enabled
        if tags is not None:
            kwargs["tags"] = dict(tags)
        if expires_on is not None:
            kwargs["expires_on"] = expires_on
        with translate_errors("update", name):
            props = await self._client.update_secret_properties(name, version, **kwargs)
        return _props(props)

    async def list_versions(self, name: str) -> AsyncIterator[SecretProperties]:
        with translate_errors("list versions", name):
            async for p in self._client.list_properties_of_secret_versions(name):
                yield _props(p)

    async def list_secrets(self) -> AsyncIterator[SecretProperties]:
        with translate_errors("list secrets"):
            async for p in self._client.list_properties_of_secrets():
                yield _props(p)

    async def close(self) -> None:
        await self._client.close()
