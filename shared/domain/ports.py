"""Ports: the small interfaces the core depends on.

Adapters (Key Vault, blob lease, HTTP pings, Event Grid) implement them; unit
tests may fake them. Nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from shared.domain.model import SecretProperties, SecretVersion


class SecretReader(Protocol):
    async def get(self, name: str, version: str | None = None) -> SecretVersion:
        """The latest (or the given) version with its value. Raises SecretNotFound."""


class SecretStore(SecretReader, Protocol):
    """One Key Vault."""

    vault: str

    async def get_properties(self, name: str) -> SecretProperties:
        """The latest version's properties, read without its value. Raises SecretNotFound."""

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
        """Write a new version (Key Vault always creates one)."""

    async def update_properties(
        self,
        name: str,
        version: str,
        *,
        enabled: bool | None = None,
        tags: Mapping[str, str] | None = None,
        expires_on: datetime | None = None,
    ) -> SecretProperties:
        """Change attributes or tags of one version; the value is immutable."""

    def list_versions(self, name: str) -> AsyncIterator[SecretProperties]:
        """Every version's properties, no values, in no particular order."""

    def list_secrets(self) -> AsyncIterator[SecretProperties]:
        """The latest version's properties of every secret, no values."""


class Lease(Protocol):
    async def ensure(self) -> None:
        """Renew the lease; raise LeaseLost if it is no longer ours."""


class Locker(Protocol):
    def hold(
        self, key: str, abandon_if: Callable[[], Awaitable[bool]] | None = None
    ) -> AbstractAsyncContextManager[Lease]:
        """Hold the exclusive per-secret lease for the duration of the block.

        Waits up to the configured time; raises RotationInProgress if another
        worker keeps it. While waiting, ``abandon_if`` is asked between
        attempts; when it answers True (the holder already did the work) the
        wait ends with LeaseNotNeeded instead of queueing behind it."""


@dataclass(frozen=True)
class Consumer:
    """A service that caches a secret and must be told to re-read it."""

    name: str
    url: str
    auth: str = "none"  # "none" | "entra" | "hmac"
    audience: str | None = None  # for entra
    hmac_secret: str | None = None  # name of the Key Vault secret holding the HMAC key
    hmac_vault: str | None = None  # the allowed vault holding it (None: the notifier's default reader)
    # How long an instance may serve a cached value; retirement waits this long
    # after the commit unless the acknowledgement covers every instance.
    max_cache_seconds: int = 3600
    acknowledges: str = "instance"  # "instance" | "service" (the service fans out and confirms every instance)


@dataclass(frozen=True)
class RotatedNotice:
    """What consumers and subscribers are told. Never holds the value."""

    vault: str
    vault_url: str
    secret_name: str
    version: str
    previous_version: str | None
    rotation_id: str
    rotated_at: datetime
    expires_on: datetime | None
    trigger: str


@dataclass(frozen=True)
class ConsumerResult:
    consumer: str
    ok: bool
    status: int | None = None
    acknowledged_version: str | None = None
    attempts: int = 0
    error: str | None = None


@dataclass(frozen=True)
class NotifyResult:
    consumers: Sequence[ConsumerResult] = field(default_factory=tuple)
    event_published: bool | None = None  # None: no topic configured
    event_error: str | None = None

    @property
    def all_acknowledged(self) -> bool:
        return all(c.ok for c in self.consumers)


class Prepared(Protocol):
    """What a notifier started ahead of a notification (e.g. reading HMAC keys); single use."""

    def close(self) -> None:
        """Drop whatever was started and not used."""


class Notifier(Protocol):
    def prepare(self, consumers: Sequence[Consumer]) -> Prepared:
        """Start, without waiting, what notifying these consumers will need (their HMAC keys), so the
        pings can leave as soon as the new version is committed. Never raises; the result is used by
        at most one ``notify`` and closed by it (or by the caller when it is never used)."""

    async def notify(
        self, notice: RotatedNotice, consumers: Sequence[Consumer], prepared: Prepared | None = None,
        *, event_after: Awaitable[None] | None = None,
    ) -> NotifyResult:
        """Ping every consumer and publish the SecretRotated event. Never raises for a consumer failure.

        ``event_after``: the event waits for it (the pings do not), so the engine can ping while it
        confirms the version is the one served and cancel the call before a superseded version is
        announced to the event's subscribers."""
