"""The engine's pure decisions: whether to rotate, whether a recorded rotation can progress, when to retire.

Each function takes the moment (``now``) and the settings it depends on as
arguments and does no I/O, so every rule is unit-testable with a fixed clock
(tests/unit/test_decisions.py); :mod:`shared.service.engine` reads the vault, holds the
lease, calls these and carries out what they decide.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import NamedTuple

from shared.domain.errors import ManualOnly, OverlapActive
from shared.domain.model import SecretProperties
from shared.domain.policy import Policy
from shared.domain.ports import Consumer
from shared.domain.record import EVENT_CLOCK_SLACK, RotationRequest, State, Tag, Trigger, parse_time, pending_state
from shared.domain.validation import same_version


class Decision(NamedTuple):
    """Whether a request rotates the current version, and why (the reason callers and logs see)."""

    rotate: bool
    why: str


class Readiness(NamedTuple):
    """Whether the previous credential may be retired now, and why (or until when it waits)."""

    ready: bool
    why: str


@dataclass(frozen=True)
class RetirementRules:
    """What decides when a rotation's previous credential may go, for one secret.

    ``overlap`` is the rotator's own minimum overlap for this secret (a JWT key
    outliving the tokens it signed); ``grace`` and ``retire_when`` come from the
    app settings; ``consumers`` are the secret's consumers with their cache ages."""

    overlap: timedelta
    grace: timedelta
    retire_when: str  # "acknowledged_or_grace" | "grace"
    consumers: Sequence[Consumer] = ()


def decide(
    req: RotationRequest, policy: Policy, current: SecretProperties, now: datetime, lead_days: int,
    *, kind: str | None,
) -> Decision:
    """Does ``req`` rotate the version the vault serves (``current``)?

    ``kind`` is the rotator that would renew the secret (None when none is
    registered: a manual-only secret without a usable generator). Raises
    ManualOnly for a manual-only secret asked without force or emergency, and
    OverlapActive when force would invalidate a credential still in its overlap.
    """
    emergency = req.trigger == Trigger.EMERGENCY
    if policy.manual and not (req.force or emergency):
        raise ManualOnly(f"secret {req.secret_name} is rotated by hand only; use force to rotate it")
    if policy.manual and kind is None:
        raise ManualOnly(
            f"secret {req.secret_name} is rotated by hand only and the operator file names no generator "
            "for it; rotate it at its provider and write the new version"
        )
    is_event = req.trigger in (Trigger.NEAR_EXPIRY, Trigger.EXPIRED)
    if is_event and req.event_version and not same_version(req.event_version, current.version):
        return Decision(False, (
            f"duplicate: the event names version {req.event_version}, "
            f"the vault already serves {current.version}"
        ))
    if req.expected_version and not same_version(req.expected_version, current.version):
        return Decision(False, f"already rotated: the vault serves {current.version}, not {req.expected_version}")
    if pending_state(current.tags) is not None and not emergency:
        if req.force:
            raise OverlapActive(
                f"secret {req.secret_name}: the previous rotation is still in its overlap, and consumers may "
                "still hold the previous credential; force would invalidate it. Wait for its retirement "
                "(see the status route), or use emergency to revoke it at once (leak response)"
            )
        return Decision(False, "the previous rotation is still in its overlap (retirement pending)")
    if emergency:
        return Decision(True, "emergency")
    if req.force:
        return Decision(True, "forced")
    if req.trigger == Trigger.HTTP:
        return Decision(True, "requested")
    if is_event and req.event_version:
        not_due = extended(req, current.expires_on, now, lead_days)
        if not_due is not None:
            return Decision(False, not_due)
        return Decision(True, f"Key Vault reported {req.trigger} for the current version")
    return Decision(*policy.is_due(current, now, lead_days))


def extended(req: RotationRequest, expires_on: datetime | None, now: datetime, lead_days: int) -> str | None:
    """Why an event for the current version no longer calls for a rotation, or None if it does.

    Decided on the vault's current state: an expiry PATCHed later after Key Vault raised the
    event takes the version out of the near-expiry window, and the event is then moot. An
    hour of slack absorbs clock skew between Key Vault and this app.
    """
    if expires_on is None:
        return None  # expiry removed: a managed secret without expiry is due
    due_at = expires_on - timedelta(days=lead_days)
    if due_at - EVENT_CLOCK_SLACK <= now:
        return None
    reported = req.event_expires_on
    if reported is not None and expires_on <= reported + timedelta(seconds=1):
        return (
            f"not due: the current version expires {expires_on.isoformat()}, the event (for expiry "
            f"{reported.isoformat()}) arrived before the near-expiry window (due {due_at.isoformat()})"
        )
    was = f" from {reported.isoformat()}" if reported is not None else ""
    return f"expiry was extended{was} to {expires_on.isoformat()}: not due until {due_at.isoformat()}"


def retire_ready(
    version: SecretProperties, tags: Mapping[str, str], now: datetime, rules: RetirementRules
) -> Readiness:
    """May the credential ``version`` replaced be retired now? ``tags`` are the rotation's record as it
    stands (the acknowledgements just counted may not be written yet)."""
    rotated_at = parse_time(tags.get(Tag.AT)) or version.created_on or now
    overlap = rules.overlap
    if now < rotated_at + overlap:
        return Readiness(False, f"retirement waits for the overlap until {(rotated_at + overlap).isoformat()}")
    n_acked, _, n_total = tags.get(Tag.ACKS, "0/0").partition("/")
    # With no consumer configured nobody can acknowledge: only the grace period retires.
    everyone_acked = n_total.isdigit() and int(n_total) > 0 and n_acked == n_total and not tags.get(Tag.PENDING)
    # Replica safety: a ping reaches one instance. Until each consumer's
    # maximum cache age has passed, some instance may still use the old
    # value, unless its acknowledgement covered every instance.
    cache_all = timedelta(seconds=max((c.max_cache_seconds for c in rules.consumers), default=0))
    cache_unconfirmed = timedelta(
        seconds=max((c.max_cache_seconds for c in rules.consumers if c.acknowledges != "service"), default=0)
    )
    if rules.retire_when == "acknowledged_or_grace" and everyone_acked:
        if now >= rotated_at + cache_unconfirmed:
            return Readiness(True, "every consumer acknowledged")
        until = (rotated_at + cache_unconfirmed).isoformat()
        return Readiness(False, "acknowledged per instance; retirement waits for the consumers' cache age "
                                f"until {until}")
    deadline = rotated_at + max(rules.grace, overlap, cache_all)
    if now >= deadline:
        return Readiness(True, "grace period ended")
    return Readiness(False, f"retirement waits for acknowledgements or the grace period until {deadline.isoformat()}")


def has_work(version: SecretProperties, now: datetime, rules: RetirementRules | None) -> bool:
    """Whether an unfinished rotation recorded on ``version`` can progress now.

    ``rules`` is None when no rotator is registered for the secret: nothing could retire it."""
    tags = version.tags
    state = pending_state(tags)
    if state is None:
        return False
    if state in (State.COMMITTED, State.RETIRED) or tags.get(Tag.PENDING):
        return True
    return rules is not None and retire_ready(version, tags, now, rules).ready
