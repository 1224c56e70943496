"""Per-secret mutual exclusion with a blob lease in the app's own storage.

Event Grid delivers at least once and may deliver the same event to several
workers at the same moment; the HTTP route and the sweep can race it too. A
lease on one blob per secret makes exactly one of them rotate. Leases are
finite (15 s, the shortest Azure allows) and renewed every 5 s in the
background, so a killed or frozen worker's lease lapses within 15 s and the
next delivery proceeds: no manual unlock, ever. A frozen worker that wakes up
after that does not know it lost the lease; the engine therefore fences every
side effect (``BlobLease.ensure`` plus a fresh read of the served version).
Renewing a lapsed lease fails once another worker acquired the blob, which is
what makes the fence work.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING

from azure.core.exceptions import AzureError, HttpResponseError, ResourceExistsError

from shared.domain.errors import LeaseLost, LeaseNotNeeded, RotationInProgress, TransientError

if TYPE_CHECKING:
    from azure.storage.blob.aio import BlobLeaseClient, BlobServiceClient

log = logging.getLogger(__name__)

LEASE_SECONDS = 15  # the shortest blob lease: a dead worker blocks others for seconds
RENEW_EVERY_SECONDS = 5.0


class BlobLease:
    def __init__(self, lease: BlobLeaseClient, key: str) -> None:
        self._lease = lease
        self._key = key
        self._lost: BaseException | None = None

    async def ensure(self) -> None:
        if self._lost is not None:
            raise LeaseLost(f"lease on {self._key} was lost") from self._lost
        try:
            await self._lease.renew()
        except AzureError as exc:
            self._lost = exc
            raise LeaseLost(f"lease on {self._key} could not be renewed") from exc

    async def renew_forever(self) -> None:
        while True:
            await asyncio.sleep(RENEW_EVERY_SECONDS)
            try:
                await self._lease.renew()
            except AzureError as exc:
                self._lost = exc
                log.warning("rotation lease lost", extra={"lease_key": self._key})
                return


class BlobLocker:
    """``Locker`` port over Azure Blob Storage (Azurite locally)."""

    def __init__(self, service: BlobServiceClient, container: str, wait_seconds: float) -> None:
        self._service = service
        self._container = container
        self._wait = wait_seconds
        self._container_ready = False
        self._known_blobs: set[str] = set()  # lease blobs never get deleted, so existence is cached

    async def _ensure_container(self) -> None:
        if self._container_ready:
            return
        try:
            await self._service.create_container(self._container)
        except ResourceExistsError:
            pass
        except AzureError as exc:
            raise TransientError("lease storage is unavailable") from exc
        self._container_ready = True

    @contextlib.asynccontextmanager
    async def hold(
        self, key: str, abandon_if: Callable[[], Awaitable[bool]] | None = None
    ) -> AsyncIterator[BlobLease]:
        from azure.storage.blob.aio import BlobLeaseClient

        await self._ensure_container()
        blob = self._service.get_blob_client(self._container, key)
        if key not in self._known_blobs:
            try:
                await blob.upload_blob(b"", overwrite=False)
            except ResourceExistsError:
                pass
            except HttpResponseError as exc:
                if exc.status_code != 412:  # a held lease blocks the overwrite check: blob exists
                    raise TransientError("lease storage is unavailable") from exc
            except AzureError as exc:
                raise TransientError("lease storage is unavailable") from exc
            self._known_blobs.add(key)
        lease_client = BlobLeaseClient(blob)
        deadline = time.monotonic() + self._wait
        delay = 0.05
        while True:
            try:
                await lease_client.acquire(lease_duration=LEASE_SECONDS)
                break
            except HttpResponseError as exc:
                if exc.status_code != 409:
                    raise TransientError("lease storage is unavailable") from exc
                if time.monotonic() >= deadline:
                    raise RotationInProgress(f"another rotation of {key} holds the lease") from exc
                await asyncio.sleep(delay)
                delay = min(delay * 1.5, 0.5)
                if abandon_if is not None and await abandon_if():
                    raise LeaseNotNeeded(f"the holder of {key} already did the work") from exc
            except AzureError as exc:
                raise TransientError("lease storage is unavailable") from exc
        lease = BlobLease(lease_client, key)
        renewer = asyncio.create_task(lease.renew_forever())
        try:
            yield lease
        finally:
            renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewer
            try:
                await lease_client.release()
            except AzureError:
                log.info("rotation lease release failed; it lapses by itself", extra={"lease_key": key})
