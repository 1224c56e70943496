"""The engine's :class:`Notifier`: consumer pings and the Event Grid event together.

The engine calls ``notify`` once a new version is committed and decides from
the result whether the old credential may be retired. Pings and the publish
are independent, so they run concurrently and a slow topic never delays the
acknowledgements (nor the other way round). Neither half raises for a
consumer or publish failure: a committed rotation must not look failed
because somebody was not told; the result says who was.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Sequence
from typing import Protocol

from shared.domain.ports import Consumer, ConsumerResult, NotifyResult, Prepared, RotatedNotice

log = logging.getLogger("shared.adapters.notifiers")


class Pinger(Protocol):
    def prepare(self, consumers: Sequence[Consumer]) -> Prepared: ...

    async def ping_all(
        self, notice: RotatedNotice, consumers: Sequence[Consumer], prepared: Prepared | None = None
    ) -> list[ConsumerResult]: ...

    async def close(self) -> None: ...


class Publisher(Protocol):
    async def publish(self, notice: RotatedNotice) -> tuple[bool, str | None]: ...

    async def close(self) -> None: ...


class ConsumerNotifier:
    """Implements :class:`shared.domain.ports.Notifier` with pings plus an optional event.

    ``publisher`` is None when no topic is configured; the result's
    ``event_published`` is then None, meaning "not applicable".
    """

    def __init__(self, pinger: Pinger, publisher: Publisher | None = None) -> None:
        self._pinger = pinger
        self._publisher = publisher

    def prepare(self, consumers: Sequence[Consumer]) -> Prepared:
        """Start reading the pings' HMAC keys (see :class:`shared.domain.ports.Notifier`)."""
        return self._pinger.prepare(consumers)

    async def notify(
        self, notice: RotatedNotice, consumers: Sequence[Consumer], prepared: Prepared | None = None,
        *, event_after: Awaitable[None] | None = None,
    ) -> NotifyResult:
        """Ping all consumers and publish the event concurrently (the event once ``event_after`` is done).

        Never raises for their failures."""
        if self._publisher is not None:
            results, (published, event_error) = await asyncio.gather(
                self._pinger.ping_all(notice, consumers, prepared),
                self._publish(self._publisher, notice, event_after),
            )
            event_published: bool | None = published
        else:
            results = await self._pinger.ping_all(notice, consumers, prepared)
            event_published, event_error = None, None
        for result in results:
            _log_consumer(notice, result)
        if event_published is not None:
            _log_event(notice, event_published, event_error)
        return NotifyResult(consumers=tuple(results), event_published=event_published, event_error=event_error)

    async def close(self) -> None:
        """Close the HTTP session and the Event Grid client."""
        try:
            await self._pinger.close()
        finally:
            if self._publisher is not None:
                await self._publisher.close()

    @staticmethod
    async def _publish(publisher: Publisher, notice: RotatedNotice,
                       after: Awaitable[None] | None = None) -> tuple[bool, str | None]:
        if after is not None:
            await after
        try:
            return await publisher.publish(notice)
        except Exception as exc:  # a publisher that breaks its promise still must not fail the rotation
            return False, f"unexpected error ({type(exc).__name__})"


def _log_consumer(notice: RotatedNotice, result: ConsumerResult) -> None:
    """One line per consumer with identifiers and outcome only, never a value."""
    log.log(
        logging.INFO if result.ok else logging.WARNING,
        "rotation ping %s: consumer=%s secret=%s version=%s status=%s attempts=%d acknowledged=%s error=%s",
        "acknowledged" if result.ok else "not acknowledged",
        result.consumer,
        notice.secret_name,
        notice.version,
        result.status,
        result.attempts,
        result.acknowledged_version,
        result.error,
        extra={
            "rotation_id": notice.rotation_id,
            "vault": notice.vault,
            "secret_name": notice.secret_name,
            "consumer": result.consumer,
            "ok": result.ok,
        },
    )


def _log_event(notice: RotatedNotice, published: bool, error: str | None) -> None:
    log.log(
        logging.INFO if published else logging.WARNING,
        "rotation event %s: secret=%s version=%s error=%s",
        "published" if published else "not published",
        notice.secret_name,
        notice.version,
        error,
        extra={"rotation_id": notice.rotation_id, "vault": notice.vault, "secret_name": notice.secret_name},
    )
