"""Turning a Key Vault event into a rotation request: liberal where the meaning is clear, strict where not.

The event is input from the network: every field is checked, and nothing in
it is trusted to say where to connect. The vault name must be on the
allow-list and its URL comes from configuration; the ``Id`` URL in the event
data is never used. Both the Event Grid schema and CloudEvents 1.0 are read.

Key Vault's deliveries are less tidy than its schema (Microsoft's own sample
has ``"ObjectName "`` with a trailing space, ``" ee05…"`` with a leading one,
``NBF``/``EXP`` as strings; SDK models spell the keys ``vaultName``,
``objectName``…). So, before anything is read:

* keys are matched case-insensitively and without surrounding whitespace, at
  the top level and in ``data``; string values are stripped;
* ``NBF``/``EXP`` are accepted as numbers or numeric strings;
* the type may be in ``eventType`` or ``type``, the origin in ``topic`` or
  ``source`` (whichever schema marker is present);
* the secret's name comes from ``data.ObjectName`` or from ``subject``, the
  version from ``data.Version`` or from a ``subject`` of the form
  ``name/version``; the vault from ``data.VaultName`` or from the
  ``/vaults/<name>`` of ``topic``/``source``. Where both are present they
  must agree (names and versions case-insensitively, as Key Vault compares).

Then one rule decides (the table in README "Event handling"):

* the vault or the secret (or the event type) is unclear, e.g. ``data`` and
  ``subject`` name different secrets: :class:`UnclearEvent`, carrying every
  (allowed vault, valid name) pair the event may mean. The handler
  acknowledges it only if none of those is a managed secret, and otherwise
  raises so Event Grid retries and finally dead-letters it;
* the secret is clear but the version is not (missing, malformed, ``data``
  and ``subject`` disagree) or ``ObjectType`` contradicts the event type:
  the request carries no version, so the engine acts on the vault's current
  state (rotate if due, else skip with the reason), and the flaw is listed;
* other flaws (no id, an ``EXP`` that is not a time) are listed and the
  event is otherwise taken at face value.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from shared.config.settings import Settings
from shared.domain.errors import InvalidRequest, UnclearEvent, VaultNotAllowed
from shared.domain.record import RotationRequest, Trigger
from shared.domain.validation import is_secret_name, is_vault_name, is_version, name_key, normal_vault, normal_version

HANDLED_TYPES = {
    "microsoft.keyvault.secretnearexpiry": Trigger.NEAR_EXPIRY,
    "microsoft.keyvault.secretexpired": Trigger.EXPIRED,
}
MAX_ID_CHARS = 256
MAX_DATA_STRING_CHARS = 16 * 1024
MAX_UNIX_TIME = 253_402_300_799  # 9999-12-31T23:59:59Z
_ORIGIN_VAULT_RE = re.compile(r"/providers/microsoft\.keyvault/vaults/([^/]*)/?", re.IGNORECASE)
_SUBJECT_RE = re.compile(r"/?(?:secrets/)?([^/]+)(?:/([^/]+))?", re.IGNORECASE)
_ABSENT = object()


@dataclass(frozen=True)
class ParsedEvent:
    event_id: str
    event_type: str
    request: RotationRequest | None  # None: a type we do not handle
    flaws: tuple[str, ...] = ()  # what was not taken at face value (logged at WARNING by the handler)


class _Fields:
    """A JSON object read with keys normalised: case-insensitive, surrounding whitespace ignored."""

    def __init__(self, raw: Mapping[Any, Any]) -> None:
        self._values: dict[str, Any] = {}
        self.conflicts: set[str] = set()
        for key, value in raw.items():
            if not isinstance(key, str):
                continue
            norm = key.strip().lower()
            if norm in self._values and _clean(self._values[norm]) != _clean(value):
                self.conflicts.add(norm)
            self._values.setdefault(norm, value)

    def get(self, key: str) -> Any:
        value = _clean(self._values.get(key, _ABSENT))
        return _ABSENT if value is None else value

    def __contains__(self, key: str) -> bool:
        return self.get(key) is not _ABSENT


def _clean(value: Any) -> Any:
    """Strings without surrounding whitespace; an empty string counts as absent."""
    if isinstance(value, str):
        value = value.strip()
        return value if value else None
    return value


@dataclass
class _Agreement:
    """What several sources of one field say: their valid values (one per key) and any problem."""

    label: str
    values: dict[str, str]  # comparison key -> value as first spelled
    problem: str | None = None

    @property
    def one(self) -> str | None:
        return next(iter(self.values.values())) if len(self.values) == 1 and self.problem is None else None


def _agree(label: str, sources: list[tuple[str, Any, bool]], valid: Any, key: Any) -> _Agreement:
    """Combine the sources of one field. ``sources`` are (where, value, conflicting key)."""
    result = _Agreement(label, {})
    invalid: list[str] = []
    for where, value, conflicting in sources:
        if conflicting:
            invalid.append(f"{where} appears twice with different values")
            continue
        if value is _ABSENT:
            continue
        if not valid(value):
            invalid.append(f"{where} is not a valid {label}")
            continue
        result.values.setdefault(key(value), value)
    if invalid:
        result.problem = "; ".join(invalid)
    elif len(result.values) > 1:
        wheres = " and ".join(where for where, value, _ in sources if value is not _ABSENT)
        result.problem = f"{wheres} name different {label}s"
    return result


def _unix_time(value: Any) -> datetime | None:
    """NBF/EXP as Key Vault sends them: seconds since 1970, as a number or a numeric string."""
    if isinstance(value, bool):
        raise ValueError("a boolean is not a time")
    if isinstance(value, str):
        value = float(value)  # raises ValueError for anything but a number
    if not isinstance(value, int | float) or not 0 <= value <= MAX_UNIX_TIME:
        raise ValueError("not a time in range")
    return datetime.fromtimestamp(value, UTC)


def _data_object(raw: Any) -> Mapping[Any, Any] | None:
    if isinstance(raw, Mapping):
        return raw
    if isinstance(raw, str) and len(raw) <= MAX_DATA_STRING_CHARS:
        try:
            decoded = json.loads(raw)
        except ValueError:
            return None
        return decoded if isinstance(decoded, Mapping) else None
    return None


def parse_event(raw: Mapping[str, Any], settings: Settings) -> ParsedEvent:
    """Validate one event (either schema) and build the request it asks for.

    Raises InvalidRequest for an event that names no secret this app could
    find, VaultNotAllowed for a vault outside the allow-list, UnclearEvent for
    one that may name a managed secret but not unambiguously; returns
    ``request=None`` for event types we ignore.
    """
    if not isinstance(raw, Mapping):
        raise InvalidRequest("event is not a JSON object")
    top = _Fields(raw)
    flaws: list[str] = []

    event_id = top.get("id")
    if not isinstance(event_id, str) or len(event_id) > MAX_ID_CHARS or "id" in top.conflicts:
        flaws.append("event has no valid id")
        event_id = "-"

    types = _agree(
        "event type",
        [(k, top.get(k), k in top.conflicts) for k in ("eventtype", "type")],
        lambda v: isinstance(v, str) and len(v) <= 200,
        lambda v: v.lower(),
    )
    event_type = types.one
    trigger: Trigger | None = None
    if event_type is not None:
        trigger = HANDLED_TYPES.get(event_type.lower())
        if trigger is None:
            return ParsedEvent(event_id, event_type, None, tuple(flaws))

    data_raw = top.get("data")
    data_obj = _data_object(data_raw)
    if data_obj is None:
        if data_raw is not _ABSENT:
            flaws.append("event data is not a JSON object")
        data_obj = {}
    data = _Fields(data_obj)

    origin = _agree(
        "event source",
        [(k, top.get(k), k in top.conflicts) for k in ("topic", "source")],
        lambda v: isinstance(v, str),
        lambda v: v.lower().rstrip("/"),
    )
    origin_vault: Any = _ABSENT
    if origin.one is not None:
        found = _ORIGIN_VAULT_RE.search(origin.one)
        origin_vault = found.group(1) if found and found.end() == len(origin.one) else "(not a Key Vault)"
    elif origin.problem is not None:
        origin_vault = "(unclear)"

    subject_name: Any = _ABSENT
    subject_version: Any = _ABSENT
    subject = top.get("subject")
    if subject is not _ABSENT:
        match = _SUBJECT_RE.fullmatch(subject) if isinstance(subject, str) else None
        if match is None or "subject" in top.conflicts:
            subject_name = "(unreadable subject)"
        else:
            subject_name = match.group(1)
            subject_version = match.group(2) if match.group(2) is not None else _ABSENT

    vaults = _agree(
        "vault",
        [("data.VaultName", data.get("vaultname"), "vaultname" in data.conflicts),
         ("topic/source", origin_vault, False)],
        is_vault_name,
        normal_vault,
    )
    names = _agree(
        "secret",
        [("data.ObjectName", data.get("objectname"), "objectname" in data.conflicts),
         ("subject", subject_name, False)],
        is_secret_name,
        name_key,
    )

    unclear = [a.problem for a in (types, vaults, names) if a.problem]
    if event_type is None and not types.problem:
        unclear.append("event has no type")
    if unclear or vaults.one is None or names.one is None:
        candidates = tuple(
            (normal_vault(v), n)
            for v in vaults.values.values()
            if normal_vault(v) in settings.allowed_vaults
            for n in names.values.values()
        )
        if not vaults.values or not names.values:
            missing = "vault" if not vaults.values else "secret"
            raise InvalidRequest(f"event names no valid {missing}" + (f" ({'; '.join(unclear)})" if unclear else ""))
        if not candidates:
            raise VaultNotAllowed("event is for a vault that is not on the allow-list")
        raise UnclearEvent("event is unclear: " + "; ".join(unclear), candidates)

    vault = normal_vault(vaults.one)
    name = names.one
    assert trigger is not None and event_type is not None  # a clear identity implies a clear, handled type
    if vault not in settings.allowed_vaults:
        raise VaultNotAllowed("event is for a vault that is not on the allow-list")

    versions = _agree(
        "version",
        [("data.Version", data.get("version"), "version" in data.conflicts),
         ("subject", subject_version, False)],
        is_version,
        normal_version,
    )
    event_version = normal_version(versions.one) if versions.one is not None else None
    if versions.problem:
        flaws.append(versions.problem)
    elif event_version is None:
        flaws.append("event names no version")
    object_type = data.get("objecttype")
    if "objecttype" in data.conflicts or (object_type is not _ABSENT and (
            not isinstance(object_type, str) or object_type.lower() != "secret")):
        flaws.append("data.ObjectType is not Secret")
        event_version = None  # the event contradicts itself: decide on the vault's state alone

    expires_on: datetime | None = None
    for field in ("exp", "nbf"):
        value = data.get(field)
        if value is _ABSENT or field in data.conflicts:
            if field in data.conflicts:
                flaws.append(f"data.{field.upper()} appears twice with different values")
            continue
        try:
            moment = _unix_time(value)
        except (TypeError, ValueError, OverflowError):
            flaws.append(f"data.{field.upper()} is not a time")
            continue
        if field == "exp":
            expires_on = moment

    request = RotationRequest(
        vault=vault,
        secret_name=name,
        trigger=trigger,
        event_version=event_version,
        event_expires_on=expires_on if event_version is not None else None,
    )
    return ParsedEvent(event_id, event_type, request, tuple(flaws))
