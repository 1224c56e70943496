"""Crash (a raised exception) at every step boundary, for every rotator, then redelivery (issues 3 and 7).

In every cell: the value the vault serves authenticates at every moment
observed (no lockout) — except the documented window of PostgreSQL's `single`
strategy between the password change and the vault write —, the run converges
on exactly one rotation, and no old or abandoned credential stays valid once
the rotation is retired. A raised exception releases the lease at once; real
process deaths and pauses (lease held until it lapses) are the matrix in
test_process_fault_matrix.py, which writes docs/fault-matrix.md.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jwt as pyjwt
import psycopg
import pytest

from kvemulator import KeyVaultEmulator
from shared.bootstrap import Container
from shared.domain.record import RotationRequest, Step, Trigger
from shared.rotators.jwt_key import b64url_decode, new_private_jwk, public_jwk
from tests.conftest import VAULT, make_settings
from tests.integration.rotation_harness import (
    pg_can_login,
    redis_can_auth,
    rotation_ids,
    setup_postgres_alternating,
    setup_postgres_single,
    setup_redis,
)
from tests.support import leakscan
from tests.support.emulator import latest_of
from tests.support.services import PostgresServer, RedisServer

STEPS = [Step.CREATE, Step.APPLY, Step.VERIFY, Step.COMMIT, Step.NOTIFY, Step.RETIRE]
ROTATORS = ["random", "jwt-raw", "jwt-jwks", "postgres-alternating", "postgres-single", "redis"]


class Crash(Exception):
    """Stands for the worker dying right after a step."""


@dataclass
class Cell:
    secret: str
    works: Callable[[str], bool]
    no_orphans: Callable[[], bool]
    lockout_by_design: frozenset[Step] = frozenset()


def jwt_raw_works(value: str) -> bool:
    key = b64url_decode(value)
    return len(key) >= 32 and pyjwt.decode(pyjwt.encode({"a": 1}, key, "HS256"), key, ["HS256"]) == {"a": 1}


def jwks_works(value: str) -> bool:
    keys = json.loads(value)["keys"]
    signer = pyjwt.PyJWK(keys[0])
    token = pyjwt.encode({"a": 1}, signer.key, algorithm=keys[0]["alg"], headers={"kid": keys[0]["kid"]})
    return pyjwt.decode(token, pyjwt.PyJWK(public_jwk(keys[0])).key, [keys[0]["alg"]]) == {"a": 1}


def only_latest_enabled(emu: KeyVaultEmulator, secret: str) -> bool:
    versions = emu.versions(secret)
    return versions[-1]["attributes"]["enabled"] and not any(v["attributes"]["enabled"] for v in versions[:-1])


def make_cell(kind: str, emu: KeyVaultEmulator, pg: PostgresServer, redis_server: RedisServer) -> Cell:
    if kind == "random":
        emu.put("session-encryption-key", "initial-session-key-0123456789-abcdefghijkl")
        return Cell("session-encryption-key", lambda v: len(v) >= 32, lambda: True)
    if kind == "jwt-raw":
        emu.put("jwt-signing-key", "aW5pdGlhbC1zaWduaW5nLWtleS0wMTIzNDU2Nzg5MDEyMzQ1")
        return Cell("jwt-signing-key", jwt_raw_works, lambda: only_latest_enabled(emu, "jwt-signing-key"))
    if kind == "jwt-jwks":
        key = new_private_jwk("ES256")
        leakscan.register([key["d"]])
        emu.put("jwks-signing-key", json.dumps({"keys": [key]}), tags={
            "rotation-policy": "jwt", "rotation-interval-days": "30", "rotation-format": "jwks",
            "rotation-alg": "ES256"})

        def one_key() -> bool:
            latest = json.loads(str(latest_of(emu, "jwks-signing-key")["value"]))
            return len(latest["keys"]) == 1 and only_latest_enabled(emu, "jwks-signing-key")
        return Cell("jwks-signing-key", jwks_works, one_key)
    if kind == "postgres-alternating":
        roles = setup_postgres_alternating(emu, pg)

        def old_role_locked() -> bool:
            with psycopg.connect(pg.admin_dsn) as conn:
                rows = conn.execute("SELECT rolpassword IS NULL FROM pg_authid WHERE rolname = ANY(%s)",
                                    [[roles["blue"], roles["green"]]]).fetchall()
            return sorted(r[0] for r in rows) == [False, True]
        return Cell("database-connection-string", pg_can_login, old_role_locked)
    if kind == "postgres-single":
        setup_postgres_single(emu, pg)
        first = str(emu.versions("database-connection-string")[0]["value"])
        return Cell("database-connection-string", pg_can_login, lambda: not pg_can_login(first),
                    lockout_by_design=frozenset({Step.APPLY, Step.VERIFY}))
    setup_redis(emu, redis_server)

    def one_password() -> bool:
        admin = redis_server.client()
        try:
            info = admin.acl_getuser("default")
            assert info is not None and isinstance(info["passwords"], list)
            return len(info["passwords"]) == 1
        finally:
            admin.close()
    return Cell("redis-password", lambda v: redis_can_auth(redis_server, v), one_password)


OTHER_FAILURES = [
    ("Key Vault answers 429 with Retry-After", "retried by the SDK honouring Retry-After; the rotation completes",
     "test_vertical_slice.py::test_vault_throttling_is_retried_honouring_retry_after"),
    ("Key Vault answers 503 past the retries", "VaultUnavailable raised, Event Grid redelivers, then converges",
     "test_vertical_slice.py::test_vault_failing_beyond_retries_raises_so_event_grid_redelivers"),
    ("PostgreSQL down", "DownstreamError, nothing committed, the served value still works; redelivery converges",
     "test_reliability.py::test_postgres_down_fails_the_delivery_without_touching_the_vault_and_redelivery_converges"),
    ("Redis down", "DownstreamError, nothing committed, the served value still works; redelivery converges",
     "test_reliability.py::test_redis_down_fails_the_delivery_without_touching_the_vault_and_redelivery_converges"),
    ("Blob lease lost mid-rotation", "LeaseLost before the commit, nothing written; redelivery converges",
     "test_reliability.py::test_lease_lost_mid_rotation_writes_nothing_and_redelivery_converges"),
    ("Consumer down", "rotation committed, old credential kept until it acknowledges or the grace period ends",
     "test_consumer_e2e.py::test_without_the_ping_the_consumer_keeps_the_old_value_and_the_old_credential_is_not_retired"),
    ("Consumer slow past its timeout", "retried up to the attempt limit, reported, other consumers unaffected",
     "test_notifiers.py::test_slow_consumer_times_out_after_every_attempt_while_others_succeed"),
    ("20 concurrent deliveries, 50 trials", "exactly one new version in every trial",
     "test_reliability.py::test_twenty_concurrent_deliveries_make_exactly_one_version_in_each_of_fifty_trials"),
    ("PostgreSQL password changed by hand (single, alternating)",
     "the next sweep sees the served value refused, sets it back with the admin credential, pings consumers",
     "test_liveness.py::test_a_postgres_password_changed_by_hand_is_repaired_by_the_next_sweep_and_consumers_are_pinged"),
    ("Redis password changed by hand", "the next sweep adds the served password back on every node, pings consumers",
     "test_liveness.py::test_a_redis_password_changed_by_hand_is_repaired_by_the_next_sweep_and_consumers_are_pinged"),
    ("The kept credential breaks before retirement", "retirement is postponed until the kept value works again",
     "test_liveness.py::test_retirement_first_proves_the_kept_value_works_and_never_retires_the_last_working_credential"),
    ("`single`: worker dies between intent, apply and commit", "the next invocation commits the live value from "
     "the durable intent, or drops an intent that was never applied",
     "test_liveness.py::test_single_strategy_recovers_from_its_durable_intent_without_a_second_password_change"),
    ("`single`: the vault write fails (403) after apply", "the redelivery commits the value already live from "
     "the durable intent; one rotation",
     "test_liveness.py::test_single_strategy_vault_write_refused_after_apply_is_finished_by_the_redelivery_with_the_live_value"),
]


@pytest.mark.parametrize("step", STEPS, ids=[s.value for s in STEPS])
@pytest.mark.parametrize("kind", ROTATORS)
async def test_crash_after_step_then_redelivery_converges_without_lockout(
        kind: str, step: Step, emulator: KeyVaultEmulator, azurite: Any, postgres_server: PostgresServer,
        redis_server_fresh: RedisServer) -> None:
    cell = make_cell(kind, emulator, postgres_server, redis_server_fresh)
    version = str(latest_of(emulator, cell.secret)["version"])
    request = RotationRequest(VAULT, cell.secret, Trigger.NEAR_EXPIRY, event_version=version)

    async def crash(at: Step, req: RotationRequest) -> None:
        if at == step:
            raise Crash(at)

    settings = make_settings(emulator, azurite, grace_period_hours=0.0, jwt_max_token_lifetime_seconds=1)
    crashing, healthy = Container(settings, after_step=crash), Container(settings)
    try:
        crashed = False
        try:
            await crashing.engine.run(request)
            if step == Step.RETIRE:  # the overlap delays retirement to a later invocation
                await asyncio.sleep(1.1)
                await crashing.engine.complete_pending(VAULT, cell.secret)
        except Crash:
            crashed = True
        assert crashed, f"the crash after {step} never happened"
        served = str(latest_of(emulator, cell.secret)["value"])
        works_after_crash = await asyncio.to_thread(cell.works, served)
        if step not in cell.lockout_by_design:
            assert works_after_crash, "the vault serves a value that does not work (lockout)"

        await healthy.engine.run(request)  # Event Grid redelivers the same event
        deadline = time.monotonic() + 10
        while latest_of(emulator, cell.secret)["tags"].get("rotated-state") != "retired":
            assert time.monotonic() < deadline, "rotation never converged"
            await asyncio.sleep(0.3)
            await healthy.engine.complete_pending(VAULT, cell.secret)
        served = str(latest_of(emulator, cell.secret)["value"])
        assert await asyncio.to_thread(cell.works, served), "the converged value does not work"
        assert len(rotation_ids(emulator, cell.secret)) == 1, "more than one rotation happened"
        assert await asyncio.to_thread(cell.no_orphans), "an old or abandoned credential is still valid"
    finally:
        await crashing.aclose()
        await healthy.aclose()
