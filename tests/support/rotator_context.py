"""Rotation contexts for rotator-level tests, with an in-memory SecretReader
(a fake of our own port) standing in for the vault's admin secrets."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from shared.config.operator_file import OperatorConfig, PostgresTarget, RedisTarget, Target
from shared.domain.errors import SecretNotFound
from shared.domain.model import SecretProperties, SecretVersion
from shared.domain.ports import SecretReader
from shared.rotators.base import RotationContext


class MemorySecrets(SecretReader):
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
             secrets: SecretReader, target: Target | None = None) -> RotationContext:
    return RotationContext(
        vault="kv-test",
        secret_name=secret_name,
        rotation_id=uuid.uuid4().hex,
        now=datetime.now(UTC),
        current=version_of(secret_name, current, "v-current") if current is not None else None,
        options=dict(options),
        secrets=secrets,
        target=target,
    )


# ----------------------------------------------------------------------------------------------
# Targets for rotator-level tests, built through the operator file's own parser from the option
# names the rotators used to take, so a rotator test states its target in one short mapping.
# ----------------------------------------------------------------------------------------------

_PG_KEYS = {"strategy": "strategy", "owner-role": "ownerRole", "probe": "probe"}


def _admin_value(options: Mapping[str, str], secrets: SecretReader) -> str | None:
    admin = options.get("admin-secret")
    values = getattr(secrets, "values", {})
    return values.get(admin) if admin else None


def postgres_target(options: Mapping[str, str], secrets: SecretReader, current: str | None) -> PostgresTarget:
    """The PostgreSQL target of a test: the admin DSN's host, port and database unless given."""
    from psycopg.conninfo import conninfo_to_dict

    admin = conninfo_to_dict(_admin_value(options, secrets) or "host=127.0.0.1 dbname=postgres")
    target: dict[str, Any] = {
        "kind": "postgres",
        "host": options.get("host", str(admin.get("host", "127.0.0.1"))),
        "port": int(options.get("port", str(admin.get("port", "5432")))),
        "database": options.get("database", str(admin.get("dbname", "postgres"))),
        "adminSecret": options.get("admin-secret"),
    }
    roles = [r.strip() for r in options.get("roles", "").split(",") if r.strip()]
    if not roles and current:
        roles = [str(conninfo_to_dict(current).get("user"))]
    target["roles"] = roles
    for old, new in _PG_KEYS.items():
        if old in options:
            target[new] = options[old]
    if "create-roles" in options:
        target["createRoles"] = options["create-roles"].lower() == "true"
    if "connect-timeout" in options:
        raw = options["connect-timeout"]
        target["connectTimeoutSeconds"] = int(raw) if raw.isdigit() else raw
    config = OperatorConfig.from_mapping(
        {"version": 1, "adminSecrets": [target["adminSecret"] or "none"], "targets": {"t": target}, "secrets": {}}
    )
    result = config.target("t")
    assert isinstance(result, PostgresTarget)
    return result


def redis_target(options: Mapping[str, str], secrets: SecretReader, current: str | None = None) -> RedisTarget:
    """The Redis target of a test: the admin URL's host unless ``nodes`` is given, and the
    user a URL-form current value names unless ``user`` is given."""
    from urllib.parse import unquote, urlsplit

    admin = urlsplit(_admin_value(options, secrets) or "redis://127.0.0.1:6379")
    nodes = options.get("nodes") or f"{admin.hostname}:{admin.port or 6379}"
    user = options.get("user")
    if user is None and current and current.startswith(("redis://", "rediss://")):
        try:
            user = unquote(urlsplit(current).username or "") or None
        except ValueError:
            user = None
    target: dict[str, Any] = {"kind": "redis", "nodes": nodes.split(","), "user": user or "default",
                              "adminSecret": options.get("admin-secret")}
    if "persist" in options:
        target["persist"] = options["persist"]
    if "connect-timeout" in options:
        raw = options["connect-timeout"]
        target["connectTimeoutSeconds"] = float(raw) if raw.replace(".", "").isdigit() else raw
    config = OperatorConfig.from_mapping(
        {"version": 1, "adminSecrets": [target["adminSecret"] or "none"], "targets": {"t": target}, "secrets": {}}
    )
    result = config.target("t")
    assert isinstance(result, RedisTarget)
    return result
