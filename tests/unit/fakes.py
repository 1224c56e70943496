"""In-memory fakes of the project's own ports (never of an SDK).

Each subclasses the Protocol it stands in for, so mypy checks it against the port
and a port change that the fake does not follow fails the type check, not a test run."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from shared.domain.errors import SecretNotFound
from shared.domain.model import SecretProperties, SecretVersion
from shared.domain.ports import (
    Consumer,
    ConsumerResult,
    Lease,
    Locker,
    Notifier,
    NotifyResult,
    Prepared,
    RotatedNotice,
    SecretStore,
)


class FakeStore(SecretStore):
    def __init__(self, vault: str = "kv-test") -> None:
        self.vault = vault
        self.versions: dict[str, list[SecretVersion]] = {}
        self.writes = 0

    def seed(self, name: str, value: str, *, tags: Mapping[str, str] | None = None,
             expires_on: datetime | None = None) -> SecretVersion:
        props = SecretProperties(name=name, version=uuid.uuid4().hex, created_on=datetime.now(UTC),
                                 expires_on=expires_on, tags=dict(tags or {}))
        version = SecretVersion(props, value)
        self.versions.setdefault(name, []).append(version)
        return version

    async def get(self, name: str, version: str | None = None) -> SecretVersion:
        versions = self.versions.get(name)
        if not versions:
            raise SecretNotFound("not found")
        if version is None:
            found = versions[-1]
        else:
            matches = [v for v in versions if v.version == version]
            if not matches:
                raise SecretNotFound("not found")
            found = matches[0]
        if not found.properties.enabled:
            raise SecretNotFound("disabled")
        return found

    async def get_properties(self, name: str) -> SecretProperties:
        return (await self.get(name)).properties

    async def set(self, name: str, value: str, *, content_type: str | None, tags: Mapping[str, str],
                  not_before: datetime | None, expires_on: datetime | None) -> SecretProperties:
        self.writes += 1
        props = SecretProperties(name=name, version=uuid.uuid4().hex, created_on=datetime.now(UTC),
                                 not_before=not_before, expires_on=expires_on, content_type=content_type,
                                 tags=dict(tags))
        self.versions.setdefault(name, []).append(SecretVersion(props, value))
        return props

    async def update_properties(self, name: str, version: str, *, enabled: bool | None = None,
                                tags: Mapping[str, str] | None = None,
                                expires_on: datetime | None = None) -> SecretProperties:
        versions = self.versions[name]
        for i, v in enumerate(versions):
            if v.version == version:
                p = v.properties
                newp = SecretProperties(
                    name=p.name, version=p.version, enabled=p.enabled if enabled is None else enabled,
                    created_on=p.created_on, not_before=p.not_before,
                    expires_on=p.expires_on if expires_on is None else expires_on,
                    content_type=p.content_type, tags=dict(p.tags if tags is None else tags))
                versions[i] = SecretVersion(newp, v.value)
                return newp
        raise SecretNotFound("not found")

    async def list_versions(self, name: str) -> AsyncIterator[SecretProperties]:
        for v in self.versions.get(name, []):
            yield v.properties

    async def list_secrets(self) -> AsyncIterator[SecretProperties]:
        for versions in self.versions.values():
            yield versions[-1].properties

    def all_values(self, name: str) -> list[str]:
        return [v.value for v in self.versions.get(name, [])]


class FakeLease(Lease):
    def __init__(self) -> None:
        self.lost = False

    async def ensure(self) -> None:
        if self.lost:
            from shared.domain.errors import LeaseLost

            raise LeaseLost("lost")


class FakeLocker(Locker):
    def __init__(self) -> None:
        self._locks: dict[str, asyncio.Lock] = {}
        self.lease = FakeLease()

    @contextlib.asynccontextmanager
    async def hold(self, key: str,
                   abandon_if: Callable[[], Awaitable[bool]] | None = None) -> AsyncIterator[FakeLease]:
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            yield self.lease


class _NothingPrepared(Prepared):
    def close(self) -> None:
        return None


class RecordingNotifier(Notifier):
    def __init__(self, ok: bool | Sequence[bool] = True) -> None:
        self.notices: list[RotatedNotice] = []
        self.ok = ok

    def prepare(self, consumers: Sequence[Consumer]) -> _NothingPrepared:
        return _NothingPrepared()

    async def notify(self, notice: RotatedNotice, consumers: Sequence[Consumer],
                     prepared: Prepared | None = None, *, event_after: Awaitable[None] | None = None) -> NotifyResult:
        self.notices.append(notice)
        oks: Sequence[Any] = self.ok if isinstance(self.ok, Sequence) else [self.ok] * len(consumers)
        return NotifyResult(consumers=tuple(
            ConsumerResult(consumer=c.name, ok=bool(o), status=200 if o else 503, attempts=1)
            for c, o in zip(consumers, oks, strict=False)))
