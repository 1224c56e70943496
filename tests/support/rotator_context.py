"""Rotation contexts for rotator-level tests, with an in-memory SecretReader
(a fake of our own port) standing in for the vault's admin secrets."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import UTC, datetime

from shared.errors import SecretNotFound
from shared.model import SecretProperties, SecretVersion
from shared.ports import SecretReader
from shared.rotators.base import RotationContext


class MemorySecrets:
    """The SecretReader port backed by a dict: name -> latest value."""

    def __init__(self, values: Mapping[str, str] | None = None) -> None:
        self.values = dict(values or {})

    async def get(self, name: str, version: str | None = None) -> SecretVersion:
        if name not in self.values:
            raise SecretNotFound(f"secret {name} not found")
        return version_of(name, self.values[name], version or "v-latest")


def version_of(name: str, value: str, version: str) -> SecretVersion:
    return SecretVersion(properties=SecretProperties(name=name, version=version), value=value)


def make_ctx(secret_name: str, current: str | None, options: Mapping[str, str],
             secrets: SecretReader) -> RotationContext:
    return RotationContext(
        vault="kv-test",
        secret_name=secret_name,
        rotation_id=uuid.uuid4().hex,
        now=datetime.now(UTC),
        current=version_of(secret_name, current, "v-current") if current is not None else None,
        options=dict(options),
        secrets=secrets,
    )
