"""Read-only views of the managed inventory: one secret's status, and the plan.

They answer "what will happen, and when" for operators without touching
anything (the write path over the same listing is :mod:`shared.service.sweep`).

All I/O goes through the ``SecretStore`` port and reads properties only
(Key Vault pages them for us); no value is ever read here, so the views need
no more than the vault's list and read-metadata rights.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

from shared.domain.errors import NotManaged, PolicyError, SecretNotFound
from shared.domain.model import SecretProperties
from shared.domain.record import State, Tag, parse_time, pending_state

if TYPE_CHECKING:
    from shared.config.operator_file import OperatorConfig
    from shared.config.settings import Settings
    from shared.domain.policy import Policy
    from shared.domain.ports import SecretStore



class InventoryDeps(Protocol):
    """What the views need from the composition root (``Container`` satisfies it)."""

    @property
    def settings(self) -> Settings: ...

    @property
    def operator(self) -> OperatorConfig: ...

    def store(self, vault: str) -> SecretStore: ...


def resolve_listed(name: str, tags: Mapping[str, str], deps: InventoryDeps) -> Policy | None:
    """The policy module (and the operator file's parser) is loaded on first use, not at cold start."""
    from shared.domain.policy import resolve_policy

    return resolve_policy(name, tags, deps.operator, deps.settings.lead_days)


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


def utc_now() -> datetime:
    return datetime.now(UTC)


def chosen_vaults(settings: Settings, vaults: Iterable[str] | None) -> list[str]:
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
        policy = resolve_listed(name, current.tags, deps)
    except PolicyError as exc:
        return {**status, "managed": True, "policy": None, "policyError": exc.message}
    if policy is None:
        raise not_managed
    due, why = policy.is_due(current, utc_now(), settings.lead_days)
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
    now = utc_now()
    entries: list[dict[str, Any]] = []
    for vault in chosen_vaults(settings, vaults):
        async for props in deps.store(vault).list_secrets():
            try:
                policy = resolve_listed(props.name, props.tags, deps)
            except PolicyError as exc:
                entries.append({"vault": vault, "name": props.name, "error": exc.message})
                continue
            if policy is not None:
                entries.append(_plan_entry(vault, props, policy, now, settings.lead_days))
    return entries
