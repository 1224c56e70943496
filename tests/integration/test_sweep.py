"""The safety-net sweep against the Key Vault emulator (real SDK, paging,
retries) and Azurite leases."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import azure.functions.timer
import pytest

from functions.timer import rotation_sweep
from kvemulator import KeyVaultEmulator
from shared.adapters.keyvault import KeyVaultStore
from shared.bootstrap import Container
from shared.config.operator_file import OperatorConfig
from shared.config.settings import Settings
from shared.domain.record import Outcome, RotationRequest, Trigger
from shared.service.engine import RotationEngine
from shared.service.sweep import SweepDeps, sweep
from tests.conftest import VAULT, make_settings

RANDOM_TAGS = {"rotation-policy": "random", "rotation-interval-days": "30"}
# Filler values stay under the leak scan's minimum length (tests.support.leakscan.MIN_LEN):
# scanning 10,000 never-read values against the whole suite's log would dominate its runtime.
FILLER = "filler"


def in_days(days: float) -> datetime:
    return datetime.now(UTC) + timedelta(days=days)


def seed(emu: KeyVaultEmulator, name: str, *, days_left: float | None, tags: dict[str, str] | None = None,
         value: str | None = None) -> str:
    props = emu.put(name, value or f"{name}-initial-value-0123456789",
                    expires_on=in_days(days_left) if days_left is not None else None, tags=tags)
    return str(props["version"])


async def test_a_lost_near_expiry_event_is_caught_by_the_sweep(emulator: KeyVaultEmulator,
                                                               container: Container) -> None:
    old = seed(emulator, "jwt-signing-key", days_left=10)  # inside the 30-day window; no event delivered
    summary = await sweep(container)
    assert (summary.scanned, summary.managed, summary.due, summary.rotated, summary.failed) == (1, 1, 1, 1, 0)
    versions = emulator.versions("jwt-signing-key")
    assert len(versions) == 2
    assert versions[-1]["tags"]["rotated-trigger"] == "sweep"
    assert versions[-1]["tags"]["rotated-from"] == old


async def test_a_managed_secret_without_expiry_or_already_expired_is_rotated(emulator: KeyVaultEmulator,
                                                                             container: Container) -> None:
    seed(emulator, "no-expiry-token", days_left=None, tags=RANDOM_TAGS)
    seed(emulator, "expired-token", days_left=-1, tags=RANDOM_TAGS)
    summary = await sweep(container)
    assert (summary.due, summary.rotated) == (2, 2)
    assert len(emulator.versions("no-expiry-token")) == len(emulator.versions("expired-token")) == 2


async def test_manual_unmanaged_and_not_due_secrets_are_left_alone(emulator: KeyVaultEmulator,
                                                                   container: Container) -> None:
    seed(emulator, "openai-api-key", days_left=1)
    seed(emulator, "plain-secret", days_left=1)
    seed(emulator, "session-encryption-key", days_left=200)
    emulator.reset_counters()
    summary = await sweep(container)
    assert (summary.scanned, summary.managed, summary.due, summary.rotated, summary.skipped) == (3, 2, 0, 0, 0)
    assert emulator.count() == emulator.count("GET", "secrets")  # listed, nothing read or written
    assert all(len(emulator.versions(n)) == 1 for n in emulator.secret_names())


async def test_a_sweep_over_ten_thousand_secrets_rotates_only_the_due_ones(emulator: KeyVaultEmulator,
                                                                          container: Container) -> None:
    due = {f"due-{i:02d}" for i in range(10)}
    managed_not_due = 0
    manual = 0
    started = time.perf_counter()
    for i in range(10_000 - len(due)):
        name = f"app-secret-{i:05d}"
        if i % 4 == 0:
            emulator.put(name, FILLER, tags=RANDOM_TAGS, expires_on=in_days(200))
            managed_not_due += 1
        elif i % 50 == 1:
            emulator.put(name, FILLER, tags={"rotation-policy": "manual"}, expires_on=in_days(1))
            manual += 1
        else:
            emulator.put(name, FILLER, expires_on=in_days(1) if i % 2 else None)
    for name in due:
        seed(emulator, name, days_left=3, tags=RANDOM_TAGS)
    seeded = time.perf_counter() - started

    started = time.perf_counter()
    summary = await sweep(container)
    took = time.perf_counter() - started
    print(f"\n10k sweep: seeded in {seeded:.1f}s, swept in {took:.1f}s "
          f"({emulator.count('GET', 'secrets')} list pages): {summary.line()}")

    assert summary.scanned == 10_000
    assert summary.managed == managed_not_due + manual + len(due)
    assert (summary.due, summary.rotated, summary.failed, summary.skipped) == (10, 10, 0, 0)
    rotated = {n for n in emulator.secret_names() if len(emulator.versions(n)) > 1}
    assert rotated == due
    assert took < 120


@dataclass
class _CountingEngine:
    """Delegates to the real engine and records how many runs overlap."""

    real: RotationEngine
    running: int = 0
    peak: int = 0

    async def _track(self, outcome: asyncio.Future[Outcome] | Any) -> Outcome:
        self.running += 1
        self.peak = max(self.peak, self.running)
        try:
            await asyncio.sleep(0.05)  # hold the slot long enough for overlaps to show
            result: Outcome = await outcome
            return result
        finally:
            self.running -= 1

    async def run(self, req: RotationRequest) -> Outcome:
        return await self._track(self.real.run(req))

    async def complete_pending(self, vault: str, secret_name: str, trigger: Trigger = Trigger.SWEEP) -> Outcome:
        return await self._track(self.real.complete_pending(vault, secret_name, trigger))


@dataclass
class _Deps(SweepDeps):
    container: Container
    counting: _CountingEngine

    @property
    def engine(self) -> Any:  # the counting wrapper has just the engine calls the sweep makes
        return self.counting

    @property
    def settings(self) -> Settings:
        return self.container.settings

    @property
    def operator(self) -> OperatorConfig:
        return self.container.operator

    def store(self, vault: str) -> KeyVaultStore:
        return self.container.store(vault)


async def test_concurrency_never_exceeds_the_configured_limit(emulator: KeyVaultEmulator, azurite: Any) -> None:
    for i in range(12):
        seed(emulator, f"due-{i:02d}", days_left=2, tags=RANDOM_TAGS)
    c = Container(make_settings(emulator, azurite, sweep_concurrency=3))
    try:
        engine = _CountingEngine(c.engine)
        summary = await sweep(_Deps(c, engine))
    finally:
        await c.aclose()
    assert summary.rotated == 12
    assert engine.peak == 3


async def test_the_sweep_completes_a_pending_retirement(emulator: KeyVaultEmulator, container: Container) -> None:
    old = seed(emulator, "jwt-signing-key", days_left=20)
    rotated_at = datetime.now(UTC) - timedelta(days=3)  # past the token overlap and the 24 h grace
    current = seed(emulator, "jwt-signing-key", days_left=57, tags={
        "rotated-id": "a" * 32, "rotated-by": "jwt", "rotated-at": rotated_at.isoformat(timespec="seconds"),
        "rotated-from": old, "rotated-trigger": "SecretNearExpiry", "rotated-state": "notified",
        "rotated-acks": "0/0",
    })
    summary = await sweep(container)
    assert (summary.due, summary.pending, summary.completed, summary.rotated) == (0, 1, 1, 0)
    versions = {v["version"]: v for v in emulator.versions("jwt-signing-key")}
    assert len(versions) == 2
    assert versions[old]["attributes"]["enabled"] is False
    assert versions[current]["tags"]["rotated-state"] == "retired"


async def test_a_pending_retirement_still_in_its_grace_period_is_skipped(emulator: KeyVaultEmulator,
                                                                         container: Container) -> None:
    old = seed(emulator, "jwt-signing-key", days_left=20)
    seed(emulator, "jwt-signing-key", days_left=59, tags={
        "rotated-id": "b" * 32, "rotated-by": "jwt", "rotated-at": datetime.now(UTC).isoformat(timespec="seconds"),
        "rotated-from": old, "rotated-trigger": "SecretNearExpiry", "rotated-state": "notified",
        "rotated-acks": "0/0",
    })
    summary = await sweep(container)
    assert (summary.pending, summary.skipped, summary.completed) == (1, 1, 0)
    assert emulator.versions("jwt-signing-key")[0]["attributes"]["enabled"] is True


async def test_a_throttling_burst_during_the_sweep_is_absorbed(emulator: KeyVaultEmulator,
                                                               container: Container) -> None:
    for i in range(3):
        seed(emulator, f"due-{i}", days_left=2, tags=RANDOM_TAGS)
    emulator.reset_counters()
    emulator.faults.add(status=429, retry_after=1, times=3)
    summary = await sweep(container)
    assert (summary.rotated, summary.failed) == (3, 0)
    throttled = [r for r in emulator.requests if r.status == 429]
    assert len(throttled) == 3


async def test_one_secret_whose_vault_calls_keep_failing_is_counted_and_the_rest_continue(
        emulator: KeyVaultEmulator, azurite: Any, caplog: pytest.LogCaptureFixture) -> None:
    for name in ("due-a", "due-b", "due-c"):
        seed(emulator, name, days_left=2, tags=RANDOM_TAGS)
    c = Container(make_settings(emulator, azurite, vault_max_retries=0))
    try:
        emulator.faults.add(status=503, times=None, path_regex=r"^/secrets/due-b/")
        with caplog.at_level(logging.INFO, logger="shared.service.sweep"):
            summary = await sweep(c)
    finally:
        emulator.faults.clear()
        await c.aclose()
    assert (summary.due, summary.rotated, summary.failed) == (3, 2, 1)
    assert summary.errors == [{"vault": VAULT, "secret": "due-b", "code": "VaultUnavailable",
                               "message": summary.errors[0]["message"]}]
    assert len(emulator.versions("due-b")) == 1
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("sweep of")]
    assert len(lines) == 1 and "failed=1" in lines[0] and "due-b: VaultUnavailable" in lines[0]
    for name in ("due-a", "due-b", "due-c"):
        for version in emulator.versions(name):
            assert version["value"] not in lines[0]


async def test_a_vault_whose_listing_fails_is_counted_without_aborting(emulator: KeyVaultEmulator,
                                                                       azurite: Any) -> None:
    c = Container(make_settings(emulator, azurite, vault_max_retries=0))
    try:
        emulator.faults.add(status=503, times=None, path_regex=r"^/secrets/?$")
        summary = await sweep(c)
    finally:
        emulator.faults.clear()
        await c.aclose()
    assert summary.failed == 1 and summary.errors[0]["secret"] is None
    assert summary.errors[0]["code"] == "VaultUnavailable"


async def test_the_timer_function_sweeps_and_logs_one_summary_line(emulator: KeyVaultEmulator,
                                                                   container: Container,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    seed(emulator, "session-encryption-key", days_left=5)
    timer = azure.functions.timer.TimerRequest(past_due=True)
    with caplog.at_level(logging.INFO, logger="shared.service.sweep"):
        assert await rotation_sweep(timer) is None
    assert len(emulator.versions("session-encryption-key")) == 2
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("sweep of")]
    assert lines == [lines[0]] and "rotated=1" in lines[0]


@pytest.fixture
async def fresh_container(emulator: KeyVaultEmulator, azurite: Any) -> AsyncIterator[Container]:
    c = Container(make_settings(emulator, azurite))
    try:
        yield c
    finally:
        await c.aclose()


async def test_a_second_sweep_right_after_the_first_rotates_nothing(emulator: KeyVaultEmulator,
                                                                    fresh_container: Container) -> None:
    seed(emulator, "session-encryption-key", days_left=5)
    first = await sweep(fresh_container)
    second = await sweep(fresh_container)
    assert first.rotated == 1
    assert (second.due, second.pending, second.rotated, second.skipped) == (0, 1, 0, 1)
    assert len(emulator.versions("session-encryption-key")) == 2
