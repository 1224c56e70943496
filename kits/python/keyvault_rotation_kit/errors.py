"""The kit's exceptions: one small tree, never carrying a secret value."""

from __future__ import annotations


class KitError(Exception):
    """Base of every error the kit raises on purpose."""


class SecretUnavailable(KitError):
    """The secret could not be read from Key Vault (outage, throttling, permissions)."""


class SecretNotFound(SecretUnavailable):
    """Key Vault has no such secret, or no enabled version of it."""


class TokenInvalid(KitError):
    """A bearer token or JWT failed validation (signature, lifetime, issuer, audience)."""


class CallerNotAllowed(KitError):
    """A valid token whose caller is not allowed here (403, not 401)."""


class IssuerUnavailable(KitError):
    """The token issuer's keys could not be fetched: a temporary condition (503)."""
