"""The rotation record: the vocabulary every entry point, view and the engine share.

What a request asks (``RotationRequest``), what an invocation answers
(``Outcome``), and what the engine writes on each version it creates (``Tag``,
``State``) live here, apart from the orchestration in :mod:`shared.service.engine`.
Importing this module costs almost nothing, so the trigger modules name a
request without loading the engine, its rotators and its adapters at cold start.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

MAX_TAGS = 15
EVENT_CLOCK_SLACK = timedelta(hours=1)
TAG_VALUE_MAX = 256


class Step(StrEnum):
    CREATE = "create"
    INTENT = "intent"  # single-credential rotators only: the intent is durable in the vault
    APPLY = "apply"
    # Not a step of its own: a rotator is about to write downstream and asked for the fence (hooks only).
    WRITE = "write"
    VERIFY = "verify"
    COMMIT = "commit"
    NOTIFY = "notify"
    RETIRE = "retire"


class State(StrEnum):
    """Durable state of a rotation, kept in the ``rotated-state`` tag."""

    COMMITTED = "committed"
    NOTIFIED = "notified"
    RETIRED = "retired"


class Trigger(StrEnum):
    NEAR_EXPIRY = "SecretNearExpiry"
    EXPIRED = "SecretExpired"
    HTTP = "http"
    EMERGENCY = "emergency"  # HTTP leak response: the previous credential is revoked at once
    SWEEP = "sweep"


class Tag:
    ID = "rotated-id"
    BY = "rotated-by"
    AT = "rotated-at"
    FROM = "rotated-from"
    TRIGGER = "rotated-trigger"
    STATE = "rotated-state"
    PENDING = "rotated-pending"  # consumers that have not acknowledged yet
    ACKS = "rotated-acks"
    REPLACES = "rotated-replaces"
    REASON = "rotated-reason"
    CALLER = "rotated-caller"
    REPAIRED = "rotated-repaired"  # when the served value was last made valid again by a liveness repair
    INTENT_FOR = "rotated-intent-for"  # on an intent record: the secret it belongs to


INTENT_SUFFIX = "-rotation-intent"
KV_NAME_MAX = 127


def intent_secret_name(name: str) -> str:
    """Name of the companion secret holding a single-credential rotation's intent."""
    base = name.lower()
    if len(base) + len(INTENT_SUFFIX) > KV_NAME_MAX:
        import hashlib

        digest = hashlib.sha256(base.encode()).hexdigest()[:16]
        base = f"{base[: KV_NAME_MAX - len(INTENT_SUFFIX) - 17]}-{digest}"
    return base + INTENT_SUFFIX


ESSENTIAL_RECORD_TAGS = 6  # ID, BY, AT, FROM, TRIGGER, STATE


@dataclass(frozen=True)
class RotationRequest:
    vault: str
    secret_name: str
    trigger: Trigger
    event_version: str | None = None  # the version a Key Vault event names
    event_expires_on: datetime | None = None  # the expiry (EXP) a Key Vault event reports for that version
    expected_version: str | None = None  # HTTP: rotate only if this is still current
    force: bool = False
    dry_run: bool = False
    reason: str | None = None
    caller: str | None = None


@dataclass
class Outcome:
    status: str  # rotated | skipped | planned | completed | repaired
    reason: str
    vault: str
    secret_name: str
    rotation_id: str | None = None
    previous_version: str | None = None
    version: str | None = None
    expires_on: datetime | None = None
    state: str | None = None
    steps: list[str] = field(default_factory=list)
    consumers: list[dict[str, Any]] = field(default_factory=list)
    plan: dict[str, Any] | None = None
    durations_ms: dict[str, float] = field(default_factory=dict)
    liveness: str | None = None  # ok | repaired | unknown: did the served value work downstream

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "status": self.status,
            "reason": self.reason,
            "vault": self.vault,
            "secretName": self.secret_name,
            "rotationId": self.rotation_id,
            "previousVersion": self.previous_version,
            "version": self.version,
            "expiresOn": self.expires_on.isoformat() if self.expires_on else None,
            "state": self.state,
            "steps": self.steps,
            "consumers": self.consumers,
        }
        if self.durations_ms:
            data["durationsMs"] = self.durations_ms
        if self.liveness is not None:
            data["liveness"] = self.liveness
        if self.plan is not None:
            data["plan"] = self.plan
        return data




def utcnow() -> datetime:
    return datetime.now(UTC)


def parse_time(raw: str | None) -> datetime | None:
    if not raw:
        return None
    try:
        return datetime.fromisoformat(raw)
    except ValueError:
        return None


def pending_state(tags: Mapping[str, str]) -> str | None:
    """The durable state of an unfinished rotation recorded on a version, if any."""
    state = tags.get(Tag.STATE)
    if state in (State.COMMITTED, State.NOTIFIED):
        return state
    if state == State.RETIRED and tags.get(Tag.REPLACES):
        return State.RETIRED  # a replacement was written; the replaced version still needs disabling
    return None
