"""Consumer kit for Key Vault secret rotation (the Python/FastAPI side).

See ``docs/consumers.md`` in the rotation project for the contract and how to
adopt each piece in a few lines.
"""

from keyvault_rotation_kit.bearer import EntraBearerValidator
from keyvault_rotation_kit.errors import (
    CallerNotAllowed,
    IssuerUnavailable,
    KitError,
    SecretNotFound,
    SecretUnavailable,
    TokenInvalid,
)
from keyvault_rotation_kit.fanout import RedisFanout
from keyvault_rotation_kit.healing import SelfHealingRedis, connect_postgres, with_fresh_secret
from keyvault_rotation_kit.jwt_ring import JwtKeyRing
from keyvault_rotation_kit.refresh import (
    REFRESH_PATH,
    Fanout,
    FanoutResult,
    RefreshASGIApp,
    RefreshEndpoint,
    fastapi_router,
)
from keyvault_rotation_kit.secrets import CachedSecretClient, SecretValue

__all__ = [
    "REFRESH_PATH",
    "CachedSecretClient",
    "CallerNotAllowed",
    "EntraBearerValidator",
    "Fanout",
    "FanoutResult",
    "IssuerUnavailable",
    "JwtKeyRing",
    "KitError",
    "RedisFanout",
    "RefreshASGIApp",
    "RefreshEndpoint",
    "SecretNotFound",
    "SecretUnavailable",
    "SecretValue",
    "SelfHealingRedis",
    "TokenInvalid",
    "connect_postgres",
    "fastapi_router",
    "with_fresh_secret",
]
