"""Settings: one immutable object built from the environment, once.

Nothing else in the project reads ``os.environ``; the composition root calls
:func:`Settings.from_env` on first use and every component gets what it needs
from the result. Tests build ``Settings`` from a plain mapping, so no test has
to mutate the process environment.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from shared.errors import ConfigurationError, VaultNotAllowed

VAULT_NAME_RE = re.compile(r"^[a-zA-Z][a-zA-Z0-9-]{1,22}[a-zA-Z0-9]$")
DEFAULT_VAULT_URL_TEMPLATE = "https://{vault}.vault.azure.net"


def _bool(raw: str | None, default: bool, name: str) -> bool:
    if raw is None or raw.strip() == "":
        return default
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise ConfigurationError(f"setting {name} must be true or false")


def _int(raw: str | None, default: int, name: str, minimum: int = 0) -> int:
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw.strip())
    except ValueError as exc:
        raise ConfigurationError(f"setting {name} must be a whole number") from exc
    if value < minimum:
        raise ConfigurationError(f"setting {name} must be at least {minimum}")
    return value


def _float(raw: str | None, default: float, name: str) -> float:
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw.strip())
    except ValueError as exc:
        raise ConfigurationError(f"setting {name} must be a number") from exc
    if value < 0:
        raise ConfigurationError(f"setting {name} must not be negative")
    return value


def _list(raw: str | None) -> tuple[str, ...]:
    if not raw:
        return ()
    return tuple(part.strip() for part in re.split(r"[,;\s]+", raw) if part.strip())


def _json(raw: str | None, name: str) -> Any:
    if raw is None or raw.strip() == "":
        return None
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ConfigurationError(f"setting {name} is not valid JSON") from exc


@dataclass(frozen=True)
class Settings:
    """Every setting the app reads. Names of the environment variables are in
    ``ENV_NAMES`` and documented in ``local.settings.example.json``."""

    allowed_vaults: tuple[str, ...] = ()
    vault_url_template: str = DEFAULT_VAULT_URL_TEMPLATE
    vault_url_overrides: Mapping[str, str] = field(default_factory=dict)
    default_vault: str | None = None
    vault_ca_bundle: str | None = None
    vault_verify_challenge_resource: bool = True
    vault_credential: str = "default"  # "default" (DefaultAzureCredential) or "emulator"
    vault_max_retries: int = 4
    vault_retry_backoff_seconds: float = 0.5
    vault_retry_max_wait_seconds: float = 30.0

    storage_connection_string: str | None = None
    storage_blob_service_uri: str | None = None
    lease_container: str = "rotation-locks"
    lease_wait_seconds: float = 30.0

    lead_days: int = 30
    jwt_max_token_lifetime_seconds: int = 86_400
    grace_period_hours: float = 24.0
    retire_when: str = "acknowledged_or_grace"  # or "grace"

    consumers: Mapping[str, Any] = field(default_factory=dict)
    ping_timeout_seconds: float = 5.0
    ping_attempts: int = 3
    eventgrid_topic_endpoint: str | None = None
    eventgrid_topic_key: str | None = None
    eventgrid_schema: str = "eventgrid"  # or "cloudevents"
    eventgrid_ca_bundle: str | None = None  # local only: trust a local topic's certificate

    required_role: str | None = None
    sweep_concurrency: int = 8
    config_file: str | None = None  # the operator file; default rotation.json beside function_app.py

    ENV_NAMES: ClassVar[dict[str, str]] = {
        "allowed_vaults": "ROTATION_ALLOWED_VAULTS",
        "vault_url_template": "ROTATION_VAULT_URL_TEMPLATE",
        "vault_url_overrides": "ROTATION_VAULT_URLS",
        "default_vault": "ROTATION_DEFAULT_VAULT",
        "vault_ca_bundle": "ROTATION_VAULT_CA_BUNDLE",
        "vault_verify_challenge_resource": "ROTATION_VAULT_VERIFY_CHALLENGE_RESOURCE",
        "vault_credential": "ROTATION_VAULT_CREDENTIAL",
        "vault_max_retries": "ROTATION_VAULT_MAX_RETRIES",
        "storage_connection_string": "AzureWebJobsStorage",
        "storage_blob_service_uri": "AzureWebJobsStorage__blobServiceUri",
        "lease_container": "ROTATION_LEASE_CONTAINER",
        "lease_wait_seconds": "ROTATION_LEASE_WAIT_SECONDS",
        "lead_days": "ROTATION_LEAD_DAYS",
        "jwt_max_token_lifetime_seconds": "ROTATION_JWT_MAX_TOKEN_LIFETIME_SECONDS",
        "grace_period_hours": "ROTATION_GRACE_PERIOD_HOURS",
        "retire_when": "ROTATION_RETIRE_WHEN",
        "consumers": "ROTATION_CONSUMERS",
        "ping_timeout_seconds": "ROTATION_PING_TIMEOUT_SECONDS",
        "ping_attempts": "ROTATION_PING_ATTEMPTS",
        "eventgrid_topic_endpoint": "ROTATION_EVENTGRID_TOPIC_ENDPOINT",
        "eventgrid_topic_key": "ROTATION_EVENTGRID_TOPIC_KEY",
        "eventgrid_schema": "ROTATION_EVENTGRID_SCHEMA",
        "eventgrid_ca_bundle": "ROTATION_EVENTGRID_CA_BUNDLE",
        "required_role": "ROTATION_REQUIRED_ROLE",
        "sweep_concurrency": "ROTATION_SWEEP_CONCURRENCY",
        "config_file": "ROTATION_CONFIG_FILE",
    }

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        n = cls.ENV_NAMES

        def get(key: str) -> str | None:
            raw = env.get(n[key])
            return raw if raw is None else raw.strip()

        allowed = tuple(v.lower() for v in _list(get("allowed_vaults")))
        for vault in allowed:
            if not VAULT_NAME_RE.match(vault):
                raise ConfigurationError(f"{n['allowed_vaults']}: {vault!r} is not a valid vault name")
        overrides: dict[str, str] = {}
        for item in _list(get("vault_url_overrides")):
            name, sep, url = item.partition("=")
            if not sep or not url.startswith("https://"):
                raise ConfigurationError(f"{n['vault_url_overrides']} entries look like name=https://host:port")
            overrides[name.strip().lower()] = url.strip().rstrip("/")
        template = get("vault_url_template") or DEFAULT_VAULT_URL_TEMPLATE
        if "{vault}" not in template or not template.startswith("https://"):
            raise ConfigurationError(f"{n['vault_url_template']} must be https:// and contain {{vault}}")
        default_vault = (get("default_vault") or "").lower() or (allowed[0] if len(allowed) == 1 else None)
        credential = (get("vault_credential") or "default").lower()
        if credential not in {"default", "emulator"}:
            raise ConfigurationError(f"{n['vault_credential']} must be 'default' or 'emulator'")
        retire_when = (get("retire_when") or "acknowledged_or_grace").lower()
        if retire_when not in {"acknowledged_or_grace", "grace"}:
            raise ConfigurationError(f"{n['retire_when']} must be 'acknowledged_or_grace' or 'grace'")
        schema = (get("eventgrid_schema") or "eventgrid").lower()
        if schema not in {"eventgrid", "cloudevents"}:
            raise ConfigurationError(f"{n['eventgrid_schema']} must be 'eventgrid' or 'cloudevents'")
        consumers = _json(get("consumers"), n["consumers"]) or {}
        if not isinstance(consumers, dict):
            raise ConfigurationError(f"{n['consumers']} must be a JSON object (see docs/consumers.md)")
        return cls(
            allowed_vaults=allowed,
            vault_url_template=template,
            vault_url_overrides=overrides,
            default_vault=default_vault,
            vault_ca_bundle=get("vault_ca_bundle") or None,
            vault_verify_challenge_resource=_bool(
                get("vault_verify_challenge_resource"), True, n["vault_verify_challenge_resource"]
            ),
            vault_credential=credential,
            vault_max_retries=_int(get("vault_max_retries"), 4, n["vault_max_retries"]),
            storage_connection_string=get("storage_connection_string") or None,
            storage_blob_service_uri=get("storage_blob_service_uri") or None,
            lease_container=get("lease_container") or "rotation-locks",
            lease_wait_seconds=_float(get("lease_wait_seconds"), 30.0, n["lease_wait_seconds"]),
            lead_days=_int(get("lead_days"), 30, n["lead_days"], minimum=1),
            jwt_max_token_lifetime_seconds=_int(
                get("jwt_max_token_lifetime_seconds"), 86_400, n["jwt_max_token_lifetime_seconds"], minimum=1
            ),
            grace_period_hours=_float(get("grace_period_hours"), 24.0, n["grace_period_hours"]),
            retire_when=retire_when,
            consumers=consumers,
            ping_timeout_seconds=_float(get("ping_timeout_seconds"), 5.0, n["ping_timeout_seconds"]),
            ping_attempts=_int(get("ping_attempts"), 3, n["ping_attempts"], minimum=1),
            eventgrid_topic_endpoint=get("eventgrid_topic_endpoint") or None,
            eventgrid_topic_key=get("eventgrid_topic_key") or None,
            eventgrid_schema=schema,
            eventgrid_ca_bundle=get("eventgrid_ca_bundle") or None,
            required_role=get("required_role") or None,
            sweep_concurrency=_int(get("sweep_concurrency"), 8, n["sweep_concurrency"], minimum=1),
            config_file=get("config_file") or None,
        )

    def vault_url(self, vault: str) -> str:
        """The URL of an allowed vault, built from configuration only (never from an event)."""
        name = vault.strip().lower()
        if name not in self.allowed_vaults:
            raise VaultNotAllowed("vault is not on the allow-list")
        return self.vault_url_overrides.get(name) or self.vault_url_template.format(vault=name)
