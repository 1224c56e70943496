"""A version-aware, cached Key Vault secret client for services that consume rotated secrets.

A drop-in for the services' own clients (``get_secret(name, use_cache)`` and
``clear_cache()``), plus what rotation needs:

* the **version** of what is served (``get``), so a refresh ping can be
  answered with the version in use;
* **per-secret invalidation** (``invalidate``) and a forced re-read
  (``refresh``), so a ping for one secret does not drop every cache;
* **single-flight**: concurrent readers of a cold or invalidated secret share
  one Key Vault read, so a ping or a cache expiry under load does not stampede
  the vault (and get throttled);
* a read that started *before* an invalidation never repopulates the cache
  (a generation counter), so a ping is never answered from a stale read;
* a **TTL** (default one hour) and a **no-cache list** (default
  ``encryption-master-key``) for secrets that must be read every time;
* the **previous still-enabled versions** (``enabled_versions``/``previous``)
  for overlap-aware uses such as verifying JWTs signed just before a rotation.

Values are held in memory only and never appear in ``repr``, logs or errors.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

from keyvault_rotation_kit.errors import SecretNotFound, SecretUnavailable

DEFAULT_TTL_SECONDS = 3600.0
DEFAULT_NO_CACHE = ("encryption-master-key",)


@dataclass(frozen=True)
class SecretValue:
    """One version of a secret as served to the application."""

    name: str
    version: str
    value: str = field(repr=False)
    created_on: datetime | None = None
    read_at: datetime | None = field(default=None, compare=False)  # when this copy was read from Key Vault


class AsyncSecretClientLike(Protocol):
    """The part of ``azure.keyvault.secrets.aio.SecretClient`` the kit uses."""

    def get_secret(self, name: str, version: str | None = None, **kwargs: Any) -> Awaitable[Any]: ...

    def list_properties_of_secret_versions(self, name: str, **kwargs: Any) -> Any: ...

    def close(self) -> Awaitable[None]: ...


@dataclass
class _Entry:
    secret: SecretValue
    fetched_at: float


class CachedSecretClient:
    """Cached, single-flight reads of Key Vault secrets; see the module docstring.

    ``client`` is an ``azure.keyvault.secrets.aio.SecretClient`` (or
    :meth:`from_vault_url` builds one with ``DefaultAzureCredential``). The
    kit owns a client it built and closes it in :meth:`close`.
    """

    def __init__(
        self,
        client: AsyncSecretClientLike,
        *,
        ttl_seconds: float = DEFAULT_TTL_SECONDS,
        no_cache: Iterable[str] = DEFAULT_NO_CACHE,
        clock: Callable[[], float] = time.monotonic,
        owned: Iterable[Any] = (),
    ) -> None:
        if ttl_seconds < 0:
            raise ValueError("ttl_seconds must not be negative")
        self._client = client
        self._ttl = ttl_seconds
        self._no_cache = frozenset(n.lower() for n in no_cache)
        self._clock = clock
        self._cache: dict[str, _Entry] = {}
        self._generation: dict[str, int] = {}
        self._inflight: dict[str, tuple[int, asyncio.Task[SecretValue]]] = {}
        # Values by version: a version's value never changes, so one read is enough (a JWT ring reloading
        # after a rotation finds the previous key here instead of reading it again). Holds per secret the
        # current version, the one current before it and what the last listing found enabled; what is
        # retired is dropped at the next listing or the next change of current version.
        self._versions: dict[tuple[str, str], SecretValue] = {}
        self._current: dict[str, str] = {}
        self._owned = list(owned)
        self.reads = 0  # Key Vault reads made (observability and tests)

    @classmethod
    def from_vault_url(cls, vault_url: str, *, credential: Any = None, **kwargs: Any) -> CachedSecretClient:
        """A client for ``vault_url`` with ``DefaultAzureCredential`` unless ``credential`` is given.

        Keyword arguments ``ttl_seconds``, ``no_cache`` and ``clock`` go to the
        cache; any other goes to the SDK ``SecretClient``.
        """
        from azure.identity.aio import DefaultAzureCredential
        from azure.keyvault.secrets.aio import SecretClient

        own: list[Any] = []
        if credential is None:
            credential = DefaultAzureCredential()
            own.append(credential)
        cache_kwargs = {k: kwargs.pop(k) for k in ("ttl_seconds", "no_cache", "clock") if k in kwargs}
        verify = kwargs.get("connection_verify")
        if isinstance(verify, str) and "transport" not in kwargs:
            # A private CA file: azure-core would build a new SSL context for every request, and aiohttp
            # keeps connections per context, so each read would open a new TLS connection. One context,
            # one pool: a re-read is one round trip on a kept-alive connection.
            from keyvault_rotation_kit._transport import CaFileTransport

            kwargs.pop("connection_verify")
            kwargs["transport"] = CaFileTransport(verify)
        client = SecretClient(vault_url=vault_url, credential=credential, **kwargs)
        return cls(client, owned=own, **cache_kwargs)

    # ------------------------------------------------------------ reading

    async def get_secret(self, name: str, use_cache: bool = True) -> str:
        """The current value (drop-in for the services' ``get_secret(name, use_cache)``)."""
        return (await self.get(name, use_cache=use_cache)).value

    async def get(self, name: str, use_cache: bool = True) -> SecretValue:
        """The current version with its value, from the cache while it is fresh.

        ``use_cache=False`` (and names on the no-cache list) always read Key
        Vault; concurrent callers still share one read.
        """
        key = name.lower()
        cacheable = use_cache and key not in self._no_cache
        if cacheable:
            entry = self._cache.get(key)
            if entry is not None and self._clock() - entry.fetched_at < self._ttl:
                return entry.secret
        if not use_cache:
            # The caller wants a read that starts now: nothing in flight may answer it.
            self._bump(key)
        return await self._read_shared(name, key)

    async def refresh(self, name: str) -> SecretValue:
        """Invalidate ``name`` and read it again now (what a refresh ping does)."""
        return await self.get(name, use_cache=False)

    async def reread_after_failure(self, name: str, failed_version: str) -> SecretValue:
        """A version other than ``failed_version`` if Key Vault has one, reading at most once per burst.

        For the self-healing helpers: when many requests fail authentication
        at once (a missed ping, the old credential retired), the first one
        re-reads, the others join that read or find its result in the cache,
        so a burst of failures costs one Key Vault read, not one each.
        """
        key = name.lower()
        entry = self._cache.get(key)
        if entry is not None and entry.secret.version != failed_version:
            return entry.secret
        inflight = self._inflight.get(key)
        if inflight is not None and inflight[0] == self._generation.get(key, 0):
            joined = await asyncio.shield(inflight[1])
            if joined.version != failed_version:
                return joined
        entry = self._cache.get(key)
        if entry is not None and entry.secret.version != failed_version:
            return entry.secret
        return await self.get(name, use_cache=False)

    def invalidate(self, name: str) -> None:
        """Drop one secret from the cache; reads already in flight will not repopulate it."""
        self._bump(name.lower())

    def clear_cache(self) -> None:
        """Drop every cached secret (drop-in for the services' ``clear_cache()``)."""
        for key in set(self._cache) | set(self._inflight):
            self._bump(key)
        self._cache.clear()
        self._versions.clear()
        self._current.clear()

    def cached_version(self, name: str) -> str | None:
        """The version currently cached for ``name`` (None when nothing is cached)."""
        held = self.cached(name)
        return held.version if held is not None else None

    def cached(self, name: str) -> SecretValue | None:
        """What the cache holds for ``name``, fresh or past its TTL; never reads Key Vault (None if nothing).

        For callers that can act on a possibly stale copy and confirm it with :meth:`get` before relying
        on it (the refresh endpoint verifies a ping with the signing key it holds while it reads it again).
        """
        entry = self._cache.get(name.lower())
        return entry.secret if entry is not None else None

    def fresh(self, name: str) -> bool:
        """Whether the cache holds ``name`` within its TTL (a :meth:`get` now would not read Key Vault)."""
        entry = self._cache.get(name.lower())
        return entry is not None and self._clock() - entry.fetched_at < self._ttl

    async def enabled_versions(self, name: str, *, limit: int = 5) -> list[SecretValue]:
        """The current version first, then older versions still enabled and valid, newest first.

        Disabled, expired and not-yet-valid versions are skipped: what the
        rotation app retired is never offered for use. At most ``limit``
        versions are returned (the overlap of a rotation needs two).
        """
        current = await self.get(name)
        result = [current]
        now = datetime.now(UTC)
        props: list[Any] = []
        try:
            async for item in self._client.list_properties_of_secret_versions(name):
                if item.version == current.version or not item.enabled:
                    continue
                if item.expires_on is not None and item.expires_on <= now:
                    continue
                if item.not_before is not None and item.not_before > now:
                    continue
                props.append(item)
        except ResourceNotFoundError as exc:
            raise SecretNotFound(f"secret {name!r} not found") from exc
        except HttpResponseError as exc:
            raise SecretUnavailable(f"could not list versions of secret {name!r} (HTTP {exc.status_code})") from exc
        epoch = datetime.min.replace(tzinfo=UTC)
        # Newest first; versions created within the same second keep the
        # listing's order reversed (Key Vault lists them oldest first).
        ordered = sorted(enumerate(props), key=lambda ip: (ip[1].created_on or epoch, ip[0]), reverse=True)
        key = name.lower()
        kept = {current.version} | {item.version for _, item in ordered[: max(0, limit - 1)]}
        for held in [k for k in self._versions if k[0] == key and k[1] not in kept]:
            del self._versions[held]  # retired, expired or beyond the limit: not kept in memory
        for _, item in ordered[: max(0, limit - 1)]:
            held_value = self._versions.get((key, item.version))
            if held_value is not None:
                result.append(held_value)  # read before (when it was current): a version never changes
                continue
            try:
                secret = await self._client.get_secret(name, item.version)
            except HttpResponseError:
                continue  # disabled or deleted since it was listed: not usable anyway
            value = SecretValue(name=name, version=item.version, value=secret.value or "",
                                created_on=item.created_on, read_at=datetime.now(UTC))
            if key not in self._no_cache:
                self._versions[(key, item.version)] = value
            result.append(value)
        return result

    async def previous(self, name: str) -> SecretValue | None:
        """The newest still-enabled version older than the current one, if any."""
        versions = await self.enabled_versions(name, limit=2)
        return versions[1] if len(versions) > 1 else None

    async def close(self) -> None:
        for _, task in list(self._inflight.values()):
            task.cancel()
        self._inflight.clear()
        await self._client.close()
        for owned in self._owned:
            await owned.close()

    async def __aenter__(self) -> CachedSecretClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ------------------------------------------------------------ internals

    def _remember_current(self, key: str, value: SecretValue) -> None:
        """Keep the value of a version read as current; of the others, only the one current before it."""
        if key in self._no_cache or not value.version:
            return
        before = self._current.get(key)
        if before != value.version:
            for held in [k for k in self._versions if k[0] == key and k[1] not in (value.version, before)]:
                del self._versions[held]
            self._current[key] = value.version
        self._versions[(key, value.version)] = value

    def _bump(self, key: str) -> None:
        self._generation[key] = self._generation.get(key, 0) + 1
        self._cache.pop(key, None)

    async def _read_shared(self, name: str, key: str) -> SecretValue:
        generation = self._generation.get(key, 0)
        inflight = self._inflight.get(key)
        if inflight is None or inflight[0] != generation:
            task = asyncio.ensure_future(self._read(name, key, generation))
            inflight = (generation, task)
            self._inflight[key] = inflight
        # shield: one caller's cancellation must not cancel the read the others wait for.
        return await asyncio.shield(inflight[1])

    async def _read(self, name: str, key: str, generation: int) -> SecretValue:
        try:
            self.reads += 1
            try:
                secret = await self._client.get_secret(name)
            except ResourceNotFoundError as exc:
                raise SecretNotFound(f"secret {name!r} not found") from exc
            except HttpResponseError as exc:
                raise SecretUnavailable(f"could not read secret {name!r} (HTTP {exc.status_code})") from exc
            except Exception as exc:
                raise SecretUnavailable(f"could not read secret {name!r} ({type(exc).__name__})") from exc
            value = SecretValue(name=name, version=secret.properties.version or "", value=secret.value or "",
                                created_on=secret.properties.created_on, read_at=datetime.now(UTC))
            if self._generation.get(key, 0) == generation and key not in self._no_cache:
                self._cache[key] = _Entry(value, self._clock())
            self._remember_current(key, value)
            return value
        finally:
            current = self._inflight.get(key)
            if current is not None and current[0] == generation:
                del self._inflight[key]
