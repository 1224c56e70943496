"""Event Grid trigger: Key Vault near-expiry and expiry events.

Event Grid retries a delivery that fails and stops retrying one that
succeeds, so the mapping matters. One rule: **an event that names a managed
secret is never acknowledged and forgotten** — it is acted on (the engine
decides on the vault's current state: rotate, or skip with the reason) or
the function raises, so Event Grid retries and finally dead-letters it. So:

* a transient failure (vault throttled, a downstream system down, the lease
  busy) raises;
* a managed secret whose policy or the app's configuration is broken raises
  too (a fix within Event Grid's retry window lets a retry rotate it);
* an unclear event (``data`` and ``subject`` name different secrets, the
  source is another vault, no type) raises when any secret it may mean is
  managed, and is acknowledged otherwise;
* a flawed but clear event (version missing or malformed, stray whitespace,
  odd key casing) is acted on, on the vault's current state;
* the rest is acknowledged: an unhandled type, a vault off the allow-list,
  an unmanaged, manual-only or deleted secret, an event naming nothing.

Every flaw and every raise is logged at WARNING with the secret's name and
why (``shared.service.events`` says what counts as a flaw).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import azure.functions as func

from shared.bootstrap import Container, get_container
from shared.domain.errors import (
    ConfigurationError,
    ManualOnly,
    NotManaged,
    PermanentError,
    PolicyError,
    RotationError,
    SecretNotFound,
    UnclearEvent,
    VaultNotAllowed,
)
from shared.domain.record import RotationRequest, Trigger

log = logging.getLogger(__name__)

bp = func.Blueprint()


@dataclass(frozen=True)
class EventResult:
    acknowledged: bool
    status: str  # rotated | skipped | completed | ignored | rejected
    reason: str
    outcome: dict[str, Any] | None = None


def event_to_dict(event: Any) -> dict[str, Any]:
    """The raw JSON shape of an Event Grid or CloudEvents event given by the worker."""
    if isinstance(event, Mapping):
        return dict(event)
    if hasattr(event, "specversion"):
        # Extension attributes first: a delivery with Event Grid field names (eventType, topic) next to
        # the CloudEvents marker keeps them, and the core attributes win over any namesake.
        extensions = getattr(event, "extension_attrs", None)
        return {
            **(dict(extensions) if isinstance(extensions, Mapping) else {}),
            "specversion": event.specversion,
            "id": event.id,
            "type": event.type,
            "source": event.source,
            "subject": event.subject,
            "data": event.get_json(),
        }
    return {
        "id": event.id,
        "eventType": event.event_type,
        "topic": event.topic,
        "subject": event.subject,
        "data": event.get_json(),
    }


async def handle_event(raw: Mapping[str, Any], container: Container) -> EventResult:
    """Parse and run one event. Raises only what Event Grid should retry (see the module docstring)."""
    from shared.service.events import parse_event

    secret: str | None = None
    try:
        parsed = parse_event(raw, container.settings)
        if parsed.request is None:
            log.info("event ignored", extra={"event_type": parsed.event_type, "event_id": parsed.event_id})
            return EventResult(True, "ignored", f"event type {parsed.event_type} is not handled")
        request = parsed.request
        secret = request.secret_name
        if parsed.flaws:
            acting = "on the vault's current state" if request.event_version is None else "on the event"
            log.warning(
                "event for secret %s taken liberally (%s); acting %s",
                secret,
                "; ".join(parsed.flaws),
                acting,
                extra={"secret": secret, "vault": request.vault, "event_id": parsed.event_id},
            )
        outcome = await container.engine.run(request)
    except UnclearEvent as exc:
        return await _unclear(exc, container)
    except (PolicyError, ConfigurationError) as exc:
        log.warning(
            "event for managed secret %s will be retried, then dead-lettered: %s",
            secret or "(unknown: the app's settings are invalid)",
            exc.message,
            extra={"error_code": exc.code, "secret": secret},
        )
        raise
    except PermanentError as exc:
        log.warning("event rejected: %s", exc.message, extra={"error_code": exc.code, "secret": secret})
        return EventResult(True, "rejected", exc.message)
    except RotationError as exc:
        log.warning(
            "event for secret %s will be retried: %s", secret, exc.message, extra={"error_code": exc.code}
        )
        raise
    log.info(
        "event handled: %s (%s)",
        outcome.status,
        outcome.reason,
        extra={"rotation_id": outcome.rotation_id, "secret": outcome.secret_name, "vault": outcome.vault},
    )
    return EventResult(True, outcome.status, outcome.reason, outcome.to_dict())


async def _unclear(exc: UnclearEvent, container: Container) -> EventResult:
    """Acknowledge an unclear event only if none of the secrets it may mean is managed; else raise it."""
    try:
        managed = [f"{vault}/{name}" for vault, name in exc.candidates if await _is_managed(container, vault, name)]
    except RotationError as failure:  # the vault could not be asked: retry rather than guess
        names = ", ".join(f"{vault}/{name}" for vault, name in exc.candidates)
        log.warning("event for secret %s will be retried: %s; %s", names, exc.message, failure.message,
                    extra={"error_code": failure.code})
        raise
    if not managed:
        reason = f"{exc.message} (no managed secret among those it may name)"
        log.warning("event rejected: %s", reason)
        return EventResult(True, "rejected", reason)
    log.warning(
        "event for managed secret %s will be retried, then dead-lettered: %s",
        ", ".join(managed),
        exc.message,
        extra={"error_code": exc.code, "secret": managed[0]},
    )
    raise exc


async def _is_managed(container: Container, vault: str, name: str) -> bool:
    """Whether a rotation policy covers the secret (a dry run: reads, never writes)."""
    probe = RotationRequest(vault=vault, secret_name=name, trigger=Trigger.NEAR_EXPIRY, dry_run=True)
    try:
        await container.engine.run(probe)
    except (NotManaged, SecretNotFound, ManualOnly, VaultNotAllowed):
        return False
    except PermanentError:
        return True  # managed, with a policy or configuration that needs fixing
    return True


@bp.function_name("rotate_on_event")
@bp.event_grid_trigger(arg_name="event")
async def rotate_on_event(event: func.EventGridEvent) -> None:
    container = get_container()
    try:
        await handle_event(event_to_dict(event), container)
    finally:
        await container.flush_telemetry()
