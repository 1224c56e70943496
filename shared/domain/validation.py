"""The one place that says what a Key Vault name, a version id and a URL may look like.

Every entry point (settings, the consumer catalog, Event Grid events, HTTP
routes) checks identifiers with these functions, so a rule changes in one
place and no two modules disagree about what is valid. The patterns are
applied with ``fullmatch`` only: ``re.match`` with ``$`` accepts a trailing
newline, which would let ``"jwt-signing-key\\n"`` through.

Case rules follow Key Vault: vault names are DNS labels and secret names are
case-insensitive (``JWT-SIGNING-KEY`` and ``jwt-signing-key`` are the same
secret), version ids are 32 hexadecimal characters that Key Vault returns in
lower case. Compare names with :func:`same_name` and normalise versions with
:func:`normal_version`; never compare them with ``==``.
"""

from __future__ import annotations

import re
from urllib.parse import SplitResult, urlsplit

from shared.domain.errors import ConfigurationError

# Key Vault raises Microsoft.KeyVault.SecretNearExpiry this many days before a
# version's ``exp``, whatever the app is configured with; it cannot be changed
# for secrets. A version written with less validity than this is born inside the
# window and fires a new event at once: a rotation loop.
KEY_VAULT_NEAR_EXPIRY_DAYS = 30

# Secret names: 1-127 letters, digits and dashes.
SECRET_NAME_RE = re.compile(r"[0-9A-Za-z-]{1,127}")
# Version ids: 32 hexadecimal characters (Key Vault writes them in lower case).
VERSION_RE = re.compile(r"[0-9A-Fa-f]{32}")
# Vault names: 3-24 characters, letters, digits and dashes, starting with a
# letter, ending with a letter or digit, no two dashes in a row.
VAULT_NAME_RE = re.compile(r"(?!.*--)[A-Za-z][A-Za-z0-9-]{1,22}[A-Za-z0-9]")

LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})


def is_secret_name(value: object) -> bool:
    """A Key Vault secret name, exactly (no surrounding whitespace, no newline)."""
    return isinstance(value, str) and SECRET_NAME_RE.fullmatch(value) is not None


def is_version(value: object) -> bool:
    """A Key Vault version id, in either case."""
    return isinstance(value, str) and VERSION_RE.fullmatch(value) is not None


def is_vault_name(value: object) -> bool:
    """A Key Vault name, in either case."""
    return isinstance(value, str) and VAULT_NAME_RE.fullmatch(value) is not None


def normal_vault(value: str) -> str:
    """The form every comparison and lookup uses: lower case, no surrounding whitespace."""
    return value.strip().lower()


def normal_version(value: str) -> str:
    """The form Key Vault uses for version ids: lower case."""
    return value.strip().lower()


def name_key(value: str) -> str:
    """The key a secret name is compared and looked up by (Key Vault names are case-insensitive)."""
    return value.strip().lower()


def same_name(a: str | None, b: str | None) -> bool:
    """Whether two secret names denote the same secret, as Key Vault compares them."""
    return a is not None and b is not None and name_key(a) == name_key(b)


def same_version(a: str | None, b: str | None) -> bool:
    """Whether two version ids denote the same version (hexadecimal, case-insensitive)."""
    return a is not None and b is not None and normal_version(a) == normal_version(b)


def check_url(url: str, what: str, *, allow_local_http: bool = False) -> SplitResult:
    """Validate a configured URL and return its parts; raise ConfigurationError naming ``what``.

    ``https://`` only (plain ``http://`` for localhost when ``allow_local_http``),
    a host, no user info (a credential must never hide in a URL that reaches
    logs) and no fragment. The URL itself is never echoed in the message.
    """
    if not isinstance(url, str) or url != url.strip() or not url:
        raise ConfigurationError(f"{what} is not a valid URL")
    if any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in url):
        raise ConfigurationError(f"{what} must not contain whitespace or control characters")
    try:
        parts = urlsplit(url)
        host = parts.hostname
        _ = parts.port  # raises ValueError for a malformed port
    except ValueError as exc:
        raise ConfigurationError(f"{what} is not a valid URL") from exc
    if not host:
        raise ConfigurationError(f"{what} has no host")
    if parts.username is not None or parts.password is not None:
        raise ConfigurationError(f"{what} must not contain user info")
    if parts.fragment:
        raise ConfigurationError(f"{what} must not contain a fragment")
    scheme = parts.scheme.lower()
    if scheme == "https":
        return parts
    if allow_local_http and scheme == "http" and host.lower() in LOCAL_HOSTS:
        return parts
    raise ConfigurationError(f"{what} must use https" + (" (http only for localhost)" if allow_local_http else ""))
