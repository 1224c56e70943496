"""Rotation policy: which secrets are managed, by which rotator, how often.

Built-in defaults cover the standard inventory; secret tags onboard a new
secret or override a default without a code change (documented in README):

- ``rotation-policy``: rotator kind (``random``, ``jwt``, ``postgres``,
  ``redis``) or ``manual`` (listed, never rotated automatically).
- ``rotation-interval-days``: days between rotations.
- ``rotation-validity-days``: lifetime of a new version (default interval +
  lead). Must exceed the lead time, or the new version would be born inside
  the near-expiry window and fire a new event at once: a rotation loop.
- ``rotation-consumers``: consumer names to notify (see shared.consumers).
- any other ``rotation-<option>`` tag: an option of the rotator.

Tags named ``rotated-*`` are the record the engine writes on each version it
creates; they are never read as policy.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from shared.errors import PolicyError
from shared.model import SecretProperties

OPTION_PREFIX = "rotation-"
RECORD_PREFIX = "rotated-"
POLICY_TAG = "rotation-policy"
INTERVAL_TAG = "rotation-interval-days"
VALIDITY_TAG = "rotation-validity-days"
CONSUMERS_TAG = "rotation-consumers"
MANUAL = "manual"
KNOWN_KINDS = frozenset({"random", "jwt", "postgres", "redis", MANUAL})
MAX_INTERVAL_DAYS = 3650

# name -> (kind, interval days, default options)
STANDARD_INVENTORY: Mapping[str, tuple[str, int | None, Mapping[str, str]]] = {
    "jwt-signing-key": ("jwt", 30, {"format": "raw"}),
    "database-connection-string": ("postgres", 90, {"admin-secret": "postgres-admin-connection-string"}),
    "redis-password": ("redis", 90, {"admin-secret": "redis-admin-connection-string"}),
    "session-encryption-key": ("random", 90, {"encoding": "base64", "length": "32"}),
    "encryption-master-key": (MANUAL, None, {}),
    "openai-api-key": (MANUAL, None, {}),
    "azure-openai-api-key": (MANUAL, None, {}),
    "foundry-api-key": (MANUAL, None, {}),
    "api-gateway-client-secret": (MANUAL, None, {}),
}


@dataclass(frozen=True)
class Policy:
    secret_name: str
    kind: str
    interval_days: int | None
    validity_days: int | None
    options: Mapping[str, str] = field(default_factory=dict)
    source: str = "default"
    consumers_tag: str | None = None

    @property
    def manual(self) -> bool:
        return self.kind == MANUAL

    def interval(self) -> timedelta:
        return timedelta(days=self.interval_days or 0)

    def new_expiry(self, now: datetime) -> datetime:
        """Expiry of the version a rotation writes now: the next near-expiry
        event then lands one interval later."""
        if self.validity_days is None:
            raise PolicyError(f"secret {self.secret_name} has no rotation interval")
        return now + timedelta(days=self.validity_days)

    def next_rotation(self, props: SecretProperties, lead_days: int) -> datetime | None:
        """When the current version becomes due: lead time before its expiry."""
        if self.manual:
            return None
        if props.expires_on is None:
            return props.created_on  # a managed secret without expiry is due now
        return props.expires_on - timedelta(days=lead_days)

    def is_due(self, props: SecretProperties, now: datetime, lead_days: int) -> tuple[bool, str]:
        if self.manual:
            return False, "manual-only secret"
        if props.expires_on is None:
            return True, "managed secret has no expiry"
        if props.expires_on <= now:
            return True, "current version has expired"
        due_at = props.expires_on - timedelta(days=lead_days)
        if due_at <= now:
            return True, "current version is inside the near-expiry window"
        return False, f"not due until {due_at.isoformat()}"


def _parse_days(raw: str, tag: str, name: str) -> int:
    try:
        days = int(raw.strip())
    except ValueError as exc:
        raise PolicyError(f"secret {name}: tag {tag} must be a whole number of days") from exc
    if days < 1 or days > MAX_INTERVAL_DAYS:
        raise PolicyError(f"secret {name}: tag {tag} must be between 1 and {MAX_INTERVAL_DAYS} days")
    return days


def resolve_policy(name: str, tags: Mapping[str, str] | None, lead_days: int) -> Policy | None:
    """The policy for a secret, or None when it is not managed at all.

    Raises PolicyError for a policy that cannot work (unknown kind, bad
    numbers, or a validity inside the lead window)."""
    tags = tags or {}
    default = STANDARD_INVENTORY.get(name)
    tag_kind = tags.get(POLICY_TAG, "").strip().lower() or None
    if default is None and tag_kind is None:
        return None
    kind = tag_kind or (default[0] if default else MANUAL)
    if kind not in KNOWN_KINDS:
        raise PolicyError(f"secret {name}: unknown rotation policy {kind!r}")
    options: dict[str, str] = dict(default[2]) if default else {}
    for key, value in tags.items():
        if key.startswith(OPTION_PREFIX) and key not in {POLICY_TAG, INTERVAL_TAG, VALIDITY_TAG, CONSUMERS_TAG}:
            options[key[len(OPTION_PREFIX) :]] = value
    source = "default" if default and not any(k.startswith(OPTION_PREFIX) for k in tags) else (
        "default+tags" if default else "tags"
    )
    if kind == MANUAL:
        return Policy(name, kind, None, None, options, source, tags.get(CONSUMERS_TAG))
    interval = default[1] if default and default[0] == kind and default[1] else None
    if INTERVAL_TAG in tags:
        interval = _parse_days(tags[INTERVAL_TAG], INTERVAL_TAG, name)
    if interval is None:
        raise PolicyError(f"secret {name}: tag {INTERVAL_TAG} is required for policy {kind}")
    validity = interval + lead_days
    if VALIDITY_TAG in tags:
        validity = _parse_days(tags[VALIDITY_TAG], VALIDITY_TAG, name)
    if validity <= lead_days:
        raise PolicyError(
            f"secret {name}: a new version valid for {validity} days would expire inside the "
            f"{lead_days}-day near-expiry window and trigger a rotation loop; "
            f"validity must exceed the lead time"
        )
    return Policy(name, kind, interval, validity, options, source, tags.get(CONSUMERS_TAG))


def carried_tags(tags: Mapping[str, str]) -> dict[str, str]:
    """Tags a new version inherits: policy and user tags, not the old record."""
    return {k: v for k, v in tags.items() if not k.startswith(RECORD_PREFIX)}
