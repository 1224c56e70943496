"""Who must be told when a secret rotates, decided by configuration alone.

Services that cache a secret (the bridge, the backend, ...) must re-read it
after a rotation, and the old credential may only be retired once they have.
Which services those are changes more often than this code, so the answer
comes from the ``ROTATION_CONSUMERS`` setting plus an optional tag on the
secret, never from a code change.

``ROTATION_CONSUMERS`` is a JSON object with two keys::

    {
      "consumers": {
        "bridge":  {"url": "https://bridge.internal/internal/secrets/refresh",
                    "auth": "entra", "audience": "api://bridge"},
        "backend": {"url": "https://backend.internal/internal/secrets/refresh",
                    "auth": "hmac", "hmacSecret": "backend-refresh-hmac-key"}
      },
      "secrets": {
        "jwt-signing-key": ["bridge", "backend"]
      }
    }

``consumers`` is the catalog: one entry per service, keyed by a short name
(letters, digits, ``.``, ``_``, ``-``; matched case-insensitively). Each entry
has exactly these fields:

``url`` (required)
    Where the refresh ping is POSTed. Must be ``https://``; plain ``http://``
    is accepted only for ``localhost``, ``127.0.0.1`` and ``::1`` (local
    tests). User info (``user:pass@``) and fragments are refused, so no
    credential can hide in a URL that ends up in logs.
``auth`` (required, no default so the choice is always explicit)
    ``"entra"``: a bearer token for ``audience`` from the app's managed
    identity; ``"hmac"``: a Standard Webhooks signature (HMAC-SHA256) keyed
    by the ``whsec_`` Key Vault secret named ``hmacSecret``; ``"none"``: no authentication (only for
    services that merely re-read from Key Vault and accept nothing else).
``audience`` (required for, and only allowed with, ``entra``)
    The application ID URI of the consumer, e.g. ``api://bridge``; the token
    is requested for ``<audience>/.default``.
``hmacSecret`` (required for, and only allowed with, ``hmac``)
    The *name* of the Key Vault secret holding the Standard Webhooks signing
    key (``whsec_...``); never the key itself. Unknown fields are refused for exactly that reason: a typo such
    as ``hmacKey`` with a literal key must fail loudly instead of being ignored.
``hmacVault`` (only allowed with ``hmac``)
    The allowed vault that holds ``hmacSecret``. Optional while the app has
    one vault to read it from (``ROTATION_DEFAULT_VAULT``, or a single entry
    in ``ROTATION_ALLOWED_VAULTS``); required when several vaults are allowed
    and none is the default, since the key's location would otherwise be a
    guess. Checked at start-up (``Settings.from_env``): a catalog whose HMAC
    keys cannot be read is refused there, not discovered at the first ping.
``maxCacheSeconds`` (optional, default 3600, 0 to 86400)
    How long any instance of the service may keep serving a cached value.
    A ping reaches *one* instance behind the service's load balancer, so
    unless the acknowledgement covers every instance (below), the old
    credential is retired no earlier than this long after the commit, and
    never before it on the grace-period path either.
``acknowledges`` (optional, ``"instance"`` default or ``"service"``)
    ``"service"`` declares that the service fans the refresh out to its
    instances and answers 2xx only once every live instance uses the new
    version (``keyvault_rotation_kit`` with a fan-out answers
    ``"coverage": "service"``). Only then does an acknowledgement retire the
    old credential before ``maxCacheSeconds``; an answer without that
    coverage counts as not acknowledged.

``secrets`` maps a Key Vault secret name (case-insensitive, as in Key Vault)
to the list of catalog names that consume it. Every name must be in the
catalog.

The secret's own tag ``rotation-consumers`` (a comma-separated list of catalog
names) refines that per secret, without touching the app settings:

* ``rotation-consumers=bridge,backend`` replaces the configured list;
* ``rotation-consumers=+audit`` (every entry prefixed with ``+``) adds to it;
* an empty value, ``none`` or ``-`` means nobody consumes the secret.

Mixing plain and ``+`` entries is refused, since it is unclear what was meant.

Everything is validated when parsed and reported as :class:`ConfigurationError`
naming the setting, consumer or field at fault, never echoing a configured
value (a misplaced key must not reach a log through an error message).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from shared.domain.errors import ConfigurationError
from shared.domain.ports import Consumer
from shared.domain.validation import LOCAL_HOSTS, check_url, is_secret_name, is_vault_name, name_key, normal_vault

SETTING = "ROTATION_CONSUMERS"
TAG = "rotation-consumers"
AUTH_KINDS = frozenset({"none", "entra", "hmac"})
ACK_SCOPES = frozenset({"instance", "service"})
DEFAULT_MAX_CACHE_SECONDS = 3600
MAX_CACHE_SECONDS_LIMIT = 86400
__all__ = ["LOCAL_HOSTS", "ConsumerCatalog", "parse_consumers", "resolve_consumers"]

_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
_ALLOWED_FIELDS = frozenset(
    {"url", "auth", "audience", "hmacSecret", "hmacVault", "maxCacheSeconds", "acknowledges"}
)
_EMPTY_TAG_VALUES = frozenset({"", "none", "-"})


@dataclass(frozen=True)
class ConsumerCatalog:
    """The parsed, validated ``ROTATION_CONSUMERS`` setting.

    Keys of both mappings are lower-cased so lookups follow Key Vault's
    case-insensitive naming; the :class:`Consumer` objects keep the spelling
    used in the catalog, which is what logs and results show.
    """

    consumers: Mapping[str, Consumer]
    secrets: Mapping[str, tuple[str, ...]]

    def configured_for(self, secret_name: str) -> list[Consumer]:
        """The consumers the setting lists for a secret (no tag applied)."""
        return [self.consumers[key] for key in self.secrets.get(name_key(secret_name), ())]

    def resolve(self, secret_name: str, tag_value: str | None) -> list[Consumer]:
        """The consumers of a secret once its ``rotation-consumers`` tag is applied."""
        configured = self.configured_for(secret_name)
        if tag_value is None:
            return configured
        raw = tag_value.strip()
        if raw.lower() in _EMPTY_TAG_VALUES:
            return []
        entries = [part.strip() for part in raw.split(",")]
        if any(not entry for entry in entries):
            raise ConfigurationError(f"tag {TAG} has an empty entry")
        additive = [entry.startswith("+") for entry in entries]
        if any(additive) and not all(additive):
            raise ConfigurationError(f"tag {TAG} mixes '+name' (add) and 'name' (replace) entries; use one form")
        named = [self._lookup(entry.removeprefix("+").strip()) for entry in entries]
        chosen = configured + named if all(additive) else named
        return _unique(chosen)

    def _lookup(self, name: str) -> Consumer:
        consumer = self.consumers.get(name.lower())
        if consumer is None:
            if _NAME_RE.fullmatch(name):
                raise ConfigurationError(f"tag {TAG} names unknown consumer {name!r}")
            raise ConfigurationError(f"tag {TAG} has an entry that is not a consumer name")
        return consumer


def parse_consumers(
    raw: Mapping[str, Any] | None,
    *,
    allowed_vaults: Sequence[str] | None = None,
    default_vault: str | None = None,
) -> ConsumerCatalog:
    """Validate the whole ``ROTATION_CONSUMERS`` object and build the catalog.

    Called at start-up by ``Settings.from_env`` and again for every
    resolution (the object is small) so a bad setting fails with a precise
    message instead of pinging a half-understood list of services.

    With ``allowed_vaults`` given, every HMAC key reference is resolved to the
    vault it lives in: ``hmacVault`` must be on the allow-list, and without it
    the key is read from ``default_vault`` (or the only allowed vault); when
    there is no such vault the catalog cannot work and is refused.
    """
    if raw is None:
        return ConsumerCatalog(consumers={}, secrets={})
    if not isinstance(raw, Mapping):
        raise ConfigurationError(f"{SETTING} must be a JSON object")
    unknown = set(raw) - {"consumers", "secrets"}
    if unknown:
        raise ConfigurationError(
            f"{SETTING} has unknown top-level keys {sorted(unknown)}; expected 'consumers' and 'secrets'"
        )
    catalog_raw = raw.get("consumers", {})
    if not isinstance(catalog_raw, Mapping):
        raise ConfigurationError(f"{SETTING}.consumers must be an object keyed by consumer name")
    consumers: dict[str, Consumer] = {}
    for name, entry in catalog_raw.items():
        consumer = _parse_consumer(name, entry)
        if allowed_vaults is not None:
            consumer = _place_hmac_key(consumer, allowed_vaults, default_vault)
        key = consumer.name.lower()
        if key in consumers:
            raise ConfigurationError(f"{SETTING}.consumers names {name!r} twice (names are case-insensitive)")
        consumers[key] = consumer

    secrets_raw = raw.get("secrets", {})
    if not isinstance(secrets_raw, Mapping):
        raise ConfigurationError(f"{SETTING}.secrets must be an object keyed by secret name")
    secrets: dict[str, tuple[str, ...]] = {}
    for secret_name, names in secrets_raw.items():
        if not is_secret_name(secret_name):
            raise ConfigurationError(f"{SETTING}.secrets has a key that is not a Key Vault secret name")
        if isinstance(names, str) or not isinstance(names, Sequence):
            raise ConfigurationError(f"{SETTING}.secrets.{secret_name} must be a list of consumer names")
        keys: list[str] = []
        for item in names:
            if not isinstance(item, str) or item.lower() not in consumers:
                shown = repr(item) if isinstance(item, str) and _NAME_RE.fullmatch(item) else "an entry"
                raise ConfigurationError(
                    f"{SETTING}.secrets.{secret_name} lists {shown} that is not in {SETTING}.consumers"
                )
            if item.lower() not in keys:
                keys.append(item.lower())
        key = name_key(secret_name)
        if key in secrets:
            raise ConfigurationError(f"{SETTING}.secrets names {secret_name!r} twice (names are case-insensitive)")
        secrets[key] = tuple(keys)
    return ConsumerCatalog(consumers=consumers, secrets=secrets)


def resolve_consumers(
    settings_consumers: Mapping[str, Any] | None, secret_name: str, tag_value: str | None
) -> list[Consumer]:
    """The services to ping after ``secret_name`` rotated.

    ``settings_consumers`` is ``Settings.consumers`` (the parsed JSON of
    ``ROTATION_CONSUMERS``); ``tag_value`` is the secret's
    ``rotation-consumers`` tag, or None when it has none. Raises
    :class:`ConfigurationError` for any invalid setting or tag, even parts
    that do not concern this secret, so mistakes surface early.
    """
    return parse_consumers(settings_consumers).resolve(secret_name, tag_value)


def _place_hmac_key(consumer: Consumer, allowed_vaults: Sequence[str], default_vault: str | None) -> Consumer:
    """The consumer with the vault of its HMAC key decided, or a ConfigurationError saying why it cannot be."""
    if consumer.auth != "hmac" or not allowed_vaults:
        return consumer  # with no vault allowed nothing can rotate; the HMAC key is not the problem
    where = f"{SETTING}.consumers.{consumer.name}"
    allowed = [normal_vault(v) for v in allowed_vaults]
    if consumer.hmac_vault is not None:
        if consumer.hmac_vault not in allowed:
            raise ConfigurationError(f"{where}.hmacVault names a vault that is not on ROTATION_ALLOWED_VAULTS")
        return consumer
    fallback = normal_vault(default_vault) if default_vault else (allowed[0] if len(allowed) == 1 else None)
    if fallback is None:
        raise ConfigurationError(
            f"{where}.hmacVault is required: {len(allowed)} vaults are allowed and ROTATION_DEFAULT_VAULT is not "
            "set, so the vault holding the HMAC key secret cannot be known (every ping to this consumer would "
            "fail and retirement would wait for the grace period)"
        )
    return replace(consumer, hmac_vault=fallback)


def _parse_consumer(name: object, entry: object) -> Consumer:
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise ConfigurationError(f"{SETTING}.consumers has a name that is not 1-63 letters, digits, '.', '_' or '-'")
    where = f"{SETTING}.consumers.{name}"
    if not isinstance(entry, Mapping):
        raise ConfigurationError(f"{where} must be an object with url and auth")
    unknown = set(entry) - _ALLOWED_FIELDS
    if unknown:
        # Only the field names are shown: a misplaced value may be a real key.
        raise ConfigurationError(f"{where} has unknown fields {sorted(str(k) for k in unknown)}")
    url = entry.get("url")
    if not isinstance(url, str) or not url.strip():
        raise ConfigurationError(f"{where}.url is required")
    check_url(url.strip(), f"{where}.url", allow_local_http=True)
    auth = entry.get("auth")
    if not isinstance(auth, str) or auth.strip().lower() not in AUTH_KINDS:
        raise ConfigurationError(f"{where}.auth must be one of {sorted(AUTH_KINDS)}")
    auth = auth.strip().lower()
    audience = entry.get("audience")
    hmac_secret = entry.get("hmacSecret")
    if auth == "entra":
        if not isinstance(audience, str) or not audience.strip():
            raise ConfigurationError(f"{where}.audience is required when auth is 'entra'")
        audience = audience.strip()
    elif audience is not None:
        raise ConfigurationError(f"{where}.audience is only allowed when auth is 'entra'")
    hmac_vault = entry.get("hmacVault")
    if auth == "hmac":
        if not isinstance(hmac_secret, str) or not is_secret_name(hmac_secret.strip()):
            raise ConfigurationError(
                f"{where}.hmacSecret must name the Key Vault secret holding the HMAC key when auth is 'hmac'"
            )
        hmac_secret = hmac_secret.strip()
        if hmac_vault is not None:
            if not isinstance(hmac_vault, str) or not is_vault_name(hmac_vault.strip()):
                raise ConfigurationError(f"{where}.hmacVault must be a Key Vault name")
            hmac_vault = normal_vault(hmac_vault)
    else:
        if hmac_secret is not None:
            raise ConfigurationError(f"{where}.hmacSecret is only allowed when auth is 'hmac'")
        if hmac_vault is not None:
            raise ConfigurationError(f"{where}.hmacVault is only allowed when auth is 'hmac'")
    max_cache = entry.get("maxCacheSeconds", DEFAULT_MAX_CACHE_SECONDS)
    if isinstance(max_cache, bool) or not isinstance(max_cache, int) or not 0 <= max_cache <= MAX_CACHE_SECONDS_LIMIT:
        raise ConfigurationError(f"{where}.maxCacheSeconds must be a whole number from 0 to {MAX_CACHE_SECONDS_LIMIT}")
    acknowledges = entry.get("acknowledges", "instance")
    if not isinstance(acknowledges, str) or acknowledges.strip().lower() not in ACK_SCOPES:
        raise ConfigurationError(f"{where}.acknowledges must be one of {sorted(ACK_SCOPES)}")
    return Consumer(
        name=name, url=url.strip(), auth=auth, audience=audience, hmac_secret=hmac_secret, hmac_vault=hmac_vault,
        max_cache_seconds=max_cache, acknowledges=acknowledges.strip().lower(),
    )


def _unique(consumers: list[Consumer]) -> list[Consumer]:
    seen: set[str] = set()
    out: list[Consumer] = []
    for consumer in consumers:
        if consumer.name.lower() not in seen:
            seen.add(consumer.name.lower())
            out.append(consumer)
    return out
