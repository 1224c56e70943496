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

from shared.domain.errors import ConfigurationError, VaultNotAllowed
from shared.domain.validation import KEY_VAULT_NEAR_EXPIRY_DAYS, check_url, is_vault_name, normal_vault

DEFAULT_VAULT_URL_TEMPLATE = "https://{vault}.vault.azure.net"
MAX_LEAD_DAYS = 3650


def check_lead_days(lead_days: int, setting: str = "ROTATION_LEAD_DAYS") -> None:
    """Refuse a lead time shorter than Key Vault's fixed near-expiry window.

    Key Vault raises ``SecretNearExpiry`` 30 days before ``exp`` whatever the
    app thinks. A rotation writes ``exp`` = now + interval + lead, so with a
    lead under 30 days the event comes before the app considers the secret
    due (and is skipped as not due), and with interval + lead <= 30 the new
    version is born inside the window: the next event arrives at once, a
    rotation loop (lead 10, interval 10 gives ``exp`` = now + 20 days).
    """
    if lead_days < KEY_VAULT_NEAR_EXPIRY_DAYS:
        raise ConfigurationError(
            f"{setting} is {lead_days} but must be at least {KEY_VAULT_NEAR_EXPIRY_DAYS}: Key Vault raises "
            f"SecretNearExpiry {KEY_VAULT_NEAR_EXPIRY_DAYS} days before a version expires whatever this setting "
            f"says, so a shorter lead writes versions that expire inside Key Vault's window and trigger a new "
            f"event at once (a rotation loop; e.g. lead 10 with interval 10 gives exp = now + 20 days)"
        )
    if lead_days > MAX_LEAD_DAYS:
        raise ConfigurationError(f"{setting} must be at most {MAX_LEAD_DAYS} days")


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
    """The app settings, read once from the environment by :meth:`from_env`.

    ``ENV_NAMES`` maps each field to its variable (the retry back-off fields have
    none: only tests shorten them); ``local.settings.example.json`` explains those
    an operator sets. Read elsewhere: the sweep's schedule (by the host, from the
    timer binding) and the operator file's ``${...}`` placeholders."""

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
    # Set by the platform (WEBSITE_AUTH_ENABLED), never by the deployment:
    # only then has App Service Authentication validated the caller and
    # stripped any x-ms-client-principal* header the client sent.
    platform_auth_enabled: bool = False
    sweep_concurrency: int = 8
    config_file: str | None = None  # the operator file; default rotation.json beside function_app.py
    # Azure-managed credentials (key-slot and Entra rotators): the clouds' endpoints, overridable for the
    # local doubles (azuredoubles/), whose certificate azure_ca_bundle then trusts.
    arm_endpoint: str = "https://management.azure.com"
    graph_endpoint: str = "https://graph.microsoft.com"
    login_endpoint: str = "https://login.microsoftonline.com"
    azure_ca_bundle: str | None = None

    telemetry: str = "off"  # auto (Azure Monitor when a connection string is set) | console | off
    appinsights_connection_string: str | None = None

    def __post_init__(self) -> None:
        """Refuse, when the settings are built (start-up), what cannot work: a lead inside Key Vault's
        near-expiry window, a consumer catalog whose HMAC keys have no vault to be read from."""
        check_lead_days(self.lead_days, self.ENV_NAMES["lead_days"])
        if self.consumers:
            from shared.config.consumers import parse_consumers

            parse_consumers(self.consumers, allowed_vaults=self.allowed_vaults, default_vault=self.default_vault)

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
        "platform_auth_enabled": "WEBSITE_AUTH_ENABLED",
        "sweep_concurrency": "ROTATION_SWEEP_CONCURRENCY",
        "config_file": "ROTATION_CONFIG_FILE",
        "arm_endpoint": "ROTATION_ARM_ENDPOINT",
        "graph_endpoint": "ROTATION_GRAPH_ENDPOINT",
        "login_endpoint": "ROTATION_LOGIN_ENDPOINT",
        "azure_ca_bundle": "ROTATION_AZURE_CA_BUNDLE",
        "telemetry": "ROTATION_TELEMETRY",
        "appinsights_connection_string": "APPLICATIONINSIGHTS_CONNECTION_STRING",
    }

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        n = cls.ENV_NAMES

        def get(key: str) -> str | None:
            raw = env.get(n[key])
            return raw if raw is None else raw.strip()

        allowed = tuple(normal_vault(v) for v in _list(get("allowed_vaults")))
        for vault in allowed:
            if not is_vault_name(vault):
                raise ConfigurationError(f"{n['allowed_vaults']}: {vault!r} is not a valid vault name")
        overrides: dict[str, str] = {}
        for item in _list(get("vault_url_overrides")):
            name, sep, url = item.partition("=")
            if not sep or not is_vault_name(name.strip()) or not url.startswith("https://"):
                raise ConfigurationError(f"{n['vault_url_overrides']} entries look like name=https://host:port")
            check_url(url.strip(), f"{n['vault_url_overrides']} entry for {name.strip()}")
            overrides[normal_vault(name)] = url.strip().rstrip("/")
        template = get("vault_url_template") or DEFAULT_VAULT_URL_TEMPLATE
        if "{vault}" not in template or not template.startswith("https://"):
            raise ConfigurationError(f"{n['vault_url_template']} must be https:// and contain {{vault}}")
        check_url(template.replace("{vault}", "vault"), n["vault_url_template"])
        default_vault = normal_vault(get("default_vault") or "") or (allowed[0] if len(allowed) == 1 else None)
        if default_vault is not None and default_vault not in allowed:
            raise ConfigurationError(f"{n['default_vault']} must be one of {n['allowed_vaults']}")
        credential = (get("vault_credential") or "default").lower()
        if credential not in {"default", "emulator"}:
            raise ConfigurationError(f"{n['vault_credential']} must be 'default' or 'emulator'")
        retire_when = (get("retire_when") or "acknowledged_or_grace").lower()
        if retire_when not in {"acknowledged_or_grace", "grace"}:
            raise ConfigurationError(f"{n['retire_when']} must be 'acknowledged_or_grace' or 'grace'")
        schema = (get("eventgrid_schema") or "eventgrid").lower()
        if schema not in {"eventgrid", "cloudevents"}:
            raise ConfigurationError(f"{n['eventgrid_schema']} must be 'eventgrid' or 'cloudevents'")
        endpoints: dict[str, str] = {}
        for key, default in (("arm_endpoint", "https://management.azure.com"),
                             ("graph_endpoint", "https://graph.microsoft.com"),
                             ("login_endpoint", "https://login.microsoftonline.com")):
            url = (get(key) or default).rstrip("/")
            if not url.startswith("https://") or any(c in url[8:] for c in "/?#@"):
                raise ConfigurationError(f"{n[key]} must be https://host[:port]")
            endpoints[key] = url
        telemetry = (get("telemetry") or "auto").lower()
        if telemetry not in {"auto", "console", "off"}:
            raise ConfigurationError(f"{n['telemetry']} must be 'auto', 'console' or 'off'")
        consumers = _json(get("consumers"), n["consumers"]) or {}
        if not isinstance(consumers, dict):
            raise ConfigurationError(f"{n['consumers']} must be a JSON object (see docs/consumers.md)")
        lead_days = _int(get("lead_days"), 30, n["lead_days"], minimum=1)
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
            lead_days=lead_days,
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
            # App Service injects "True" when Authentication is on; anything
            # else (absent, "False", a typo) means the headers are not trusted.
            platform_auth_enabled=(get("platform_auth_enabled") or "").lower() == "true",
            sweep_concurrency=_int(get("sweep_concurrency"), 8, n["sweep_concurrency"], minimum=1),
            config_file=get("config_file") or None,
            arm_endpoint=endpoints["arm_endpoint"],
            graph_endpoint=endpoints["graph_endpoint"],
            login_endpoint=endpoints["login_endpoint"],
            azure_ca_bundle=get("azure_ca_bundle") or None,
            telemetry=telemetry,
            appinsights_connection_string=get("appinsights_connection_string") or None,
        )

    def vault_url(self, vault: str) -> str:
        """The URL of an allowed vault, built from configuration only (never from an event)."""
        name = normal_vault(vault)
        if name not in self.allowed_vaults:
            raise VaultNotAllowed("vault is not on the allow-list")
        return self.vault_url_overrides.get(name) or self.vault_url_template.format(vault=name)
