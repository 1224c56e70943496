"""Every rotator kind, in one table: adding a rotator is one module, one line here and its infra role.

A line says what the rest of the app needs to know about a kind without
importing its module (cold start: psycopg, redis, the ARM SDKs are imported
only when a rotation of that kind runs):

- ``factory`` builds the rotator from what the composition root injects
  (:class:`Deps`: the settings and the app's credential); no rotator reads a
  setting, the environment or a secret name from a tag by itself;
- ``targets``: the operator-file target kinds it takes (empty: it touches
  nothing outside the vault, so tag-managed secrets may use it);
- ``generator``: whether a manual-only secret may name it as its
  ``generator`` for ``force`` (only rotators that need no target can);
- ``tag_options``: the value-shaping options a tag-managed secret may set.

:mod:`shared.config.operator_file` checks the operator file against this table and
:mod:`shared.bootstrap` builds the rotators from it. See docs/rotators.md,
"Adding a rotator".
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from azure.core.credentials_async import AsyncTokenCredential

    from shared.config.settings import Settings
    from shared.rotators.base import Rotator


@dataclass(frozen=True)
class Deps:
    """What the composition root hands a rotator factory."""

    settings: Settings
    credential: Callable[[], AsyncTokenCredential]  # the app's identity, built on first use


@dataclass(frozen=True)
class RotatorSpec:
    kind: str
    factory: Callable[[Deps], Rotator]
    targets: frozenset[str] = frozenset()
    generator: bool = False
    tag_options: frozenset[str] = frozenset()

    @property
    def local(self) -> bool:
        """Nothing downstream: harmless for tag-managed secrets."""
        return not self.targets


def _random(deps: Deps) -> Rotator:
    from shared.rotators.random_secret import RandomRotator

    return RandomRotator()


def _jwt(deps: Deps) -> Rotator:
    from shared.rotators.jwt_key import JwtRotator

    return JwtRotator(timedelta(seconds=deps.settings.jwt_max_token_lifetime_seconds))


def _postgres(deps: Deps) -> Rotator:
    from shared.rotators.postgres import PostgresRotator

    return PostgresRotator()


def _redis(deps: Deps) -> Rotator:
    from shared.rotators.redis import RedisRotator

    return RedisRotator()


def _key_slot(deps: Deps) -> Rotator:
    from shared.rotators.key_slot import KeySlotRotator

    return KeySlotRotator(deps.credential, deps.settings)


def _entra(deps: Deps) -> Rotator:
    from shared.rotators.entra import EntraClientSecretRotator

    return EntraClientSecretRotator(deps.credential, deps.settings)


REGISTRY: Final[Mapping[str, RotatorSpec]] = {
    spec.kind: spec
    for spec in (
        RotatorSpec("random", _random, generator=True, tag_options=frozenset({"length", "encoding", "alphabet"})),
        RotatorSpec("jwt", _jwt, generator=True, tag_options=frozenset({"format", "alg", "bits"})),
        RotatorSpec("postgres", _postgres, targets=frozenset({"postgres"})),
        RotatorSpec("redis", _redis, targets=frozenset({"redis"})),
        RotatorSpec("key-slot", _key_slot,
                    targets=frozenset({"cognitive-services", "azure-redis", "azure-managed-redis"})),
        RotatorSpec("entra-client-secret", _entra, targets=frozenset({"entra-application"})),
    )
}


def build_rotators(deps: Deps) -> dict[str, Rotator]:
    """Every registered rotator, built with its injected dependencies (cheap: clients are lazy)."""
    return {kind: spec.factory(deps) for kind, spec in REGISTRY.items()}
