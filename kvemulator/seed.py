"""The secrets a developer's vault holds, so local runs look like production.

The rotation app is driven by what it finds in the vault (names, ``exp``,
tags). Seeding the same inventory for ``func start`` and for integration
tests means a sweep behaves locally as it will in Azure: one secret close to
expiry gets rotated, the rest are left alone. Values are generated fresh with
:mod:`secrets` on every call and are never printed; they are placeholders,
not working credentials.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol

NEAR_EXPIRY_DAYS = 10
JWT_DAYS = 60
DEFAULT_DAYS = 120


class _Seedable(Protocol):
    def put(
        self,
        name: str,
        value: str,
        *,
        tags: Mapping[str, str] | None = ...,
        expires_on: datetime | int | float | None = ...,
        content_type: str | None = ...,
        created_on: datetime | int | float | None = ...,
    ) -> Mapping[str, object]: ...


@dataclass(frozen=True)
class SecretSpec:
    """One secret of an inventory; ``make_value`` is called once per seeding."""

    name: str
    make_value: Callable[[], str] = field(repr=False)
    expires_in_days: int
    content_type: str | None = None
    tags: Mapping[str, str] | None = None


def _urlsafe_key() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")


def _standard_key() -> str:
    return base64.b64encode(secrets.token_bytes(32)).decode()


def _postgres_uri() -> str:
    password = secrets.token_urlsafe(24)
    return f"postgresql://rotation_app:{password}@localhost:5432/app?sslmode=require"


def standard_inventory() -> list[SecretSpec]:
    """The standard vault contents (expiry relative to seeding time, near-expiry not applied)."""
    return [
        SecretSpec(
            "jwt-signing-key",
            _urlsafe_key,
            JWT_DAYS,
            content_type="application/octet-stream; encoding=base64url",
            tags={"rotation-policy": "jwt", "owner": "platform"},
        ),
        SecretSpec(
            "database-connection-string",
            _postgres_uri,
            DEFAULT_DAYS,
            content_type="text/plain; format=postgresql-uri",
            tags={"rotation-policy": "postgres", "owner": "platform"},
        ),
        SecretSpec(
            "redis-password",
            lambda: secrets.token_urlsafe(32),
            DEFAULT_DAYS,
            content_type="text/plain",
            tags={"rotation-policy": "redis", "owner": "platform"},
        ),
        SecretSpec(
            "session-encryption-key",
            _urlsafe_key,
            DEFAULT_DAYS,
            content_type="application/octet-stream; encoding=base64url",
            tags={"rotation-policy": "random", "owner": "platform"},
        ),
        SecretSpec("openai-api-key", lambda: "sk-emulator-" + secrets.token_urlsafe(36), DEFAULT_DAYS),
        SecretSpec("azure-openai-api-key", lambda: secrets.token_hex(16), DEFAULT_DAYS),
        SecretSpec("foundry-api-key", lambda: secrets.token_hex(16), DEFAULT_DAYS),
        SecretSpec("api-gateway-client-secret", lambda: secrets.token_urlsafe(30), DEFAULT_DAYS),
        SecretSpec(
            "encryption-master-key",
            _standard_key,
            DEFAULT_DAYS,
            content_type="application/octet-stream; encoding=base64",
        ),
    ]


def seed_standard(
    emu: _Seedable,
    now: datetime | None = None,
    near_expiry: Iterable[str] = ("jwt-signing-key",),
    inventory: Iterable[SecretSpec] | None = None,
) -> dict[str, str]:
    """Write one version of every standard secret into ``emu``; returns name -> version.

    Secrets named in ``near_expiry`` expire ``NEAR_EXPIRY_DAYS`` after ``now``
    (default: the current time) so the rotation sweep picks them up.
    """
    moment = now or datetime.now(UTC)
    if moment.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    soon = set(near_expiry)
    specs = list(inventory) if inventory is not None else standard_inventory()
    unknown = soon - {spec.name for spec in specs}
    if unknown:
        raise ValueError(f"near_expiry names not in the inventory: {sorted(unknown)}")
    seeded: dict[str, str] = {}
    for spec in specs:
        days = NEAR_EXPIRY_DAYS if spec.name in soon else spec.expires_in_days
        result = emu.put(
            spec.name,
            spec.make_value(),
            tags=dict(spec.tags) if spec.tags is not None else None,
            expires_on=moment + timedelta(days=days),
            content_type=spec.content_type,
            created_on=moment,
        )
        seeded[spec.name] = str(result["version"])
    return seeded
