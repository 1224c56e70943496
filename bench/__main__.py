"""`make bench`: each figure is a ratio measured side by side in one run.

For every round the subject (our code path) and its floor (the least work
that achieves the same effect, issued directly) run back to back, in
alternating order, on the same components; the ratio of the two times is
recorded and min/median/max of the ratios reported. The table goes to
stdout and to docs/benchmarks.md.

Usage: python -m bench [--rounds N] [--only B1,B3]
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import psycopg
from psycopg import sql

from functions.event_grid import handle_event
from kvemulator import KeyVaultEmulator
from shared.bootstrap import Container, ca_bundle_transport
from shared.config.operator_file import OperatorConfig
from shared.config.settings import Settings
from shared.domain.record import RotationRequest, Trigger
from shared.rotators.postgres import generate_password
from shared.service.views import plan
from tests.support.consumer_app import ConsumerApp, ConsumerServer
from tests.support.emulator import latest_of
from tests.support.operator_files import base_config
from tests.support.services import Azurite, PostgresServer

VAULT = "kv-bench"
ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Figure:
    key: str
    title: str
    target: float
    ratios: list[float]
    subject_ms: list[float]
    floor_ms: list[float]
    note: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.ratios)

    def row(self) -> str:
        met = "met" if self.median <= self.target else "MISSED"
        return (f"| {self.key} | {self.title} | {min(self.ratios):.2f} | {self.median:.2f} | {max(self.ratios):.2f} "
                f"| {statistics.median(self.subject_ms):.1f} | {statistics.median(self.floor_ms):.1f} "
                f"| ≤ {self.target} | {met} |")


async def side_by_side(rounds: int, subject: Callable[[], Awaitable[Any]], floor: Callable[[], Awaitable[Any]],
                       warmup: int = 2) -> tuple[list[float], list[float], list[float]]:
    for _ in range(warmup):
        await subject()
        await floor()
    ratios, s_ms, f_ms = [], [], []
    for i in range(rounds):
        pair = []
        for fn in ((subject, floor) if i % 2 == 0 else (floor, subject)):
            t = time.perf_counter()
            await fn()
            pair.append((fn, (time.perf_counter() - t) * 1000))
        times = {id(fn): ms for fn, ms in pair}
        s, f = times[id(subject)], times[id(floor)]
        ratios.append(s / f)
        s_ms.append(s)
        f_ms.append(f)
    return ratios, s_ms, f_ms


def operator_for(secrets: dict[str, Any] | None = None, targets: dict[str, Any] | None = None) -> OperatorConfig:
    """The shipped operator file, ``*`` open to tag-managed random/jwt secrets, plus the bench's own targets."""
    data = base_config()
    data["adminSecrets"].append("pg-admin")
    data["targets"].update(targets or {})
    data["secrets"].update(secrets or {})
    return OperatorConfig.from_mapping(data)


def settings_for(emu: KeyVaultEmulator, azurite: Azurite, **more: Any) -> Settings:
    return Settings(allowed_vaults=(VAULT,), default_vault=VAULT, vault_url_overrides={VAULT: emu.url},
                    vault_ca_bundle=emu.ca_path, vault_verify_challenge_resource=False, vault_credential="emulator",
                    storage_connection_string=azurite.connection_string, **more)


# --------------------------------------------------------------------------- B1

def floor_client(emu: KeyVaultEmulator) -> Any:
    """The floor's bare SDK client, on the same kept-alive TLS transport the app uses with a CA bundle
    (shared/bootstrap.py): with ``connection_verify=<file>`` alone every call would open a new TLS
    connection, a cost the app does not pay and the floor must not either."""
    return emu.async_secret_client(transport=ca_bundle_transport(emu.ca_path), connection_verify=True)


async def b1_rotation(rounds: int, emu: KeyVaultEmulator, azurite: Azurite, pg: PostgresServer) -> Figure:
    """A full postgres-alternating rotation with one consumer, against the same operations issued directly."""
    suffix = uuid.uuid4().hex[:6]
    owner, blue, green = f"b_owner_{suffix}", f"b_blue_{suffix}", f"b_green_{suffix}"
    initial = generate_password()
    with psycopg.connect(pg.admin_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(owner)))
        for role in (blue, green):
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN INHERIT IN ROLE {}").format(sql.Identifier(role),
                                                                                   sql.Identifier(owner)))
            conn.execute(sql.SQL("ALTER ROLE {} SET ROLE {}").format(sql.Identifier(role), sql.Identifier(owner)))
        conn.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(blue), sql.Literal(initial)))
    operator = operator_for(
        targets={"bench-db": {"kind": "postgres", "host": pg.host, "port": pg.port, "database": "postgres",
                              "adminSecret": "pg-admin", "roles": [blue, green], "ownerRole": owner}},
        secrets={"db": {"rotator": "postgres", "target": "bench-db", "intervalDays": 90}},
    )
    emu.put("pg-admin", pg.admin_dsn)
    emu.put("db", pg.dsn(blue, initial))
    emu.put("db-floor", pg.dsn(blue, initial))
    app = ConsumerApp(_no_read, secret_name="db", allow_anonymous=True)
    floor_app = ConsumerApp(_no_read, secret_name="db-floor", allow_anonymous=True)
    with ConsumerServer(app) as server, ConsumerServer(floor_app) as floor_server:
        consumers = {"consumers": {"svc": {"url": server.url, "auth": "none", "acknowledges": "service"}},
                     "secrets": {"db": ["svc"]}}
        container = Container(settings_for(emu, azurite, consumers=consumers), operator=operator)
        client = floor_client(emu)
        session = aiohttp.ClientSession()
        state = {"role": blue}

        async def subject() -> None:
            outcome = await container.engine.run(RotationRequest(VAULT, "db", Trigger.HTTP))
            assert outcome.status == "rotated" and outcome.state == "retired", outcome.reason

        async def floor() -> None:
            current = await client.get_secret("db-floor")
            admin = await client.get_secret("pg-admin")
            old, new = state["role"], (green if state["role"] == blue else blue)
            password = generate_password()
            async with await psycopg.AsyncConnection.connect(admin.value or "", autocommit=True) as conn:
                verifier = conn.pgconn.encrypt_password(password.encode(), new.encode(), b"scram-sha-256").decode()
                await conn.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(new),
                                                                               sql.Literal(verifier)))
            value = pg.dsn(new, password)
            async with await psycopg.AsyncConnection.connect(value) as conn:
                await conn.execute("SELECT 1")
            await client.set_secret("db-floor", value)
            async with session.post(floor_server.url, json={"secretName": "db-floor",
                                                            "version": current.properties.version}) as resp:
                await resp.read()
            async with await psycopg.AsyncConnection.connect(admin.value or "", autocommit=True) as conn:
                await conn.execute(sql.SQL("ALTER ROLE {} PASSWORD NULL").format(sql.Identifier(old)))
            state["role"] = new

        try:
            ratios, s, f = await side_by_side(rounds, subject, floor)
        finally:
            await session.close()
            await client.close()
            await container.aclose()
            await server.astop()
            await floor_server.astop()
    return Figure("B1", "rotation overhead (postgres alternating, 1 consumer)", 1.15, ratios, s, f)


async def _no_read(name: str) -> tuple[str, str]:
    return "", ""


# --------------------------------------------------------------------------- B2

async def b2_duplicate(rounds: int, emu: KeyVaultEmulator, azurite: Azurite) -> Figure:
    emu.put("jwt-signing-key", "bench-initial-jwt-signing-key-0123456789abcdef")
    old = str(latest_of(emu, "jwt-signing-key")["version"])
    container = Container(settings_for(emu, azurite), operator=operator_for())
    event = {"id": str(uuid.uuid4()), "eventType": "Microsoft.KeyVault.SecretNearExpiry", "subject": "jwt-signing-key",
             "topic": f"/subscriptions/x/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/{VAULT}",
             "data": {"VaultName": VAULT, "ObjectType": "Secret", "ObjectName": "jwt-signing-key", "Version": old}}
    assert (await handle_event(event, container)).status == "rotated"
    client = floor_client(emu)

    async def subject() -> None:
        assert (await handle_event(event, container)).status == "skipped"

    async def floor() -> None:
        await client.get_secret("jwt-signing-key")

    try:
        ratios, s, f = await side_by_side(rounds * 5, subject, floor)
    finally:
        await client.close()
        await container.aclose()
    return Figure("B2", "duplicate delivery vs one bare get_secret", 1.3, ratios, s, f)


# --------------------------------------------------------------------------- B3

async def b3_fanout(rounds: int, emu: KeyVaultEmulator, azurite: Azurite) -> Figure:
    from shared.bootstrap import build_notifier
    from shared.domain.ports import Consumer, RotatedNotice

    app = ConsumerApp(_no_read, secret_name="s", allow_anonymous=True)
    app.delay_seconds = 0.1
    with ConsumerServer(app) as server:
        settings = settings_for(emu, azurite, ping_timeout_seconds=5.0, ping_attempts=1)
        notifier = build_notifier(settings, None, None)
        consumers = [Consumer(f"c{i}", f"{server.url}?c={i}") for i in range(100)]
        notice = RotatedNotice(vault=VAULT, vault_url=emu.url, secret_name="s", version="v", previous_version=None,
                               rotation_id="r", rotated_at=datetime.now(UTC), expires_on=None, trigger="bench")
        session = aiohttp.ClientSession()

        async def subject() -> None:
            result = await notifier.notify(notice, consumers)
            assert all(c.ok for c in result.consumers)

        async def floor() -> None:
            async with session.post(server.url, json={"secretName": "s", "version": "v"}) as resp:
                await resp.read()

        try:
            ratios, s, f = await side_by_side(rounds, subject, floor)
        finally:
            await session.close()
            await notifier.close()
            await server.astop()
    return Figure("B3", "notify 100 consumers (100 ms each) vs the slowest single call", 1.5, ratios, s, f)


# --------------------------------------------------------------------------- B4

async def b4_sweep(rounds: int, emu: KeyVaultEmulator, azurite: Azurite) -> Figure:
    for i in range(10_000):
        tags = {"rotation-policy": "random", "rotation-interval-days": "30"} if i % 10 == 0 else None
        emu.put(f"bulk-{i:05d}", "x" * 16, tags=tags)
    container = Container(settings_for(emu, azurite), operator=operator_for())
    client = floor_client(emu)

    async def subject() -> None:
        await plan(container)

    async def floor() -> None:
        # A listing anything could be planned from reads each item's name, tags, state and expiry: the SDK
        # decodes item fields on first access, a cost a loop that looks at nothing would not pay.
        seen = 0
        async for p in client.list_properties_of_secrets():
            seen += bool(p.name) + len(p.tags or {}) + bool(p.enabled) + (p.expires_on is not None)

    try:
        ratios, s, f = await side_by_side(max(3, rounds // 2), subject, floor, warmup=1)
    finally:
        await client.close()
        await container.aclose()
    return Figure("B4", "plan over 10,000 secrets vs a bare listing reading name, tags, state, expiry", 1.2,
                  ratios, s, f)


# --------------------------------------------------------------------------- B5

async def b5_cold_start(rounds: int) -> Figure:
    def run(code: str) -> float:
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, capture_output=True)
        return (time.perf_counter() - t) * 1000

    ratios, s_ms, f_ms = [], [], []
    for i in range(rounds * 2):
        if i % 2:
            f, s = run("import azure.functions"), run("import function_app")
        else:
            s, f = run("import function_app"), run("import azure.functions")
        ratios.append(s / f)
        s_ms.append(s)
        f_ms.append(f)
    return Figure("B5", "cold start: import function_app vs azure.functions", 1.3, ratios, s_ms, f_ms,
                  note="whole interpreter start-up included on both sides")


# --------------------------------------------------------------------------- main

async def main_async(rounds: int, only: set[str]) -> list[Figure]:
    figures: list[Figure] = []
    with Azurite() as azurite:
        if "B1" in only:
            with KeyVaultEmulator(vault_name=VAULT) as emu, PostgresServer(log_statement="none") as pg:
                figures.append(await b1_rotation(rounds, emu, azurite, pg))
        for key, fn in (("B2", b2_duplicate), ("B3", b3_fanout), ("B4", b4_sweep)):
            if key in only:
                with KeyVaultEmulator(vault_name=VAULT) as emu:
                    figures.append(await fn(rounds, emu, azurite))
    if "B5" in only:
        figures.append(await b5_cold_start(rounds))
    return figures


def render(figures: list[Figure], rounds: int) -> str:
    lines = [
        "| | benchmark | min | median | max | subject ms (median) | floor ms (median) | target | |",
        "|---|---|---|---|---|---|---|---|---|",
        *(f.row() for f in sorted(figures, key=lambda f: f.key)),
    ]
    notes = [f"- {f.key}: {f.note}" for f in figures if f.note]
    notes += [f"- {f.key} MISSED its target: {MISS_REASONS[f.key]}" for f in figures
              if f.median > f.target and f.key in MISS_REASONS]
    header = (f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {platform.machine()}, Python "
              f"{platform.python_version()}, {rounds} rounds; ratios are subject / floor per round.")
    return "\n".join([header, "", *lines, *(["", *notes] if notes else [])])


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--only", default="B1,B2,B3,B4,B5")
    parser.add_argument("--out", default=str(ROOT / "docs" / "benchmarks.md"))
    args = parser.parse_args()
    only = {x.strip().upper() for x in args.only.split(",")}
    figures = asyncio.run(main_async(args.rounds, only))
    table = render(figures, args.rounds)
    print(table)
    if args.out and only == {"B1", "B2", "B3", "B4", "B5"}:
        Path(args.out).write_text("# Benchmarks\n\nRegenerate with `make bench` (bench/__main__.py).\n\n"
                                  + table + "\n\n" + EXPLANATION)
    return 0


MISS_REASONS = {
    "B1": (
        "the floor is the bare minimum of round trips (2 vault reads, 1 write, 3 PostgreSQL connections, 1 ping). "
        "The engine adds, on purpose: a per-secret blob lease (acquire, release; an operator's request takes it "
        "before its first read, which is then the one read the decision needs); fencing before every side effect "
        "(apply, the vault write, the acknowledgements' tag write, retirement: each a lease renewal and a read of "
        "the served version, run at once, so a worker frozen past its lease changes nothing); a read after the "
        "write confirming the vault serves what was written; the tag write recording state and acknowledgements; "
        "a login with the value being kept before retirement (the last working credential is never retired; it "
        "runs alongside a fence); and in PostgreSQL re-asserting the role invariants in apply and checking "
        "session_user, current_user and equal memberships in verify. Issue 15 runs the round trips that do not "
        "depend on each other at once and drops the read before the lease: measured once against the previous "
        "engine in the same run (interleaved rounds, same components), the overhead fell by about a third, from "
        "126-161 ms to 86-106 ms, and from 213 to 119 ms with 10 ms of latency added to every vault call (a "
        "network round trip to Azure). What is left is sequential by design: each fence follows the step before "
        "it. Here the vault emulator runs in the bench's own process and the SDKs' own work is CPU on 2 shared "
        "cores, so two calls at once overlap only partly."
    ),
    "B3": (
        "each ping now carries a Standard Webhooks signature and the notifier reads acknowledgements' coverage; "
        "over 100 concurrent pings on 2 cores the median sits at the target and single rounds vary widely "
        "(see min and max)."
    ),
    "B5": (
        "the trigger modules import the rotation record, the container and the inventory views; the engine, "
        "the policy, the operator file's parser, every SDK client and the OpenTelemetry distro load on first "
        "use. On a loaded machine single rounds vary widely (see min and max)."
    ),
}

EXPLANATION = """## What each figure compares

- **B1** one full rotation through the engine (lease, policy, create, apply with a SCRAM verifier, verify with a
  login, a probe and a membership check, commit, tag record, ping, retire) against the floor: the same secret
  read, admin read, `ALTER ROLE`, login check, vault write, ping and `PASSWORD NULL`, issued directly.
- **B2** an already-rotated event (parse, one read, decision) against one bare `get_secret`.
- **B3** the notifier pinging 100 consumers that each answer after 100 ms against one single ping.
- **B4** the plan over 10,000 secrets (1,000 managed) against a bare listing of their properties.
- **B5** a fresh interpreter importing `function_app` against one importing `azure.functions` only.

Every floor's SDK client uses the same transport the app uses against a vault with a CA bundle (the emulator):
one kept-alive TLS pool (`shared/bootstrap.py`, `ca_bundle_transport`). Before issue 15 the app and the floors
both opened a new TLS connection per call, which hid part of the app's overhead inside slow floors; B4's floor
also reads each item's name, tags, state and expiry (the SDK decodes item fields on first access: a listing
that looks at nothing is no floor for anything). The figures are noisy on this 2-core machine: five runs of B3
on 2026-11-29 gave medians of 1.34-1.62 (1.49 the session before) with no change on its code path.
"""


if __name__ == "__main__":
    sys.exit(main())
