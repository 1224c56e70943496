"""The operator file: what the app may touch, and with which power.

Secret tags are writable by anyone who may manage one secret, so nothing that
decides *where* the app's admin credentials go may come from them. That is
declared here instead, in ``rotation.json`` (setting ``ROTATION_CONFIG_FILE``),
reviewed like code and deployed with the app:

- ``adminSecrets``: the only secrets the app reads as admin credentials. They
  are never rotated by the app and can never become tag-managed.
- ``targets``: each downstream system (PostgreSQL host/port/database, login
  and owner roles, strategy, probe SQL; Redis nodes, ACL user) and which admin
  secret manages it. Credentials are only ever sent to hosts named here.
- ``secrets``: the managed secrets by name (case-insensitive, as in Key
  Vault): rotator, target, interval, generator options, and for a manual-only
  secret the generator ``force`` may use.
- ``tagManaged``: name patterns whose secrets may opt in by tags alone, and
  then only with the harmless rotators (``random``, ``jwt``).
- ``tagLimits``: the bounds within which a tag may change an interval.

Host, port, database and node values may be ``${APP_SETTING}`` placeholders
(``${APP_SETTING:-default}`` with a default), filled from the app settings
(operator-owned as well, set by the Bicep); a target whose placeholder is
unset is reported when a rotation needs it.

The file is checked as a whole when the app starts; every error names the
key path at fault (``targets.app-postgres.port: ...``). What tags may still
say is decided in :mod:`shared.domain.policy`.
"""

from __future__ import annotations

import fnmatch
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from shared.domain import validation
from shared.domain.errors import ConfigurationError
from shared.rotators.registry import REGISTRY

FILE_SETTING: Final = "ROTATION_CONFIG_FILE"
DEFAULT_FILE: Final = Path(__file__).resolve().parents[2] / "rotation.json"
SCHEMA_VERSION: Final = 1

MANUAL: Final = "manual"
# The rotator kinds, the target kinds each takes and what tags may shape come from the registry.
DOWNSTREAM_ROTATORS: Final = frozenset(k for k, spec in REGISTRY.items() if not spec.local)
LOCAL_ROTATORS: Final = frozenset(k for k, spec in REGISTRY.items() if spec.local)  # harmless for tag-managed
GENERATORS: Final = frozenset(k for k, spec in REGISTRY.items() if spec.generator)
ROTATORS: Final = DOWNSTREAM_ROTATORS | LOCAL_ROTATORS | {MANUAL}
TARGET_KINDS: Final = frozenset(t for spec in REGISTRY.values() for t in spec.targets)

# Key Vault raises SecretNearExpiry 30 days before `exp`, whatever the app thinks: a new version
# valid for 30 days or less is born inside that window and the next event arrives at once.
# Both come from shared.domain.validation, the one definition.
KEY_VAULT_NEAR_EXPIRY_DAYS: Final = validation.KEY_VAULT_NEAR_EXPIRY_DAYS
MAX_DAYS: Final = 3650

ROLE_NAME_RE: Final = re.compile(r"[a-z_][a-z0-9_]{0,62}")
SECRET_NAME_RE: Final = validation.SECRET_NAME_RE
PATTERN_RE: Final = re.compile(r"[0-9A-Za-z*?-]{1,127}")
HOST_RE: Final = re.compile(
    r"[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?"  # DNS name or IPv4
    r"|[0-9A-Fa-f:]+:[0-9A-Fa-f:.]*"  # IPv6
    r"|/[A-Za-z0-9/._-]{1,250}"  # a Unix socket directory (PostgreSQL)
)
REDIS_USER_RE: Final = re.compile(r"[^\s\x00-\x1f\x7f]{1,256}")
PLACEHOLDER_RE: Final = re.compile(r"\$\{([A-Z][A-Z0-9_]{0,127})(?::-([^${}]{0,253}))?\}")
PG_STRATEGIES: Final = ("alternating", "single")
REDIS_PERSIST: Final = ("auto", "aclsave", "rewrite", "none")
# Options a tag-managed secret may set through tags: they change the value's shape, never where it goes.
TAG_OPTIONS: Final[Mapping[str, frozenset[str]]] = {k: spec.tag_options for k, spec in REGISTRY.items() if spec.local}
GUID_RE: Final = re.compile(r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}")
RESOURCE_GROUP_RE: Final = re.compile(r"[-\w.()]{0,89}[-\w()]")
ARM_NAME_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,62}")
VERIFY_PATH_RE: Final = re.compile(r"/[A-Za-z0-9/._~=&?-]{0,199}")
SCOPE_RE: Final = re.compile(r"https://[A-Za-z0-9.-]{1,200}(:[0-9]{1,5})?/\.default|api://[A-Za-z0-9-]{1,100}/\.default")
AZURE_REDIS_KINDS: Final = ("azure-redis", "azure-managed-redis")


class Unresolved:
    """A ``${SETTING}`` placeholder whose app setting is not set."""

    def __init__(self, setting: str) -> None:
        self.setting = setting

    def __repr__(self) -> str:
        return f"${{{self.setting}}}"


@dataclass(frozen=True)
class PostgresTarget:
    """A PostgreSQL login the app may re-password, and the database it lives in."""

    name: str
    host: str
    port: int
    database: str
    admin_secret: str
    strategy: str
    roles: tuple[str, ...]
    owner_role: str | None = None
    create_roles: bool = False
    probe: str = "SELECT 1"
    connect_timeout: int = 5
    unresolved: tuple[str, ...] = ()  # app settings named by placeholders that are not set

    @property
    def kind(self) -> str:
        return "postgres"


@dataclass(frozen=True)
class RedisTarget:
    """A Redis ACL user whose password the app may change, on these nodes only."""

    name: str
    nodes: tuple[tuple[str, int], ...]
    user: str
    admin_secret: str
    tls: bool = False
    persist: str = "auto"
    connect_timeout: float = 5.0
    unresolved: tuple[str, ...] = ()

    @property
    def kind(self) -> str:
        return "redis"


@dataclass(frozen=True)
class CognitiveServicesTarget:
    """An Azure OpenAI / Azure AI Foundry (Cognitive Services) account: two key slots, Key1 and Key2.

    ``endpoint`` is where the new key is proven with one cheap data-plane call
    (``verifyPath``, listing the models by default); keys are only ever sent
    there and to ARM."""

    name: str
    subscription_id: str
    resource_group: str
    account: str
    endpoint: str
    verify_path: str = "/openai/models?api-version=2024-10-21"
    unresolved: tuple[str, ...] = ()

    @property
    def kind(self) -> str:
        return "cognitive-services"


@dataclass(frozen=True)
class AzureRedisTarget:
    """An Azure Cache for Redis (``azure-redis``) or Azure Managed Redis database
    (``azure-managed-redis``): two access keys, Primary and Secondary, regenerated through ARM.
    ``host``/``port`` are where the new key is proven with a real AUTH."""

    name: str
    service: str  # azure-redis | azure-managed-redis
    subscription_id: str
    resource_group: str
    cache: str  # the cache (azure-redis) or cluster (azure-managed-redis) name
    host: str
    port: int
    database: str = "default"  # azure-managed-redis only
    tls: bool = True
    unresolved: tuple[str, ...] = ()

    @property
    def kind(self) -> str:
        return self.service


@dataclass(frozen=True)
class EntraApplicationTarget:
    """An Entra application (the API gateway's) whose client secrets the app adds and removes through
    Microsoft Graph; a new one is proven by a client-credentials token for ``verify_scope``."""

    name: str
    tenant_id: str
    application_object_id: str
    client_id: str
    verify_scope: str = "https://graph.microsoft.com/.default"
    verify_timeout_seconds: int = 120  # Entra may take a while to accept a new password everywhere
    unresolved: tuple[str, ...] = ()

    @property
    def kind(self) -> str:
        return "entra-application"


Target = PostgresTarget | RedisTarget | CognitiveServicesTarget | AzureRedisTarget | EntraApplicationTarget


@dataclass(frozen=True)
class Bounds:
    minimum: int
    maximum: int

    def check(self, value: int, what: str) -> None:
        if not self.minimum <= value <= self.maximum:
            raise ConfigurationError(f"{what} must be between {self.minimum} and {self.maximum} days")


@dataclass(frozen=True)
class SecretEntry:
    """One managed secret as the operator declared it."""

    name: str
    rotator: str
    interval_days: int | None = None
    validity_days: int | None = None
    target: str | None = None
    options: Mapping[str, str] = field(default_factory=dict)
    generator: str | None = None  # manual-only secrets: what ``force`` may use

    @property
    def manual(self) -> bool:
        return self.rotator == MANUAL


@dataclass(frozen=True)
class TagManaged:
    """Secrets whose names match ``pattern`` may opt in by tags, with these rotators only."""

    pattern: str
    rotators: frozenset[str]
    interval: Bounds
    validity: Bounds

    def matches(self, name: str) -> bool:
        return fnmatch.fnmatchcase(name.lower(), self.pattern.lower())


@dataclass(frozen=True)
class OperatorConfig:
    admin_secrets: frozenset[str]
    targets: Mapping[str, Target]
    secrets: Mapping[str, SecretEntry]  # keys lower-cased
    tag_managed: tuple[TagManaged, ...] = ()
    interval_limits: Bounds = Bounds(1, 365)
    validity_limits: Bounds = Bounds(KEY_VAULT_NEAR_EXPIRY_DAYS + 1, 730)
    source: str = "<mapping>"

    # ---------------------------------------------------------------- lookups

    def entry(self, name: str) -> SecretEntry | None:
        return self.secrets.get(name.lower())

    def is_admin_secret(self, name: str) -> bool:
        return name.lower() in self.admin_secrets

    def pattern_for(self, name: str) -> TagManaged | None:
        """The tag-managed pattern a name falls under; admin secrets and listed secrets never do."""
        if self.is_admin_secret(name) or self.entry(name) is not None:
            return None
        return next((p for p in self.tag_managed if p.matches(name)), None)

    def may_be_managed(self, name: str) -> bool:
        """Whether any tag could make this name managed: listed, or under a pattern."""
        return self.entry(name) is not None or self.pattern_for(name) is not None

    def target(self, name: str) -> Target:
        target = self.targets[name]
        if target.unresolved:
            raise ConfigurationError(
                f"{self.source}: target {name} needs the app setting(s) {', '.join(target.unresolved)}"
            )
        return target

    # ---------------------------------------------------------------- loading

    @classmethod
    def load(cls, path: str | Path | None, env: Mapping[str, str]) -> OperatorConfig:
        file = Path(path) if path else DEFAULT_FILE
        try:
            raw = file.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigurationError(f"operator file {file} cannot be read ({type(exc).__name__})") from exc
        try:
            data = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ConfigurationError(f"operator file {file.name}: not valid JSON (line {exc.lineno})") from exc
        return cls.from_mapping(data, env=env, source=file.name)

    @classmethod
    def from_mapping(
        cls, data: Any, *, env: Mapping[str, str] | None = None, source: str = "rotation.json"
    ) -> OperatorConfig:
        return _Parser(source, env or {}).config(data)


# ------------------------------------------------------------------ parsing


class _Parser:
    def __init__(self, source: str, env: Mapping[str, str]) -> None:
        self.source = source
        self.env = env

    def fail(self, path: str, message: str) -> ConfigurationError:
        return ConfigurationError(f"{self.source}: {path}: {message}")

    def obj(
        self, value: Any, path: str, allowed: set[str], required: frozenset[str] | set[str] = frozenset()
    ) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(path, "must be an object")
        unknown = sorted(k for k in value if k not in allowed and not k.startswith("$"))
        if unknown:
            raise self.fail(f"{path}.{unknown[0]}", f"unknown key (allowed: {', '.join(sorted(allowed))})")
        missing = sorted(required - set(value))
        if missing:
            raise self.fail(f"{path}.{missing[0]}", "is required")
        return value

    def string(self, value: Any, path: str, pattern: re.Pattern[str] | None = None) -> str:
        if not isinstance(value, str) or not value.strip():
            raise self.fail(path, "must be a non-empty string")
        text = value.strip()
        if pattern is not None and not pattern.fullmatch(text):
            raise self.fail(path, f"{text[:70]!r} is not valid (want {pattern.pattern})")
        return text

    def integer(self, value: Any, path: str, low: int, high: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise self.fail(path, f"must be a whole number from {low} to {high}")
        return value

    def boolean(self, value: Any, path: str) -> bool:
        if not isinstance(value, bool):
            raise self.fail(path, "must be true or false")
        return value

    def setting(self, value: Any, path: str, missing: list[str]) -> Any:
        """Fill a ``${SETTING}`` placeholder; an unset one is remembered, not fatal at start-up."""
        if not isinstance(value, str):
            return value
        match = PLACEHOLDER_RE.fullmatch(value.strip())
        if match is None:
            if "${" in value:
                raise self.fail(path, "a placeholder must be the whole value, like ${ROTATION_POSTGRES_HOST}")
            return value
        resolved = (self.env.get(match.group(1)) or "").strip() or (match.group(2) or "").strip()
        if not resolved:
            missing.append(match.group(1))
            return Unresolved(match.group(1))
        return resolved

    def bounds(self, value: Any, path: str, default: Bounds, floor: int) -> Bounds:
        if value is None:
            return default
        item = self.obj(value, path, {"min", "max"}, {"min", "max"})
        low = self.integer(item["min"], f"{path}.min", floor, MAX_DAYS)
        high = self.integer(item["max"], f"{path}.max", low, MAX_DAYS)
        return Bounds(low, high)

    # -- top level ----------------------------------------------------------

    def config(self, data: Any) -> OperatorConfig:
        top = self.obj(data, "(top)", {"version", "adminSecrets", "targets", "secrets", "tagManaged", "tagLimits"},
                       {"version", "secrets"})
        if top["version"] != SCHEMA_VERSION:
            raise self.fail("version", f"must be {SCHEMA_VERSION}")
        admin_raw = top.get("adminSecrets", [])
        if not isinstance(admin_raw, list):
            raise self.fail("adminSecrets", "must be a list of secret names")
        admins = frozenset(
            self.string(n, f"adminSecrets[{i}]", SECRET_NAME_RE).lower() for i, n in enumerate(admin_raw)
        )
        limits = self.obj(top.get("tagLimits", {}), "tagLimits", {"intervalDays", "validityDays"})
        interval_limits = self.bounds(limits.get("intervalDays"), "tagLimits.intervalDays", Bounds(1, 365), 1)
        validity_limits = self.bounds(
            limits.get("validityDays"), "tagLimits.validityDays", Bounds(KEY_VAULT_NEAR_EXPIRY_DAYS + 1, 730),
            KEY_VAULT_NEAR_EXPIRY_DAYS + 1,
        )
        targets_raw = self.obj(top.get("targets", {}), "targets", set(top.get("targets", {}) or {}))
        targets: dict[str, Target] = {}
        for name, item in targets_raw.items():
            self.string(name, f"targets.{name}", re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}"))
            targets[name] = self.target(name, item, admins)
        secrets_raw = self.obj(top["secrets"], "secrets", set(top["secrets"] or {}))
        secrets: dict[str, SecretEntry] = {}
        for name, item in secrets_raw.items():
            path = f"secrets.{name}"
            self.string(name, path, SECRET_NAME_RE)
            if name.lower() in secrets:
                raise self.fail(path, "listed twice (names are case-insensitive)")
            entry = self.secret(name, item, targets, path)
            if entry.name.lower() in admins and not entry.manual:
                raise self.fail(path, "is an admin secret; the app never rotates its own admin credentials")
            secrets[name.lower()] = entry
        patterns_raw = top.get("tagManaged", [])
        if not isinstance(patterns_raw, list):
            raise self.fail("tagManaged", "must be a list")
        patterns = tuple(
            self.pattern(item, f"tagManaged[{i}]", interval_limits, validity_limits)
            for i, item in enumerate(patterns_raw)
        )
        return OperatorConfig(
            admin_secrets=admins,
            targets=targets,
            secrets=secrets,
            tag_managed=patterns,
            interval_limits=interval_limits,
            validity_limits=validity_limits,
            source=self.source,
        )

    # -- targets ------------------------------------------------------------

    def target(self, name: str, item: Any, admins: frozenset[str]) -> Target:
        path = f"targets.{name}"
        if not isinstance(item, dict) or item.get("kind") not in TARGET_KINDS:
            raise self.fail(f"{path}.kind", f"must be one of {', '.join(sorted(TARGET_KINDS))}")
        if item["kind"] == "cognitive-services":
            return self.cognitive_services(name, item, path)
        if item["kind"] in AZURE_REDIS_KINDS:
            return self.azure_redis(name, item, path)
        if item["kind"] == "entra-application":
            return self.entra_application(name, item, path)
        admin = self.string(item.get("adminSecret"), f"{path}.adminSecret", SECRET_NAME_RE)
        if admin.lower() not in admins:
            raise self.fail(f"{path}.adminSecret", f"{admin} is not listed in adminSecrets")
        if item["kind"] == "postgres":
            return self.postgres(name, item, admin, path)
        return self.redis(name, item, admin, path)

    def postgres(self, name: str, item: Any, admin: str, path: str) -> PostgresTarget:
        allowed = {"kind", "host", "port", "database", "adminSecret", "strategy", "roles", "ownerRole",
                   "createRoles", "probe", "connectTimeoutSeconds"}
        self.obj(item, path, allowed, {"kind", "host", "database", "adminSecret", "roles"})
        missing: list[str] = []
        host = self.setting(item["host"], f"{path}.host", missing)
        if not isinstance(host, Unresolved):
            host = self.string(host, f"{path}.host", HOST_RE)
        port = self.setting(item.get("port", 5432), f"{path}.port", missing)
        if isinstance(port, str):
            port = int(port) if port.isdigit() else -1
        if not isinstance(port, Unresolved):
            port = self.integer(port, f"{path}.port", 1, 65535)
        database = self.setting(item["database"], f"{path}.database", missing)
        if not isinstance(database, Unresolved):
            database = self.string(database, f"{path}.database")
        roles_raw = item["roles"]
        if not isinstance(roles_raw, list) or not roles_raw:
            raise self.fail(f"{path}.roles", "must be a non-empty list of role names")
        roles = tuple(self.string(r, f"{path}.roles[{i}]", ROLE_NAME_RE) for i, r in enumerate(roles_raw))
        if len(set(roles)) != len(roles):
            raise self.fail(f"{path}.roles", "names the same role twice")
        strategy = item.get("strategy", "alternating" if len(roles) == 2 else "single")
        if strategy not in PG_STRATEGIES:
            raise self.fail(f"{path}.strategy", f"must be one of {', '.join(PG_STRATEGIES)}")
        owner = item.get("ownerRole")
        if owner is not None:
            owner = self.string(owner, f"{path}.ownerRole", ROLE_NAME_RE)
        if strategy == "alternating":
            if len(roles) != 2:
                raise self.fail(f"{path}.roles", "strategy alternating needs exactly two login roles")
            if owner is None:
                raise self.fail(f"{path}.ownerRole", "is required for strategy alternating")
            if owner in roles:
                raise self.fail(f"{path}.ownerRole", "must differ from both login roles")
        elif len(roles) != 1:
            raise self.fail(f"{path}.roles", "strategy single takes exactly one role")
        probe = self.string(item.get("probe", "SELECT 1"), f"{path}.probe")
        if ";" in probe.rstrip(";"):
            raise self.fail(f"{path}.probe", "must be a single SQL statement")
        return PostgresTarget(
            name=name,
            host=host if isinstance(host, str) else "",
            port=port if isinstance(port, int) else 0,
            database=database if isinstance(database, str) else "",
            admin_secret=admin,
            strategy=strategy,
            roles=roles,
            owner_role=owner,
            create_roles=self.boolean(item.get("createRoles", False), f"{path}.createRoles"),
            probe=probe.rstrip(";").strip(),
            connect_timeout=self.integer(item.get("connectTimeoutSeconds", 5), f"{path}.connectTimeoutSeconds", 1, 120),
            unresolved=tuple(missing),
        )

    def redis(self, name: str, item: Any, admin: str, path: str) -> RedisTarget:
        allowed = {"kind", "nodes", "user", "adminSecret", "tls", "persist", "connectTimeoutSeconds"}
        self.obj(item, path, allowed, {"kind", "nodes", "adminSecret"})
        missing: list[str] = []
        nodes_raw = item["nodes"]
        if isinstance(nodes_raw, str):
            nodes_raw = [nodes_raw]
        if not isinstance(nodes_raw, list) or not nodes_raw:
            raise self.fail(f"{path}.nodes", "must be a non-empty list of host:port")
        nodes: list[tuple[str, int]] = []
        for i, raw in enumerate(nodes_raw):
            value = self.setting(raw, f"{path}.nodes[{i}]", missing)
            if isinstance(value, Unresolved):
                continue
            for part in self.string(value, f"{path}.nodes[{i}]").split(","):
                nodes.append(self.node(part.strip(), f"{path}.nodes[{i}]"))
        if len(set(nodes)) != len(nodes):
            raise self.fail(f"{path}.nodes", "names the same node twice")
        persist = item.get("persist", "auto")
        if persist not in REDIS_PERSIST:
            raise self.fail(f"{path}.persist", f"must be one of {', '.join(REDIS_PERSIST)}")
        timeout = item.get("connectTimeoutSeconds", 5)
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not 0 < timeout <= 120:
            raise self.fail(f"{path}.connectTimeoutSeconds", "must be a number of seconds from 0 to 120")
        return RedisTarget(
            name=name,
            nodes=tuple(nodes),
            user=self.string(item.get("user", "default"), f"{path}.user", REDIS_USER_RE),
            admin_secret=admin,
            tls=self.boolean(item.get("tls", False), f"{path}.tls"),
            persist=persist,
            connect_timeout=float(timeout),
            unresolved=tuple(missing),
        )

    def field(self, item: Mapping[str, Any], key: str, path: str, missing: list[str],
              pattern: re.Pattern[str] | None = None, default: str | None = None) -> str:
        """A string field that may be a ``${SETTING}`` placeholder ("" while unresolved)."""
        raw = item.get(key, default)
        if raw is None:
            raise self.fail(f"{path}.{key}", "is required")
        value = self.setting(raw, f"{path}.{key}", missing)
        if isinstance(value, Unresolved):
            return ""
        return self.string(value, f"{path}.{key}", pattern)

    def https_endpoint(self, item: Mapping[str, Any], key: str, path: str, missing: list[str]) -> str:
        """``https://host[:port]``, nothing else: no user, path, query or fragment."""
        value = self.field(item, key, path, missing)
        if not value:
            return ""
        head, sep, rest = value.rstrip("/").partition("://")
        host, _, port = rest.rpartition(":") if rest.count(":") == 1 else (rest, "", "")
        if head.lower() != "https" or not sep or not host or not HOST_RE.fullmatch(host) or host.startswith("/") \
                or (port and not (port.isdigit() and 0 < int(port) < 65536)):
            raise self.fail(f"{path}.{key}", "must be https://host[:port] with no path, user or query")
        return value.rstrip("/")

    def arm_resource(self, item: Mapping[str, Any], path: str, missing: list[str]) -> tuple[str, str]:
        return (self.field(item, "subscriptionId", path, missing, GUID_RE).lower(),
                self.field(item, "resourceGroup", path, missing, RESOURCE_GROUP_RE))

    def cognitive_services(self, name: str, item: Any, path: str) -> CognitiveServicesTarget:
        allowed = {"kind", "subscriptionId", "resourceGroup", "account", "endpoint", "verifyPath"}
        self.obj(item, path, allowed, {"kind", "subscriptionId", "resourceGroup", "account", "endpoint"})
        missing: list[str] = []
        subscription, group = self.arm_resource(item, path, missing)
        return CognitiveServicesTarget(
            name=name,
            subscription_id=subscription,
            resource_group=group,
            account=self.field(item, "account", path, missing, ARM_NAME_RE),
            endpoint=self.https_endpoint(item, "endpoint", path, missing),
            verify_path=self.string(item.get("verifyPath", "/openai/models?api-version=2024-10-21"),
                                    f"{path}.verifyPath", VERIFY_PATH_RE),
            unresolved=tuple(missing),
        )

    def azure_redis(self, name: str, item: Any, path: str) -> AzureRedisTarget:
        managed = item["kind"] == "azure-managed-redis"
        allowed = {"kind", "subscriptionId", "resourceGroup", "host", "port", "tls",
                   "cluster" if managed else "cache"} | ({"database"} if managed else set())
        self.obj(item, path, allowed, {"kind", "subscriptionId", "resourceGroup", "host",
                                       "cluster" if managed else "cache"})
        missing: list[str] = []
        subscription, group = self.arm_resource(item, path, missing)
        port = self.setting(item.get("port", 10000 if managed else 6380), f"{path}.port", missing)
        if isinstance(port, str):
            port = int(port) if port.isdigit() else -1
        if not isinstance(port, Unresolved):
            port = self.integer(port, f"{path}.port", 1, 65535)
        return AzureRedisTarget(
            name=name,
            service=item["kind"],
            subscription_id=subscription,
            resource_group=group,
            cache=self.field(item, "cluster" if managed else "cache", path, missing, ARM_NAME_RE),
            host=self.field(item, "host", path, missing, HOST_RE).lower(),
            port=port if isinstance(port, int) else 0,
            database=self.string(item.get("database", "default"), f"{path}.database", ARM_NAME_RE),
            tls=self.boolean(item.get("tls", True), f"{path}.tls"),
            unresolved=tuple(missing),
        )

    def entra_application(self, name: str, item: Any, path: str) -> EntraApplicationTarget:
        allowed = {"kind", "tenantId", "applicationObjectId", "clientId", "verifyScope", "verifyTimeoutSeconds"}
        self.obj(item, path, allowed, {"kind", "tenantId", "applicationObjectId", "clientId"})
        missing: list[str] = []
        return EntraApplicationTarget(
            name=name,
            tenant_id=self.field(item, "tenantId", path, missing, GUID_RE).lower(),
            application_object_id=self.field(item, "applicationObjectId", path, missing, GUID_RE).lower(),
            client_id=self.field(item, "clientId", path, missing, GUID_RE).lower(),
            verify_scope=self.string(item.get("verifyScope", "https://graph.microsoft.com/.default"),
                                     f"{path}.verifyScope", SCOPE_RE),
            verify_timeout_seconds=self.integer(item.get("verifyTimeoutSeconds", 120),
                                                f"{path}.verifyTimeoutSeconds", 1, 600),
            unresolved=tuple(missing),
        )

    def node(self, text: str, path: str) -> tuple[str, int]:
        host, sep, port = text.rpartition(":")
        if not sep or not port.isdigit() or not host:
            raise self.fail(path, f"{text[:70]!r} is not host:port")
        host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
        self.string(host, path, HOST_RE)
        return host.lower(), self.integer(int(port), path, 1, 65535)

    # -- secrets ------------------------------------------------------------

    def days(self, value: Any, path: str) -> int:
        return self.integer(value, path, 1, MAX_DAYS)

    def secret(self, name: str, item: Any, targets: Mapping[str, Target], path: str) -> SecretEntry:
        allowed = {"rotator", "intervalDays", "validityDays", "target", "options", "generator"}
        self.obj(item, path, allowed, {"rotator"})
        rotator = item["rotator"]
        if rotator not in ROTATORS:
            raise self.fail(f"{path}.rotator", f"must be one of {', '.join(sorted(ROTATORS))}")
        options = self.options(item.get("options", {}), f"{path}.options")
        if rotator == MANUAL:
            for key in ("intervalDays", "validityDays", "target"):
                if key in item:
                    raise self.fail(f"{path}.{key}", "does not apply to a manual-only secret")
            generator = item.get("generator")
            if generator is not None and generator not in GENERATORS:
                raise self.fail(f"{path}.generator", f"must be one of {', '.join(sorted(GENERATORS))}")
            return SecretEntry(name=name, rotator=rotator, options=options, generator=generator)
        if "generator" in item:
            raise self.fail(f"{path}.generator", "applies to manual-only secrets only")
        interval = self.days(item.get("intervalDays"), f"{path}.intervalDays") if "intervalDays" in item else None
        if interval is None:
            raise self.fail(f"{path}.intervalDays", "is required")
        validity = self.days(item["validityDays"], f"{path}.validityDays") if "validityDays" in item else None
        check_validity(validity if validity is not None else interval + KEY_VAULT_NEAR_EXPIRY_DAYS,
                       lambda msg: self.fail(f"{path}.validityDays", msg))
        target = item.get("target")
        takes = REGISTRY[rotator].targets
        if takes:
            target = self.string(target, f"{path}.target")
            if target not in targets:
                raise self.fail(f"{path}.target", f"{target} is not declared in targets")
            if targets[target].kind not in takes:
                raise self.fail(f"{path}.target",
                                f"{target} is a {targets[target].kind} target, not {' or '.join(sorted(takes))}")
        elif target is not None:
            raise self.fail(f"{path}.target", f"rotator {rotator} has no downstream target")
        return SecretEntry(name=name, rotator=rotator, interval_days=interval, validity_days=validity,
                           target=target, options=options)

    def options(self, value: Any, path: str) -> dict[str, str]:
        item = self.obj(value, path, set(value) if isinstance(value, dict) else set())
        out: dict[str, str] = {}
        for key, raw in item.items():
            if isinstance(raw, bool) or not isinstance(raw, str | int):
                raise self.fail(f"{path}.{key}", "must be a string or a whole number")
            out[str(key)] = str(raw)
        return out

    def pattern(self, item: Any, path: str, interval: Bounds, validity: Bounds) -> TagManaged:
        self.obj(item, path, {"pattern", "rotators", "intervalDays", "validityDays"}, {"pattern", "rotators"})
        pattern = self.string(item["pattern"], f"{path}.pattern", PATTERN_RE)
        rotators = item["rotators"]
        if not isinstance(rotators, list) or not rotators:
            raise self.fail(f"{path}.rotators", "must be a non-empty list")
        for i, kind in enumerate(rotators):
            if kind not in LOCAL_ROTATORS | {MANUAL}:
                raise self.fail(
                    f"{path}.rotators[{i}]",
                    f"tag-managed secrets may use only {', '.join(sorted(LOCAL_ROTATORS | {MANUAL}))}; "
                    "a rotator with a downstream target must be listed in secrets",
                )
        return TagManaged(
            pattern=pattern,
            rotators=frozenset(rotators),
            interval=self.bounds(item.get("intervalDays"), f"{path}.intervalDays", interval, 1),
            validity=self.bounds(item.get("validityDays"), f"{path}.validityDays", validity,
                                 KEY_VAULT_NEAR_EXPIRY_DAYS + 1),
        )


def check_validity(validity_days: int, fail: Any) -> None:
    """A new version must outlive Key Vault's near-expiry window, or it loops."""
    if validity_days <= KEY_VAULT_NEAR_EXPIRY_DAYS:
        raise fail(
            f"a new version valid for {validity_days} days expires inside Key Vault's fixed "
            f"{KEY_VAULT_NEAR_EXPIRY_DAYS}-day near-expiry window and would trigger a rotation loop; "
            f"it must be valid for more than {KEY_VAULT_NEAR_EXPIRY_DAYS} days"
        )
