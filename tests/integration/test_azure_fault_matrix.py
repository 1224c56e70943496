"""Crash at every step boundary of the Azure-managed rotators, then redelivery.

The same cells as tests/integration/test_fault_matrix.py, through the same
``after_step`` hook, for the key-slot rotator (an Azure OpenAI account, an
Azure Cache for Redis) and the Entra client-secret rotator, against the
doubles: the value the vault serves works right after the crash (no
lockout), the redelivery converges on exactly one rotation, and once it is
retired no abandoned credential stays valid — for a key slot the two slots
hold exactly the previous and the new value, for Entra the application holds
exactly one password, the served one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from azuredoubles import AzureDoubles
from kvemulator import KeyVaultEmulator
from shared.bootstrap import Container
from shared.domain.record import RotationRequest, Step, Trigger
from tests.conftest import VAULT, make_settings
from tests.integration.rotation_harness import rotation_ids
from tests.support.azure_targets import (
    cognitive_works,
    entra_works,
    redis_key_works,
    settings_overrides,
    setup_azure_redis,
    setup_cognitive,
    setup_entra,
)
from tests.support.emulator import latest_of
from tests.support.services import RedisServer

STEPS = [Step.CREATE, Step.APPLY, Step.VERIFY, Step.COMMIT, Step.NOTIFY, Step.RETIRE]
KINDS = ["key-slot-openai", "key-slot-azure-redis", "entra-client-secret"]


class Crash(Exception):
    """Stands for the worker dying right after a step."""


@dataclass
class Cell:
    secret: str
    works: Callable[[str], bool]
    no_orphans: Callable[[str, str], bool]  # (initial value, served value)


def make_cell(kind: str, emu: KeyVaultEmulator, doubles: AzureDoubles, redis_server: RedisServer) -> Cell:
    if kind == "key-slot-openai":
        account = setup_cognitive(emu, doubles)
        return Cell("azure-openai-api-key", lambda v: cognitive_works(account, v),
                    lambda first, served: {account.key1, account.key2} == {first, served})
    if kind == "key-slot-azure-redis":
        cache = setup_azure_redis(emu, doubles, redis_server)

        def slots_hold_exactly(first: str, served: str) -> bool:
            others = [k for k in cache.issued if k not in (first, served)]
            return ({cache.primary, cache.secondary} == {first, served}
                    and not any(redis_key_works(redis_server, k) for k in others))
        return Cell("redis-password", lambda v: redis_key_works(redis_server, v), slots_hold_exactly)
    app = setup_entra(emu, doubles)
    return Cell("api-gateway-client-secret", lambda v: entra_works(app, v),
                lambda first, served: len(app.passwords) == 1 and entra_works(app, served)
                and not entra_works(app, first))


@pytest.mark.parametrize("step", STEPS, ids=[s.value for s in STEPS])
@pytest.mark.parametrize("kind", KINDS)
async def test_azure_rotator_crash_after_step_then_redelivery_converges_without_lockout_or_orphans(
        kind: str, step: Step, emulator: KeyVaultEmulator, azurite: Any, doubles: AzureDoubles,
        redis_server_fresh: RedisServer) -> None:
    cell = make_cell(kind, emulator, doubles, redis_server_fresh)
    first = str(latest_of(emulator, cell.secret)["value"])
    version = str(latest_of(emulator, cell.secret)["version"])
    request = RotationRequest(VAULT, cell.secret, Trigger.NEAR_EXPIRY, event_version=version)

    async def crash(at: Step, req: RotationRequest) -> None:
        if at == step:
            raise Crash(at)

    settings = make_settings(emulator, azurite, grace_period_hours=0.0, **settings_overrides(doubles))
    crashing, healthy = Container(settings, after_step=crash), Container(settings)
    try:
        with pytest.raises(Crash):
            await crashing.engine.run(request)
        served = str(latest_of(emulator, cell.secret)["value"])
        assert cell.works(served), "the vault serves a value that does not work (lockout)"

        await healthy.engine.run(request)  # Event Grid redelivers the same event
        if latest_of(emulator, cell.secret)["tags"].get("rotated-state") != "retired":
            await healthy.engine.complete_pending(VAULT, cell.secret)
        latest = latest_of(emulator, cell.secret)
        served = str(latest["value"])
        assert latest["tags"].get("rotated-state") == "retired", "rotation never converged"
        assert cell.works(served), "the converged value does not work"
        assert served != first
        assert len(rotation_ids(emulator, cell.secret)) == 1, "more than one rotation happened"
        assert cell.no_orphans(first, served), "an abandoned credential is still valid"
    finally:
        await crashing.aclose()
        await healthy.aclose()
