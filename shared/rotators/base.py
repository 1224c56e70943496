"""The rotator port: how one kind of secret is renewed downstream.

The engine owns ordering, locking, the vault write and notification; a rotator
only knows its downstream system. Every method must be safe to call again
after a crash at any point: ``apply`` for a fresh value must converge on the
same downstream state whatever an earlier, abandoned attempt left behind, and
``retire`` must tolerate running twice.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, runtime_checkable

from shared.model import NewSecret, RetireResult, SecretVersion
from shared.operator_config import Target
from shared.ports import SecretReader


@dataclass(frozen=True)
class RotationContext:
    """Everything a rotator may look at for one rotation.

    ``current`` is the version in force (the one consumers use now); None when
    the secret has no value yet. ``options`` shape the value (length,
    encoding, format), all strings. ``target`` is the downstream system the
    operator file declares for this secret (None for rotators without one):
    the only place a host, role, user or admin secret may come from.
    ``secrets`` reads other secrets of the same vault: the admin secret the
    target names.
    """

    vault: str
    secret_name: str
    rotation_id: str
    now: datetime
    current: SecretVersion | None
    options: Mapping[str, str]
    secrets: SecretReader
    target: Target | None = None


@runtime_checkable
class Rotator(Protocol):
    kind: str

    async def create(self, ctx: RotationContext) -> NewSecret:
        """Generate the new value. No side effects outside the process."""

    async def apply(self, ctx: RotationContext, new: NewSecret) -> None:
        """Make the new value valid downstream while the current one stays valid."""

    async def verify(self, ctx: RotationContext, new: NewSecret) -> None:
        """Prove the new value works; raise VerificationFailed if not."""

    async def retire(self, ctx: RotationContext, previous: SecretVersion | None) -> RetireResult:
        """Invalidate the previous credential once consumers moved on. ``ctx.current`` is the new version.

        A rotator whose old credential must outlive acknowledgements (tokens
        signed with an old JWT key) may also define
        ``retire_overlap(options) -> timedelta``; the engine never retires
        earlier than that after the commit."""
