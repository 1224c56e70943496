"""The rotator port: how one kind of secret is renewed downstream.

The engine owns ordering, locking, the vault write and notification; a rotator
only knows its downstream system. Every method must be safe to call again
after a crash at any point: ``apply`` for a fresh value must converge on the
same downstream state whatever an earlier, abandoned attempt left behind, and
``retire`` must tolerate running twice.

A value is generated either locally (``create`` returns it, ``apply`` makes it
valid downstream) or at the provider (a key slot regenerated through ARM, an
Entra password added through Graph): then ``create`` returns a placeholder and
``apply`` returns an :class:`Applied` carrying the provider's value. Either way
``apply`` may return a small *record* (key slot, key id; never secret
material) that the engine persists on the new version as ``rotator-*`` tags
and hands back in ``RotationContext.record`` to ``retire`` on a later
invocation. A rotator declares how many record entries it may write
(``record_tags``, counted against Key Vault's 15 tags before anything
happens), how long the previous credential must outlive the commit
(``retire_overlap``) and, in its registry line, whether it may serve as a
manual-only secret's ``generator`` (:mod:`shared.rotators.registry`).

Fencing at the write: a rotator reads before it writes (the admin secret, a
connection, the provider's key list), and a worker can pause past its lease
between those reads and the write while a redelivery finishes the rotation; its
write would then hit the credential now in force. So a rotator awaits
``ctx.fence()`` right before each downstream write: the engine renews the lease
and re-reads the served version there, and the paused worker stops. What is
left open is the gap between the fence's answer and the write request — local
code only; closing it would need a fencing token the downstream checks, which
ARM, Graph, PostgreSQL roles and Redis ACLs do not offer.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import ClassVar, Protocol, runtime_checkable

from shared.config.operator_file import Target
from shared.domain.errors import ConfigurationError
from shared.domain.model import NewSecret, RetireResult, SecretVersion
from shared.domain.ports import SecretReader


async def _no_fence() -> None:
    """A context built outside the engine (tests, tools) has no lease to prove."""


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
    record: Mapping[str, str] = field(default_factory=dict)  # this rotation's record, read back from the tags
    expires_on: datetime | None = None  # expiry of the version this rotation writes (a provider credential's end)
    emergency: bool = False  # retire: leak response, the previous credential must stop working now
    # Await right before each downstream write (see the module docstring); the engine binds it.
    fence: Callable[[], Awaitable[None]] = field(default=_no_fence, repr=False, compare=False)


RECORD_KEY_RE = re.compile(r"[a-z][a-z0-9-]{0,30}")
RECORD_VALUE_MAX = 256


@dataclass(frozen=True)
class Applied:
    """What ``apply`` may return besides None.

    ``record``: up to ``record_tags`` entries (keys ``[a-z][a-z0-9-]*``, values
    of at most 256 characters, never secret material), persisted on the new
    version as ``rotator-<key>`` tags. ``new``: the value the provider
    generated, replacing the placeholder ``create`` returned.
    """

    record: Mapping[str, str] = field(default_factory=dict)
    new: NewSecret | None = None


ApplyResult = Applied | Mapping[str, str] | None


class Rotator(Protocol):
    record_tags: ClassVar[int]  # how many ``rotator-*`` tags ``apply`` may record (0: none)
    # True: every downstream write in apply/retire/repair is preceded by ``await ctx.fence()`` (or there is
    # none), so the engine need not fence before calling them. False: the engine fences before the call,
    # which leaves the rotator's own reads between that fence and its write unguarded.
    fences_writes: ClassVar[bool]

    async def create(self, ctx: RotationContext) -> NewSecret:
        """Generate the new value. No side effects outside the process."""

    async def apply(self, ctx: RotationContext, new: NewSecret) -> ApplyResult:
        """Make the new value valid downstream while the current one stays valid.

        May return a record to persist, or an :class:`Applied` with the value
        the provider generated (see the module docstring)."""

    async def verify(self, ctx: RotationContext, new: NewSecret) -> None:
        """Prove the new value works; raise VerificationFailed if not."""

    async def retire(self, ctx: RotationContext, previous: SecretVersion | None) -> RetireResult:
        """Invalidate the previous credential once consumers moved on. ``ctx.current`` is the new version
        and ``ctx.record`` what ``apply`` recorded on it."""

    def retire_overlap(self, options: Mapping[str, str]) -> timedelta:
        """How long the previous credential must stay valid after the commit, whatever the
        acknowledgements say (tokens signed with an old JWT key). The engine never retires earlier."""


class RotatorDefaults:
    """Defaults for the optional parts of the port: no record, no overlap."""

    record_tags: ClassVar[int] = 0
    fences_writes: ClassVar[bool] = False

    def retire_overlap(self, options: Mapping[str, str]) -> timedelta:
        return timedelta(0)


def normalise_applied(result: ApplyResult, new: NewSecret, budget: int) -> tuple[NewSecret, dict[str, str]]:
    """The value to commit and the record to persist, checked: a record is bounded, small and never
    carries the value (a rotator bug must not put secret material in a tag)."""
    if result is None:
        result = {}
    if isinstance(result, Applied):
        record, value = dict(result.record), result.new or new
    else:
        record, value = dict(result), new
    if not value.value:
        raise ConfigurationError("rotator produced no value (a provider-generated value must come back from apply)")
    if len(record) > budget:
        raise ConfigurationError(f"rotator recorded {len(record)} entries, more than the {budget} it declares")
    for key, text in record.items():
        if not isinstance(key, str) or not RECORD_KEY_RE.fullmatch(key):
            raise ConfigurationError("rotator record key is not [a-z][a-z0-9-]{0,30}")
        if not isinstance(text, str) or len(text) > RECORD_VALUE_MAX:
            raise ConfigurationError(f"rotator record {key} must be text of at most {RECORD_VALUE_MAX} characters")
        if value.value and (value.value in text or (len(text) >= 8 and text in value.value)):
            raise ConfigurationError(f"rotator record {key} would carry secret material; refused")
    return value, record


@runtime_checkable
class LivenessRotator(Protocol):
    """Optional capability of a rotator with a downstream system (PostgreSQL, Redis).

    The engine uses it, when a rotator has it, to prove that the value the vault
    serves actually works (after a race, a password changed by hand, a restored
    database) and to make it work again with the declared admin credential.
    """

    async def check(self, ctx: RotationContext, value: str) -> bool:
        """True when ``value`` authenticates downstream (login / AUTH, nothing written).

        False when it is refused; raises DownstreamError when the downstream
        system cannot answer (unreachable), since that proves nothing either way."""

    async def repair(self, ctx: RotationContext, value: str) -> str:
        """Make ``value`` valid downstream again with the admin credential; say what was done.

        Must not invalidate any other credential consumers may be using."""


@runtime_checkable
class SingleCredentialRotator(Protocol):
    """Optional capability: whether ``apply`` invalidates the current value at once.

    Such a rotation has no overlap, so the engine records its intent durably
    in the vault before ``apply`` (see ``shared.service.engine``)."""

    def single_credential(self, ctx: RotationContext) -> bool:
        """True when applying a new value makes the current one stop working."""
