"""Read-only views of the managed inventory, and the safety-net sweep.

Near-expiry events are the primary trigger, but Event Grid can lose one (a
subscription created after the event, a dead-lettered delivery, a secret
created without an expiry). The sweep closes that gap: it lists every allowed
vault and hands whatever looks due, or whatever carries an unfinished
rotation, to the engine, which decides again under its lease. The status and
plan views answer "what will happen, and when" for operators without touching
anything.

All I/O goes through the ``SecretStore`` port and reads properties only
(Key Vault pages them for us); no value is ever read here, so the views need
no more than the vault's list and read-metadata rights.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

from shared.errors import (
    ManualOnly,
    NotManaged,
    PolicyError,
    RotationError,
    RotationInProgress,
    SecretNotFound,
)
from shared.model import SecretProperties
from shared.record import Outcome, RotationRequest, State, Tag, Trigger, parse_time, pending_state

if TYPE_CHECKING:
    from shared.engine import RotationEngine
    from shared.operator_config import OperatorConfig
    from shared.policy import Policy
    from shared.ports import SecretStore
    from shared.settings import Settings
    from shared.telemetry import SweepObserver, Telemetry

log = logging.getLogger(__name__)

# Errors that mean "the secret changed between listing and acting": not a failure of the sweep.
_RACE_ERRORS = (SecretNotFound, NotManaged, ManualOnly, RotationInProgress)


class InventoryDeps(Protocol):
    """What the views need from the composition root (``Container`` satisfies it)."""

    @property
    def settings(self) -> Settings: ...

    @property
    def operator(self) -> OperatorConfig: ...

    def store(self, vault: str) -> SecretStore: ...


class SweepDeps(InventoryDeps, Protocol):
    @property
    def engine(self) -> RotationEngine: ...


def _resolve(name: str, tags: Mapping[str, str], deps: InventoryDeps) -> Policy | None:
    """The policy module (and the operator file's parser) is loaded on first use, not at cold start."""
    from shared.policy import resolve_policy

    return resolve_policy(name, tags, deps.operator, deps.settings.lead_days)


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


def _now() -> datetime:
    return datetime.now(UTC)


def _vaults(settings: Settings, vaults: Iterable[str] | None) -> list[str]:
    """The vaults to look at; naming one off the allow-list is refused, not ignored."""
    if vaults is None:
        return list(settings.allowed_vaults)
    chosen: list[str] = []
    for vault in vaults:
        settings.vault_url(vault)  # raises VaultNotAllowed
        name = vault.strip().lower()
        if name not in chosen:
            chosen.append(name)
    return chosen


def _policy_dict(policy: Policy) -> dict[str, Any]:
    return {
        "rotator": policy.kind,
        "manual": policy.manual,
        "intervalDays": policy.interval_days,
        "validityDays": policy.validity_days,
        "source": policy.source,
        "options": dict(sorted(policy.options.items())),
        "target": policy.target.name if policy.target is not None else None,
        "generator": policy.generator,
        "consumers": policy.consumers_tag,
    }


def _last_rotation(tags: Mapping[str, str]) -> dict[str, Any] | None:
    if not tags.get(Tag.ID):
        return None
    pending = tags.get(Tag.PENDING, "")
    return {
        "rotationId": tags.get(Tag.ID),
        "rotator": tags.get(Tag.BY),
        "trigger": tags.get(Tag.TRIGGER),
        "at": tags.get(Tag.AT),
        "state": tags.get(Tag.STATE),
        "acks": tags.get(Tag.ACKS),
        "pendingConsumers": [c for c in pending.split(",") if c],
        "previousVersion": tags.get(Tag.FROM),
        "reason": tags.get(Tag.REASON),
        "caller": tags.get(Tag.CALLER),
    }


async def secret_status(deps: InventoryDeps, vault: str, name: str) -> dict[str, Any]:
    """Everything an operator asks about one secret's rotation, without its value.

    Raises VaultNotAllowed, or NotManaged both for a secret that does not
    exist and for one that is not managed: a caller learns nothing about
    secrets the app does not manage. A policy that exists but cannot work is
    reported in ``policyError`` rather than raised, because that is exactly
    what the operator is looking for.
    """
    settings = deps.settings
    settings.vault_url(vault)
    not_managed = NotManaged(f"no managed secret named {name}")
    if not deps.operator.may_be_managed(name):
        raise not_managed  # decided by the operator file alone: the vault is not even asked
    store = deps.store(vault)
    try:
        current = await store.get_properties(name)
    except SecretNotFound:
        raise not_managed from None
    status: dict[str, Any] = {
        "vault": store.vault,
        "secretName": name,
        "currentVersion": current.version,
        "enabled": current.enabled,
        "created": _iso(current.created_on),
        "updated": _iso(current.updated_on),
        "notBefore": _iso(current.not_before),
        "expires": _iso(current.expires_on),
        "contentType": current.content_type,
    }
    try:
        policy = _resolve(name, current.tags, deps)
    except PolicyError as exc:
        return {**status, "managed": True, "policy": None, "policyError": exc.message}
    if policy is None:
        raise not_managed
    due, why = policy.is_due(current, _now(), settings.lead_days)
    status.update(
        {
            "managed": True,
            "policy": _policy_dict(policy),
            "nextRotation": _iso(policy.next_rotation(current, settings.lead_days)),
            "due": due,
            "dueReason": why,
            "lastRotation": _last_rotation(current.tags),
            # When a liveness check last found the served value refused downstream and repaired it.
            "lastRepair": current.tags.get(Tag.REPAIRED),
            "pendingRetirement": await _pending_retirement(store, name, current, settings),
        }
    )
    return status


async def _pending_retirement(
    store: SecretStore, name: str, current: SecretProperties, settings: Settings
) -> dict[str, Any] | None:
    tags = current.tags
    state = pending_state(tags)
    if state is None:
        return None
    previous = tags.get(Tag.FROM)
    previous_enabled: bool | None = None
    if previous:
        async for props in store.list_versions(name):
            if props.version == previous:
                previous_enabled = props.enabled
                break
    rotated_at = parse_time(tags.get(Tag.AT))
    grace_until = rotated_at + timedelta(hours=settings.grace_period_hours) if rotated_at else None
    return {
        "state": state,
        "waitingFor": "disabling the replaced version" if state == State.RETIRED else "retirement",
        "previousVersion": previous,
        "previousEnabled": previous_enabled,
        "pendingConsumers": [c for c in tags.get(Tag.PENDING, "").split(",") if c],
        "graceUntil": _iso(grace_until),
    }


def _plan_entry(vault: str, props: SecretProperties, policy: Policy, now: datetime, lead_days: int) -> dict[str, Any]:
    due = False if policy.manual else policy.is_due(props, now, lead_days)[0]
    return {
        "vault": vault,
        "name": props.name,
        "rotator": policy.kind,
        "manual": policy.manual,
        "enabled": props.enabled,
        "expires": _iso(props.expires_on),
        "nextRotation": _iso(policy.next_rotation(props, lead_days)),
        "overdue": due,
        "pendingRotation": pending_state(props.tags),
    }


async def plan(deps: InventoryDeps, vaults: Iterable[str] | None = None) -> list[dict[str, Any]]:
    """Every managed secret of the given (default: all allowed) vaults and when it rotates next.

    Secrets whose policy tags are invalid are listed with ``error`` instead of a
    schedule, so one bad tag does not hide the rest of the vault.
    """
    settings = deps.settings
    now = _now()
    entries: list[dict[str, Any]] = []
    for vault in _vaults(settings, vaults):
        async for props in deps.store(vault).list_secrets():
            try:
                policy = _resolve(props.name, props.tags, deps)
            except PolicyError as exc:
                entries.append({"vault": vault, "name": props.name, "error": exc.message})
                continue
            if policy is not None:
                entries.append(_plan_entry(vault, props, policy, now, settings.lead_days))
    return entries


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
    summary = SweepSummary(vaults=_vaults(settings, vaults))
    from shared.telemetry import NO_TELEMETRY

    telemetry: Telemetry = getattr(deps, "telemetry", NO_TELEMETRY)
    with telemetry.sweep() as observer:
        await _sweep(deps, settings, summary, observer)
    summary.seconds = round(time.perf_counter() - started, 3)
    level = logging.WARNING if summary.failed or summary.repaired else logging.INFO
    log.log(level, summary.line(), extra={"sweep": {k: v for k, v in summary.to_dict().items() if k != "errors"}})
    return summary


async def _sweep(deps: SweepDeps, settings: Settings, summary: SweepSummary, observer: SweepObserver) -> None:
    limit = asyncio.Semaphore(settings.sweep_concurrency)
    now = _now()

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
                policy = _resolve(props.name, props.tags, deps)
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
