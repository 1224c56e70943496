"""The one exception tree of the project.

Every failure that crosses a module boundary is one of these, so the trigger
modules can map it to an answer (retry, acknowledge, HTTP status) without
knowing which SDK or driver raised it. Adapters translate with
``raise ... from exc`` so the cause stays in the traceback for operators,
while the message itself never carries secret material.

::

    RotationError                      base; which branch says whether a redelivery may succeed
    ├── PermanentError                 retrying will not help (acknowledge the event, 4xx)
    │   ├── InvalidRequest             malformed event, body or name           -> 400
    │   ├── VaultNotAllowed            vault not on the allow-list             -> 403
    │   ├── SecretNotFound             secret or version does not exist        -> 404
    │   ├── NotManaged                 secret has no rotation policy           -> 404
    │   ├── ManualOnly                 policy says rotate by hand only         -> 409
    │   ├── PolicyError                policy is invalid (e.g. rotation loop)  -> 400
    │   │   └── TagRefused             a tag tried to say what only the operator file may -> 400
    │   ├── OverlapActive              force would invalidate a credential still in use -> 409
    │   ├── ConfigurationError         settings or secret tags are wrong       -> 500
    │   └── Forbidden                  caller lacks the required app role      -> 403
    └── TransientError                 a redelivery may succeed (raise, 5xx)
        ├── RotationInProgress         another worker holds the lease          -> 409
        │   └── LeaseNotNeeded         while waiting, the holder did the work (handled by the engine)
        ├── LeaseLost                  our lease expired mid-rotation
        │   └── Superseded             fencing: the vault moved to another version under us
        ├── VaultUnavailable           Key Vault throttled, failed or unreachable -> 503
        ├── DownstreamError            PostgreSQL/Redis/consumer failed        -> 502
        ├── VerificationFailed         the new value did not work; nothing committed -> 502
        └── UnclearEvent               an event that may name a managed secret but does not say
                                       unambiguously which: raised so Event Grid retries, then dead-letters
"""

from __future__ import annotations


class RotationError(Exception):
    """Base of every project error. Messages must never contain secret values."""

    http_status: int = 500
    code: str = "RotationError"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class PermanentError(RotationError):
    http_status = 400
    code = "PermanentError"


class InvalidRequest(PermanentError):
    http_status = 400
    code = "InvalidRequest"


class VaultNotAllowed(PermanentError):
    http_status = 403
    code = "VaultNotAllowed"


class SecretNotFound(PermanentError):
    http_status = 404
    code = "SecretNotFound"


class NotManaged(PermanentError):
    http_status = 404
    code = "NotManaged"


class ManualOnly(PermanentError):
    http_status = 409
    code = "ManualOnly"


class PolicyError(PermanentError):
    http_status = 400
    code = "PolicyError"


class TagRefused(PolicyError):
    """A ``rotation-*`` tag asked for something only the operator file may declare."""

    code = "TagRefused"


class OverlapActive(PermanentError):
    """``force`` during an overlap would invalidate a credential consumers may still hold."""

    http_status = 409
    code = "OverlapActive"


class ConfigurationError(PermanentError):
    http_status = 500
    code = "ConfigurationError"


class DeploymentMisconfigured(ConfigurationError):
    """The deployment asks for a control the platform does not provide (e.g. an
    app role check without App Service Authentication): refuse, never accept."""

    http_status = 503
    code = "DeploymentMisconfigured"


class Forbidden(PermanentError):
    http_status = 403
    code = "Forbidden"


class TransientError(RotationError):
    http_status = 503
    code = "TransientError"


class RotationInProgress(TransientError):
    http_status = 409
    code = "RotationInProgress"


class LeaseNotNeeded(RotationInProgress):
    code = "LeaseNotNeeded"


class LeaseLost(TransientError):
    http_status = 503
    code = "LeaseLost"


class VaultUnavailable(TransientError):
    http_status = 503
    code = "VaultUnavailable"


class DownstreamError(TransientError):
    http_status = 502
    code = "DownstreamError"


class VerificationFailed(TransientError):
    http_status = 502
    code = "VerificationFailed"


class Superseded(LeaseLost):
    """Fencing: the vault serves another version than the one this worker started from.

    Raised right before a side effect, so a worker that lost the race changes nothing."""

    code = "Superseded"


class UnclearEvent(TransientError):
    """A Key Vault event whose vault, secret or type cannot be read unambiguously.

    ``candidates`` are the (vault, secret name) pairs it may mean, limited to
    allowed vaults and valid names. The event handler acknowledges it only
    when none of them is a managed secret; otherwise it raises, so Event Grid
    retries and finally dead-letters the event where an operator sees it.
    """

    http_status = 400
    code = "UnclearEvent"

    def __init__(self, message: str, candidates: tuple[tuple[str, str], ...] = ()) -> None:
        super().__init__(message)
        self.candidates = candidates
