"""The safety-net sweep: the timer's write path over the listed inventory.

Near-expiry events are the primary trigger, but Event Grid can lose one (a
subscription created after the event, a dead-lettered delivery, a secret
created without an expiry). The sweep closes that gap: it lists every allowed
vault and hands whatever looks due, or whatever carries an unfinished
rotation, to the engine, which decides again under its lease. It reads
properties only; the engine reads values under its lease.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from shared.domain.errors import ManualOnly, NotManaged, PolicyError, RotationError, RotationInProgress, SecretNotFound
from shared.domain.record import Outcome, RotationRequest, Trigger, pending_state
from shared.service.views import InventoryDeps, chosen_vaults, resolve_listed, utc_now

if TYPE_CHECKING:
    from shared.adapters.telemetry import SweepObserver, Telemetry
    from shared.config.settings import Settings
    from shared.service.engine import RotationEngine

log = logging.getLogger(__name__)

# Errors that mean "the secret changed between listing and acting": not a failure of the sweep.
_RACE_ERRORS = (SecretNotFound, NotManaged, ManualOnly, RotationInProgress)


class SweepDeps(InventoryDeps, Protocol):
    @property
    def engine(self) -> RotationEngine: ...


@dataclass
class SweepSummary:
    scanned: int = 0
    managed: int = 0
    due: int = 0
    pending: int = 0
    rotated: int = 0
    completed: int = 0
    checked: int = 0  # not due and nothing pending: served value checked downstream
    repaired: int = 0
    skipped: int = 0
    failed: int = 0
    errors: list[dict[str, str | None]] = field(default_factory=list)
    vaults: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def fail(self, vault: str, name: str | None, code: str, message: str) -> None:
        self.failed += 1
        self.errors.append({"vault": vault, "secret": name, "code": code, "message": message})

    def count(self, outcome: Outcome) -> None:
        if outcome.status == "rotated":
            self.rotated += 1
        elif outcome.status == "completed":
            self.completed += 1
        elif outcome.status == "repaired":
            self.repaired += 1
        elif outcome.liveness == "ok":
            pass  # a liveness check that found the served value working: counted in ``checked``
        else:
            self.skipped += 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "vaults": list(self.vaults),
            "scanned": self.scanned,
            "managed": self.managed,
            "due": self.due,
            "pending": self.pending,
            "rotated": self.rotated,
            "completed": self.completed,
            "checked": self.checked,
            "repaired": self.repaired,
            "skipped": self.skipped,
            "failed": self.failed,
            "seconds": self.seconds,
            "errors": list(self.errors),
        }

    def line(self) -> str:
        text = (
            f"sweep of {','.join(self.vaults) or 'no vault'}: scanned={self.scanned} managed={self.managed} "
            f"due={self.due} pending={self.pending} rotated={self.rotated} completed={self.completed} "
            f"checked={self.checked} repaired={self.repaired} skipped={self.skipped} failed={self.failed} "
            f"in {self.seconds:.1f}s"
        )
        if self.errors:
            text += "; errors: " + "; ".join(
                f"{e['vault']}/{e['secret'] or '*'}: {e['code']}: {e['message']}" for e in self.errors
            )
        return text


async def sweep(deps: SweepDeps, vaults: Iterable[str] | None = None) -> SweepSummary:
    """Rotate what is due, finish what is unfinished, and prove that the value served for every
    secret with a downstream (PostgreSQL, Redis) still works there, repairing it if not.

    Only a cheap first filter happens here, on listed properties; the engine
    re-reads and decides under its lease, so racing an event delivery or an
    HTTP request is harmless. One secret failing (Key Vault gave up after its
    retries, a downstream system is down) is counted and the sweep goes on.
    The semaphore is taken before a task is created, so a vault with many due
    secrets holds at most ``sweep_concurrency`` of them in flight and the
    listing waits instead of piling up tasks.
    """
    settings = deps.settings
    started = time.perf_counter()
    summary = SweepSummary(vaults=chosen_vaults(settings, vaults))
    from shared.adapters.telemetry import NO_TELEMETRY

    telemetry: Telemetry = getattr(deps, "telemetry", NO_TELEMETRY)
    with telemetry.sweep() as observer:
        await _sweep(deps, settings, summary, observer)
    summary.seconds = round(time.perf_counter() - started, 3)
    level = logging.WARNING if summary.failed or summary.repaired else logging.INFO
    log.log(level, summary.line(), extra={"sweep": {k: v for k, v in summary.to_dict().items() if k != "errors"}})
    return summary


async def _sweep(deps: SweepDeps, settings: Settings, summary: SweepSummary, observer: SweepObserver) -> None:
    limit = asyncio.Semaphore(settings.sweep_concurrency)
    now = utc_now()

    async def act(vault: str, name: str, due: bool) -> None:
        try:
            engine = deps.engine
            if due:
                outcome = await engine.run(RotationRequest(vault, name, Trigger.SWEEP))
            else:
                outcome = await engine.complete_pending(vault, name, Trigger.SWEEP)
            summary.count(outcome)
        except _RACE_ERRORS as exc:
            log.info("sweep: %s/%s skipped: %s", vault, name, exc.message, extra={"error_code": exc.code})
            summary.skipped += 1
        except RotationError as exc:
            log.warning("sweep: %s/%s failed: %s", vault, name, exc.message, extra={"error_code": exc.code})
            summary.fail(vault, name, exc.code, exc.message)
        except Exception:
            log.exception("sweep: %s/%s failed unexpectedly", vault, name)
            summary.fail(vault, name, "InternalError", "unexpected error; see the function log")
        finally:
            limit.release()

    async def walk(vault: str, tasks: asyncio.TaskGroup) -> None:
        async for props in deps.store(vault).list_secrets():
            summary.scanned += 1
            try:
                policy = resolve_listed(props.name, props.tags, deps)
            except PolicyError as exc:
                summary.managed += 1
                summary.fail(vault, props.name, exc.code, exc.message)
                continue
            if policy is None:
                continue
            summary.managed += 1
            observer.secret(vault, props, policy, now, settings.lead_days)
            if policy.manual or not props.enabled:
                continue  # the engine would refuse both; nothing the sweep may do
            due = policy.is_due(props, now, settings.lead_days)[0]
            if due:
                summary.due += 1
            elif pending_state(props.tags) is not None:
                summary.pending += 1
            elif deps.engine.checks_liveness(policy.kind):
                summary.checked += 1  # the engine proves the served value works, and repairs it if not
            else:
                continue
            await limit.acquire()
            tasks.create_task(act(vault, props.name, due))

    async with asyncio.TaskGroup() as tasks:
        for vault in summary.vaults:
            try:
                await walk(vault, tasks)
            except RotationError as exc:
                log.warning("sweep: listing %s failed: %s", vault, exc.message, extra={"error_code": exc.code})
                summary.fail(vault, None, exc.code, exc.message)
            except Exception:
                log.exception("sweep: listing %s failed unexpectedly", vault)
                summary.fail(vault, None, "InternalError", "unexpected error; see the function log")
    observer.done(summary)
