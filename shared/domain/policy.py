"""Rotation policy: the operator file's declaration, narrowed by what tags may say.

Who can write a secret's tags is not who deploys the app: a team that may
manage one secret can write them. So a tag is data, bounded by the operator
file (:mod:`shared.config.operator_file`), never an instruction that widens what
the app touches:

- a secret the file lists gets its rotator, target, options and generator
  from the file; its tags may only move the interval and validity within
  ``tagLimits``, name consumers from the catalog (``rotation-consumers``), and
  repeat the file's rotator (``rotation-policy``);
- a secret the file does not list is managed only if its name matches a
  ``tagManaged`` pattern and its tags ask for one of that pattern's rotators
  (``random``/``jwt``, which touch nothing outside the vault). It must name
  an interval; it may shape the value (length, encoding, alphabet, format,
  alg, bits), and the random rotator refuses anything under 128 bits;
- admin secrets are never managed by tags, whatever their tags say;
- any other ``rotation-*`` tag is refused: nothing is changed and the error
  says which tag, since it may be an attack.

Tags named ``rotated-*`` are the record the engine writes on each version it
creates; they are never read as policy.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from shared.config.operator_file import (
    KEY_VAULT_NEAR_EXPIRY_DAYS,
    MANUAL,
    TAG_OPTIONS,
    Bounds,
    OperatorConfig,
    SecretEntry,
    TagManaged,
    Target,
)
from shared.domain.errors import PolicyError, TagRefused
from shared.domain.model import SecretProperties

log = logging.getLogger(__name__)

OPTION_PREFIX = "rotation-"
RECORD_PREFIX = "rotated-"
ROTATOR_RECORD_PREFIX = "rotator-"  # what a rotator's apply recorded (key slot, key id); never policy
POLICY_TAG = "rotation-policy"
INTERVAL_TAG = "rotation-interval-days"
VALIDITY_TAG = "rotation-validity-days"
CONSUMERS_TAG = "rotation-consumers"
COMMON_TAGS = frozenset({POLICY_TAG, INTERVAL_TAG, VALIDITY_TAG, CONSUMERS_TAG})


@dataclass(frozen=True)
class Policy:
    secret_name: str
    kind: str
    interval_days: int | None
    validity_days: int | None
    options: Mapping[str, str] = field(default_factory=dict)
    source: str = "operator-file"  # "operator-file", "operator-file+tags" or "tags"
    consumers_tag: str | None = None
    target: Target | None = None
    generator: str | None = None  # manual-only: the rotator ``force`` may use

    @property
    def manual(self) -> bool:
        return self.kind == MANUAL

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


def _rotation_tags(tags: Mapping[str, str]) -> dict[str, str]:
    """``rotation-*`` tags by lower-cased name: ``Rotation-Nodes`` is no way around the rules."""
    return {k.strip().lower(): v for k, v in tags.items() if k.strip().lower().startswith(OPTION_PREFIX)}


def _refuse(name: str, tag: str, why: str) -> TagRefused:
    log.warning("secret %s: tag %s refused: %s", name, tag, why, extra={"secret": name, "tag": tag})
    return TagRefused(f"secret {name}: tag {tag} is refused: {why}")


def _days(raw: str, tag: str, name: str, bounds: Bounds) -> int:
    try:
        days = int(raw.strip())
    except ValueError as exc:
        raise PolicyError(f"secret {name}: tag {tag} must be a whole number of days") from exc
    if not bounds.minimum <= days <= bounds.maximum:
        raise _refuse(name, tag, f"must be between {bounds.minimum} and {bounds.maximum} days (operator file)")
    return days


def _validity(name: str, interval: int, declared: int | None, lead_days: int) -> int:
    validity = declared if declared is not None else interval + max(lead_days, KEY_VAULT_NEAR_EXPIRY_DAYS)
    window = max(lead_days, KEY_VAULT_NEAR_EXPIRY_DAYS)
    if validity <= window:
        raise PolicyError(
            f"secret {name}: a new version valid for {validity} days would expire inside the "
            f"{window}-day near-expiry window (Key Vault raises SecretNearExpiry {KEY_VAULT_NEAR_EXPIRY_DAYS} "
            "days before expiry) and trigger a rotation loop; validity must exceed it"
        )
    return validity


def resolve_policy(
    name: str, tags: Mapping[str, str] | None, operator: OperatorConfig, lead_days: int
) -> Policy | None:
    """The policy for a secret, or None when it is not managed at all.

    Raises TagRefused for a tag that tries to say more than the operator file
    allows, and PolicyError for a policy that cannot work."""
    rtags = _rotation_tags(tags or {})
    entry = operator.entry(name)
    if entry is not None:
        return _listed(name, entry, rtags, operator, lead_days)
    pattern = operator.pattern_for(name)
    if pattern is None or POLICY_TAG not in rtags:
        return None
    return _tag_managed(name, pattern, rtags, lead_days)


def _listed(
    name: str, entry: SecretEntry, rtags: Mapping[str, str], operator: OperatorConfig, lead_days: int
) -> Policy:
    for tag in rtags:
        if tag not in COMMON_TAGS:
            raise _refuse(name, tag, "rotation settings of a listed secret come from the operator file only")
    asked = rtags.get(POLICY_TAG, "").strip().lower()
    if asked and asked != entry.rotator:
        raise _refuse(name, POLICY_TAG, f"the operator file declares rotator {entry.rotator} for this secret")
    consumers = rtags.get(CONSUMERS_TAG)
    source = "operator-file+tags" if rtags else "operator-file"
    # Unchecked here: a target whose ${SETTING}s are unset is reported when a rotation needs it (the engine),
    # so listing and status still work for the rest of the inventory.
    target = operator.targets.get(entry.target) if entry.target else None
    if entry.manual:
        for tag in (INTERVAL_TAG, VALIDITY_TAG):
            if tag in rtags:
                raise _refuse(name, tag, "the secret is manual-only in the operator file")
        return Policy(name, MANUAL, None, None, dict(entry.options), source, consumers, None, entry.generator)
    assert entry.interval_days is not None
    interval = entry.interval_days
    if INTERVAL_TAG in rtags:
        interval = _days(rtags[INTERVAL_TAG], INTERVAL_TAG, name, operator.interval_limits)
    declared = entry.validity_days
    if VALIDITY_TAG in rtags:
        declared = _days(rtags[VALIDITY_TAG], VALIDITY_TAG, name, operator.validity_limits)
    validity = _validity(name, interval, declared, lead_days)
    return Policy(name, entry.rotator, interval, validity, dict(entry.options), source, consumers, target)


def _tag_managed(name: str, pattern: TagManaged, rtags: Mapping[str, str], lead_days: int) -> Policy:
    kind = rtags[POLICY_TAG].strip().lower()
    if kind not in pattern.rotators:
        raise _refuse(
            name, POLICY_TAG,
            f"secrets matching {pattern.pattern} may use only {', '.join(sorted(pattern.rotators))}",
        )
    allowed = COMMON_TAGS | {OPTION_PREFIX + o for o in TAG_OPTIONS.get(kind, ())}
    for tag in rtags:
        if tag not in allowed:
            raise _refuse(name, tag, f"not a setting a tag may change for a {kind} secret")
    consumers = rtags.get(CONSUMERS_TAG)
    if kind == MANUAL:
        return Policy(name, MANUAL, None, None, {}, "tags", consumers)
    if INTERVAL_TAG not in rtags:
        raise PolicyError(f"secret {name}: tag {INTERVAL_TAG} is required for policy {kind}")
    interval = _days(rtags[INTERVAL_TAG], INTERVAL_TAG, name, pattern.interval)
    declared = _days(rtags[VALIDITY_TAG], VALIDITY_TAG, name, pattern.validity) if VALIDITY_TAG in rtags else None
    validity = _validity(name, interval, declared, lead_days)
    options = {tag[len(OPTION_PREFIX):]: value.strip() for tag, value in rtags.items() if tag not in COMMON_TAGS}
    return Policy(name, kind, interval, validity, options, "tags", consumers)


def carried_tags(tags: Mapping[str, str]) -> dict[str, str]:
    """Tags a new version inherits: policy and user tags, not the old record (the engine's or the rotator's)."""
    return {k: v for k, v in tags.items() if not k.lower().startswith((RECORD_PREFIX, ROTATOR_RECORD_PREFIX))}


def rotator_record(tags: Mapping[str, str]) -> dict[str, str]:
    """The record a rotator's apply left on a version, keys without the ``rotator-`` prefix."""
    n = len(ROTATOR_RECORD_PREFIX)
    return {k[n:]: v for k, v in tags.items() if k.startswith(ROTATOR_RECORD_PREFIX)}
