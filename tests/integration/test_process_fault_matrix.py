"""Real process deaths and pauses at every step, for every rotator (issue 11).

Each cell runs the rotation in a child process that halts right after one
step; the parent SIGKILLs it (``kill``) or keeps it stopped past its 15 s lease
while Event Grid-style redeliveries (every 10 s) complete the rotation, then
SIGCONTs it (``pause``). Checked in every cell: exactly one rotation, the value
the vault serves works after convergence, no old credential left valid, and
the lockout window (time the served value was refused downstream) is 0 s for
every rotator but PostgreSQL ``single``, whose window ends with the first
redelivery that gets the lease.

The Azure-managed credentials run against the doubles (azuredoubles/): an
Azure OpenAI account and an Azure Cache for Redis / Managed Redis through the
key-slot rotator, an application's client secret through the Entra rotator.
Their cells also check what the provider saw: the slot in use is never
regenerated (only the idle one, once, or once more where the stopped worker
had already regenerated it), the two slots end holding exactly the previous
and the served key (the previous stays valid until the next rotation, by
design), and Entra ends with exactly the served password, every abandoned
attempt's password and the previous one removed, the previous only after
the new one was added.

``make test`` runs a representative subset concurrently; ``make fault-matrix``
runs every cell and writes docs/fault-matrix.md (``FAULT_MATRIX_OUT``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import platform
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest

from azuredoubles import AzureDoubles
from kvemulator import KeyVaultEmulator
from shared.adapters.lease import LEASE_SECONDS
from shared.rotators.jwt_key import new_private_jwk
from tests.conftest import make_settings
from tests.integration.rotation_harness import (
    pg_can_login,
    redis_can_auth,
    setup_postgres_alternating,
    setup_postgres_single,
    setup_redis,
)
from tests.integration.test_fault_matrix import OTHER_FAILURES, jwks_works, jwt_raw_works, only_latest_enabled
from tests.support import leakscan
from tests.support.azure_targets import (
    cognitive_call_works,
    entra_token_works,
    redis_key_works,
    settings_overrides,
    setup_azure_redis,
    setup_cognitive,
    setup_entra,
)
from tests.support.emulator import latest_of
from tests.support.process_faults import REDELIVERY_SECONDS, CellResult, CellSpec, run_cell
from tests.support.services import PostgresServer, RedisServer

ROTATORS = ["random", "jwt-raw", "jwt-jwks", "postgres-alternating", "postgres-single", "redis",
            "key-slot-openai", "key-slot-azure-redis", "key-slot-managed-redis", "entra"]
# "write": inside apply, after the rotator's reads, right before its downstream write (``ctx.fence``).
STEPS = ["create", "intent", "write", "apply", "verify", "commit", "notify", "retire"]
DOWNSTREAM = {"postgres-alternating", "postgres-single", "redis", "key-slot-openai", "key-slot-azure-redis",
              "key-slot-managed-redis", "entra"}
FAULTS = ["kill", "pause"]
CELL_TIMEOUT = 300.0  # a cell converges in about 20 s; this only keeps a hung cell from hanging the run
PAUSED_WORKER_ENDS = ("LeaseLost", "Superseded", "VerificationFailed", "completed", "skipped")
SINGLE_BOUND_SECONDS = LEASE_SECONDS + REDELIVERY_SECONDS + 5  # the bound: <= 30 s with a 15 s lease

# The subset inside `make test`: every rotator, the steps where a death or a pause hurt most.
SUBSET = [
    ("postgres-single", "apply", "kill"),
    ("postgres-single", "intent", "kill"),
    ("postgres-alternating", "apply", "kill"),
    ("redis", "verify", "kill"),
    ("jwt-jwks", "commit", "kill"),
    ("postgres-single", "create", "pause"),
    ("postgres-alternating", "verify", "pause"),
    ("redis", "apply", "pause"),
    ("random", "commit", "pause"),
    ("jwt-raw", "notify", "pause"),
    ("key-slot-openai", "apply", "kill"),
    ("key-slot-azure-redis", "apply", "pause"),
    ("entra", "apply", "kill"),
    # Paused between its reads and its write while a redelivery rotates: it must not touch what is now served.
    ("postgres-alternating", "write", "pause"),
    ("key-slot-openai", "write", "pause"),
]


def applicable(rotator: str, step: str) -> bool:
    if step == "write":
        return rotator in DOWNSTREAM  # the others write nothing downstream, so never ask for the fence
    return step != "intent" or rotator == "postgres-single"


@dataclass
class Azure:
    """The doubles every Azure-managed cell shares, and a private redis-server per Azure Redis cell (its
    ``default`` user follows one cache's two keys)."""

    doubles: AzureDoubles
    servers: contextlib.ExitStack


def served(emu: KeyVaultEmulator, secret: str) -> str:
    return str((emu.latest(secret) or {}).get("value"))


def times_applied(step: str) -> int:
    """How often a cell's rotation reaches the provider: a worker stopped after ``apply`` or ``verify``
    had regenerated the slot / added the password already, and the redelivery does it once more (the
    first value died with the worker, unseen by anyone)."""
    return 2 if step in ("apply", "verify") else 1


def key_slot_spec(rotator: str, step: str, fault: str, secret: str, emu: KeyVaultEmulator, azure: Azure) -> CellSpec:
    doubles = azure.doubles
    works: Callable[[str], bool]
    if rotator == "key-slot-openai":
        account = setup_cognitive(emu, doubles, secret=secret, target=f"t-{secret}")
        names, regenerated, issued = ("Key1", "Key2"), account.regenerated, None

        def slots() -> tuple[str, str]:
            return account.key1, account.key2

        def works(v: str) -> bool:
            return cognitive_call_works(account, doubles.ca_path, v)
    else:
        server = azure.servers.enter_context(RedisServer())
        cache = setup_azure_redis(emu, doubles, server, managed=rotator == "key-slot-managed-redis",
                                  secret=secret, target=f"t-{secret}")
        names, regenerated, issued = ("Primary", "Secondary"), cache.regenerated, cache.issued

        def slots() -> tuple[str, str]:
            return cache.primary, cache.secondary

        def works(v: str) -> bool:
            return redis_key_works(server, v)  # a consumer's AUTH with the key the vault serves
    first = served(emu, secret)
    in_use, idle = names  # the vault serves the first slot's key

    def no_orphans() -> bool:
        now = served(emu, secret)
        # The previous key stays valid until the next rotation regenerates its slot (consumers may still
        # hold it); every other key this resource ever had, an abandoned attempt's included, is dead.
        others = [k for k in issued or () if k not in (first, now)]
        return set(slots()) == {first, now} and not any(works(k) for k in others)

    def provider() -> list[str]:
        problems = []
        if in_use in regenerated:
            problems.append(f"{in_use}, the slot in use, was regenerated (consumers locked out)")
        if regenerated.count(idle) != times_applied(step):
            problems.append(f"{idle} regenerated {regenerated.count(idle)} times, expected {times_applied(step)}")
        if slots()[1] != served(emu, secret):
            problems.append(f"the vault does not serve {idle}'s key")
        return problems

    def calls() -> str:
        return ", ".join(f"regenerate {slot} x{regenerated.count(slot)}" for slot in names
                         if slot in regenerated)
    return CellSpec(rotator, step, fault, secret, works, no_orphans, provider, calls)


def entra_spec(step: str, fault: str, secret: str, emu: KeyVaultEmulator, doubles: AzureDoubles) -> CellSpec:
    app = setup_entra(emu, doubles, secret=secret, target=f"t-{secret}")
    first = served(emu, secret)
    [(_, previous_key)] = app.history  # the hand-made password the vault serves

    def works(v: str) -> bool:
        return entra_token_works(doubles, app, v)

    def no_orphans() -> bool:
        return len(app.passwords) == 1 and not works(first)

    def provider() -> list[str]:
        served_key = str(((emu.latest(secret) or {}).get("tags") or {}).get("rotator-key-id"))
        added = [k for op, k in app.history[1:] if op == "add"]
        removed = [k for op, k in app.history if op == "remove"]
        problems = []
        if len(added) != times_applied(step):
            problems.append(f"{len(added)} addPassword calls, expected {times_applied(step)}")
        if [p["keyId"] for p in app.passwords] != [served_key]:
            problems.append(f"the application holds {len(app.passwords)} passwords, not just the served one")
        if sorted(removed) != sorted([previous_key, *(k for k in added if k != served_key)]):
            problems.append("removePassword calls do not match the previous and the abandoned passwords")
        elif app.history.index(("remove", previous_key)) < app.history.index(("add", served_key)):
            problems.append("the previous password was removed before its replacement was added")
        return problems

    def calls() -> str:
        ops = [op for op, _ in app.history[1:]]
        return f"addPassword x{ops.count('add')}, removePassword x{ops.count('remove')}"
    return CellSpec("entra", step, fault, secret, works, no_orphans, provider, calls)


def make_spec(rotator: str, step: str, fault: str, emu: KeyVaultEmulator, pg: PostgresServer,
              redis_server: RedisServer, azure: Azure) -> CellSpec:
    secret = f"{rotator}-{step}-{fault}-{uuid.uuid4().hex[:4]}"
    if rotator.startswith("key-slot-"):
        return key_slot_spec(rotator, step, fault, secret, emu, azure)
    if rotator == "entra":
        return entra_spec(step, fault, secret, emu, azure.doubles)
    if rotator == "random":
        emu.put(secret, "initial-random-value-0123456789-abcdefghijklm",
                tags={"rotation-policy": "random", "rotation-interval-days": "30"})
        return CellSpec(rotator, step, fault, secret, lambda v: len(v) >= 32, lambda: True)
    if rotator == "jwt-raw":
        emu.put(secret, "aW5pdGlhbC1zaWduaW5nLWtleS0wMTIzNDU2Nzg5MDEyMzQ1",
                tags={"rotation-policy": "jwt", "rotation-interval-days": "30", "rotation-format": "raw"})
        return CellSpec(rotator, step, fault, secret, jwt_raw_works, lambda: only_latest_enabled(emu, secret))
    if rotator == "jwt-jwks":
        key = new_private_jwk("ES256")
        leakscan.register([key["d"]])
        emu.put(secret, json.dumps({"keys": [key]}), tags={
            "rotation-policy": "jwt", "rotation-interval-days": "30", "rotation-format": "jwks",
            "rotation-alg": "ES256"})

        def one_key() -> bool:
            latest = json.loads(str(latest_of(emu, secret)["value"]))
            return len(latest["keys"]) == 1 and only_latest_enabled(emu, secret)
        return CellSpec(rotator, step, fault, secret, jwks_works, one_key)
    if rotator == "postgres-alternating":
        roles = setup_postgres_alternating(emu, pg, secret=secret)

        def old_role_locked() -> bool:
            with psycopg.connect(pg.admin_dsn) as conn:
                rows = conn.execute("SELECT rolpassword IS NULL FROM pg_authid WHERE rolname = ANY(%s)",
                                    [[roles["blue"], roles["green"]]]).fetchall()
            return sorted(r[0] for r in rows) == [False, True]
        return CellSpec(rotator, step, fault, secret, pg_can_login, old_role_locked)
    if rotator == "postgres-single":
        setup_postgres_single(emu, pg, secret=secret)
        first = str(emu.versions(secret)[0]["value"])
        return CellSpec(rotator, step, fault, secret, pg_can_login, lambda: not pg_can_login(first))
    setup_redis(emu, redis_server, secret=secret, named_user=True)
    first = str(emu.versions(secret)[0]["value"])
    return CellSpec(rotator, step, fault, secret, lambda v: redis_can_auth(redis_server, v),
                    lambda: not redis_can_auth(redis_server, first))


async def run_cells(cells: list[tuple[str, str, str]], emu: KeyVaultEmulator, azurite: Any, pg: PostgresServer,
                    redis_server: RedisServer, doubles: AzureDoubles, tmp_path: Path,
                    concurrency: int) -> list[CellResult]:
    with contextlib.ExitStack() as servers:
        return await _run_cells(cells, emu, azurite, pg, redis_server, Azure(doubles, servers), tmp_path,
                                concurrency)


async def _run_cells(cells: list[tuple[str, str, str]], emu: KeyVaultEmulator, azurite: Any, pg: PostgresServer,
                     redis_server: RedisServer, azure: Azure, tmp_path: Path, concurrency: int) -> list[CellResult]:
    settings = make_settings(emu, azurite, grace_period_hours=0.0, jwt_max_token_lifetime_seconds=1,
                             lease_wait_seconds=LEASE_SECONDS + 5.0, **settings_overrides(azure.doubles))
    limit = asyncio.Semaphore(concurrency)

    # Every cell is declared (operator file, roles, users, secrets) before any worker starts, so the file
    # the workers read never changes under them.
    specs = [make_spec(rotator, step, fault, emu, pg, redis_server, azure) for rotator, step, fault in cells]

    async def one(spec: CellSpec) -> CellResult:
        async with limit:
            try:
                result = await asyncio.wait_for(run_cell(spec, emu, settings, log_dir=tmp_path), CELL_TIMEOUT)
            except Exception as exc:  # one broken cell must not orphan the others
                result = CellResult(spec, child=f"harness error {type(exc).__name__}")
            print(f"{spec.rotator:22} {spec.fault:5} after {spec.step:7} {result.cell_text()} child={result.child} "
                  f"redeliveries={result.redeliveries} converged in {result.converge_seconds:.1f}s {result.notes} "
                  f"{result.provider_problems or ''}", file=sys.stderr, flush=True)
            return result

    return list(await asyncio.gather(*(one(spec) for spec in specs)))


def check(results: list[CellResult], *, bound_single: bool) -> None:
    problems = []
    for r in results:
        where = f"{r.spec.rotator} {r.spec.fault} after {r.spec.step}"
        if not r.reached:
            problems.append(f"{where}: the step was never reached ({r.child})")
            continue
        if r.rotations != 1:
            problems.append(f"{where}: {r.rotations} rotations")
        if not r.works:
            problems.append(f"{where}: the converged value does not work (lockout)")
        if not r.no_orphans:
            problems.append(f"{where}: an old or abandoned credential is still valid")
        problems += [f"{where}: {p}" for p in r.provider_problems]
        if r.spec.rotator != "postgres-single" and r.lockout_seconds > 0:
            problems.append(f"{where}: the served value was refused for {r.lockout_seconds}s")
        # A resumed worker stops at its fence before any side effect (LeaseLost, Superseded), or fails the
        # read-only verify of a value the redelivery already replaced (VerificationFailed), or finds nothing
        # left to do; what it changed is checked above (one rotation, working value, no orphans).
        ends = (*PAUSED_WORKER_ENDS, "rotated") if r.spec.step == "retire" else PAUSED_WORKER_ENDS
        if r.spec.fault == "pause" and r.child not in ends:
            problems.append(f"{where}: the resumed worker ended with {r.child}")
        if bound_single and r.lockout_seconds > SINGLE_BOUND_SECONDS:
            problems.append(f"{where}: lockout {r.lockout_seconds}s exceeds {SINGLE_BOUND_SECONDS}s")
    assert not problems, "\n".join(problems)


async def test_real_kills_and_pauses_in_a_representative_subset_converge_without_lockout(
        emulator: KeyVaultEmulator, azurite: Any, postgres_server: PostgresServer, redis_server: RedisServer,
        doubles: AzureDoubles, tmp_path: Path) -> None:
    """Kills and pauses past the lease, run concurrently: one rotation, working value, no orphans, no lockout
    outside PostgreSQL `single`'s window, and a resumed worker changes nothing (it stops at its fence). The
    Azure-managed cells: only the idle key slot is regenerated, Entra keeps exactly the served password."""
    results = await run_cells(SUBSET, emulator, azurite, postgres_server, redis_server, doubles, tmp_path,
                              concurrency=len(SUBSET))
    check(results, bound_single=False)
    # The single strategy's window ends with the first redelivery (it waits for the lapsed lease).
    assert all(r.redeliveries == 1 for r in results if r.spec.fault == "kill")


@pytest.fixture
def matrix_out() -> Iterator[Path | None]:
    out = os.environ.get("FAULT_MATRIX_OUT")
    yield Path(out) if out else None


@pytest.mark.slow
@pytest.mark.timeout(1800)
async def test_real_kills_and_pauses_after_every_step_of_every_rotator(
        emulator: KeyVaultEmulator, azurite: Any, postgres_server: PostgresServer, redis_server: RedisServer,
        doubles: AzureDoubles, tmp_path: Path, matrix_out: Path | None) -> None:
    """The whole matrix (``make fault-matrix``); skipped unless FAULT_MATRIX_OUT names the table to write."""
    if matrix_out is None:
        pytest.skip("the whole matrix runs under `make fault-matrix` (FAULT_MATRIX_OUT)")
    cells = [(r, s, f) for f in FAULTS for r in ROTATORS for s in STEPS if applicable(r, s)]
    started = time.monotonic()
    results = await run_cells(cells, emulator, azurite, postgres_server, redis_server, doubles, tmp_path,
                              concurrency=6)
    write_table(matrix_out, results, time.monotonic() - started)
    check(results, bound_single=True)


def write_table(out: Path, results: list[CellResult], seconds: float) -> None:
    by = {(r.spec.rotator, r.spec.step, r.spec.fault): r for r in results}
    single = [r.lockout_seconds for r in results if r.spec.rotator == "postgres-single" and r.reached]
    lines = [
        "# Fault matrix: real process deaths and pauses",
        "",
        "Generated by `make fault-matrix` (tests/integration/test_process_fault_matrix.py) on "
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, Python {platform.python_version()}, {len(results)} cells in "
        f"{seconds:.0f} s.",
        "",
        "How each cell runs: the rotation runs in a child process (`tests/support/fault_worker.py`) that halts",
        "itself with SIGSTOP right after the step. **kill**: the parent sends SIGKILL; the dead worker's blob",
        f"lease ({LEASE_SECONDS} s) stays held until it lapses. **pause**: the child stays stopped past its lease",
        "while the rotation is redelivered to completion, then gets SIGCONT and carries on where it stopped.",
        f"The parent redelivers the same event every {REDELIVERY_SECONDS:.0f} s (Event Grid's first retry",
        "delay), the first one 10 s after the fault, until the rotation is retired (grace period 0, JWT overlap",
        "1 s). A probe reads the vault's current value every 0.2 s for the whole cell and tries it downstream",
        "(PostgreSQL login, Redis AUTH on every node, JWT sign+verify; for the Azure-managed credentials,",
        "against the doubles of azuredoubles/: a data-plane call to the Azure OpenAI account, a Redis AUTH",
        "with the access key on the redis-server behind the Azure Cache for Redis / Managed Redis double, a",
        "client-credentials token from the Entra token endpoint).",
        "",
        "Each cell: `ok`/`FAIL` (exactly one rotation, the converged value works, no old or abandoned",
        "credential still valid, the provider checks below for the Azure-managed rows, and for a pause the",
        "resumed worker changed nothing), versions written to",
        "the secret (a JWKS retirement writes a second version of the same rotation), whether the vault's",
        "current value works after convergence, and the **lockout window**: seconds during which the",
        "vault's current value was refused downstream.",
        "",
    ]
    for fault in FAULTS:
        lines += [f"## {fault}", "", "| rotator | " + " | ".join(STEPS) + " |", "|---|" + "---|" * len(STEPS)]
        for rotator in ROTATORS:
            cells = []
            for step in STEPS:
                r = by.get((rotator, step, fault))
                cells.append(r.cell_text() if r is not None else "n/a")
            lines.append(f"| {rotator} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += [
        "`intent` exists only for rotators without overlap (PostgreSQL `single`): the step that records the",
        "new value in the companion secret `<name>-rotation-intent` before the password changes.",
        "",
        f"**Measured lockout of PostgreSQL `single`**: at most {max(single, default=0):.1f} s (cells after",
        "`apply` and `verify`, where the role already has the new password and the vault still serves the old",
        f"one); bound: one lease period plus one redelivery = {LEASE_SECONDS + REDELIVERY_SECONDS:.0f} s. The",
        "first redelivery waits for the dead or frozen worker's lease to lapse, finds the durable intent,",
        "proves the intended value is live and commits it: the password is not changed a second time.",
        "Every other rotator: 0 s in every cell.",
        "",
        "**Azure-managed credentials** (`key-slot-*`: the key-slot rotator on an Azure OpenAI account, an",
        "Azure Cache for Redis and an Azure Managed Redis database; `entra`: an application's client secret).",
        "Their lockout is 0 s in every cell: the previous credential stays valid until retirement (a key",
        "slot until the *next* rotation). At the provider, each cell checks that the slot the vault served",
        "was never regenerated (only the idle one: once, or twice where the stopped worker had already",
        "regenerated it after `apply`/`verify` and the redelivery did it again, its first key dying unseen)",
        "and that the two slots end holding exactly the previous and the served key, every other key the",
        "resource ever had refused; for Entra, that `addPassword` ran once (twice after `apply`/`verify`),",
        "the application ends with exactly the served password, every abandoned attempt's password was",
        "removed, and the previous one was removed once, at retirement, after its replacement was added.",
        "The `provider calls` column of the table below counts them.",
        "",
        "Child exits for pauses: the resumed worker stops at its fence (`LeaseLost`: its lease was taken by",
        "the redelivery; `Superseded`: the vault already serves another version) before any side effect, or",
        "fails the read-only `verify` of a value the redelivery already replaced (`VerificationFailed`); a",
        "worker paused after `retire` had finished everything and just returns (`rotated`).",
        "",
        "PostgreSQL `single` cells show a second or so of lockout even where the fault hit before `apply` or",
        "after `commit`: that is a normal rotation's own window (the redelivery's, or the worker's before it",
        "stopped) between the password change and the vault write, one `verify` and one fenced write long,",
        "stretched here by the load of the matrix itself (up to 6 cells, their child processes and probes at",
        "once on 2 cores). It is inherent to one password per role; `alternating` has none.",
        "",
        "| rotator | step | fault | child | redeliveries | converged after | intents written | provider calls |",
        "|---|---|---|---|---|---|---|---|",
        *(f"| {r.spec.rotator} | {r.spec.step} | {r.spec.fault} | {r.child} | {r.redeliveries} | "
          f"{r.converge_seconds:.1f} s | {r.intents_written} | {r.provider_calls} |"
          for r in sorted(results, key=lambda r: (r.spec.fault, ROTATORS.index(r.spec.rotator),
                                                   STEPS.index(r.spec.step)))),
        "",
        "The exception-raising matrix of the earlier issues (crash raised at every step, lease released at",
        "once) still runs in `make test`: tests/integration/test_fault_matrix.py, and for the Azure-managed",
        "rotators tests/integration/test_azure_fault_matrix.py.",
        "",
        "## Other failures, each a test in `make test`",
        "",
        "| failure | expected behaviour | test |",
        "|---|---|---|",
        *(f"| {a} | {b} | `{c}` |" for a, b, c in OTHER_FAILURES),
        "",
    ]
    out.write_text("\n".join(lines))
