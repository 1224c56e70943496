"""Turning a Key Vault event into a rotation request, defensively.

The event is input from the network: every field is checked, and nothing in
it is trusted to say where to connect. The vault name must be on the
allow-list and its URL comes from configuration; the ``Id`` URL in the event
data is never used. Both the Event Grid schema and CloudEvents 1.0 are read.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from shared.engine import RotationRequest, Trigger
from shared.errors import InvalidRequest, VaultNotAllowed
from shared.settings import Settings

SECRET_NAME_RE = re.compile(r"^[0-9a-zA-Z-]{1,127}$")
VERSION_RE = re.compile(r"^[0-9a-f]{32}$")
VAULT_RE = re.compile(r"^[a-zA-Z][a-zA-Z0-9-]{1,22}[a-zA-Z0-9]$")
HANDLED_TYPES = {
    "Microsoft.KeyVault.SecretNearExpiry": Trigger.NEAR_EXPIRY,
    "Microsoft.KeyVault.SecretExpired": Trigger.EXPIRED,
}


@dataclass(frozen=True)
class ParsedEvent:
    event_id: str
    event_type: str
    request: RotationRequest | None  # None: a type we do not handle


def _str(data: Mapping[str, Any], key: str) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value:
        raise InvalidRequest(f"event data field {key} is missing or not a string")
    return value


def parse_event(raw: Mapping[str, Any], settings: Settings) -> ParsedEvent:
    """Validate one event (either schema) and build the request it asks for.

    Raises InvalidRequest for a malformed event and VaultNotAllowed for a vault
    outside the allow-list; returns ``request=None`` for event types we ignore.
    """
    if not isinstance(raw, Mapping):
        raise InvalidRequest("event is not a JSON object")
    cloud = "specversion" in raw
    event_type = raw.get("type") if cloud else raw.get("eventType")
    event_id = raw.get("id")
    if not isinstance(event_type, str) or not event_type:
        raise InvalidRequest("event has no type")
    if not isinstance(event_id, str) or not event_id or len(event_id) > 256:
        raise InvalidRequest("event has no valid id")
    trigger = HANDLED_TYPES.get(event_type)
    if trigger is None:
        return ParsedEvent(event_id, event_type[:200], None)
    data = raw.get("data")
    if not isinstance(data, Mapping):
        raise InvalidRequest("event data is not a JSON object")
    if data.get("ObjectType") != "Secret":
        raise InvalidRequest("event is not about a secret")
    vault = _str(data, "VaultName").lower()
    name = _str(data, "ObjectName")
    version = _str(data, "Version").lower()
    if not VAULT_RE.match(vault):
        raise InvalidRequest("event names an invalid vault")
    if not SECRET_NAME_RE.match(name):
        raise InvalidRequest("event names an invalid secret")
    if not VERSION_RE.match(version):
        raise InvalidRequest("event names an invalid version")
    subject = raw.get("subject")
    if subject is not None and subject != name:
        raise InvalidRequest("event subject does not match the secret it names")
    origin = raw.get("source") if cloud else raw.get("topic")
    if isinstance(origin, str) and origin and not origin.lower().rstrip("/").endswith(f"/vaults/{vault}"):
        raise InvalidRequest("event source does not match the vault it names")
    if vault not in settings.allowed_vaults:
        raise VaultNotAllowed("event is for a vault that is not on the allow-list")
    request = RotationRequest(vault=vault, secret_name=name, trigger=trigger, event_version=version)
    return ParsedEvent(event_id, event_type, request)
