"""Event Grid trigger: Key Vault near-expiry and expiry events.

Event Grid retries a delivery that fails and stops retrying one that
succeeds, so the mapping matters: a transient failure (vault throttled, a
downstream system down, the lease busy) raises, and Event Grid redelivers;
a permanent one (malformed event, foreign vault, unmanaged or manual-only
secret) is logged and acknowledged, because retrying it for 24 hours cannot
help.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import azure.functions as func

from shared.container import Container, get_container
from shared.errors import PermanentError, RotationError

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
        return {
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
    """Parse and run one event. Raises only what Event Grid should retry."""
    from shared.events import parse_event

    try:
        parsed = parse_event(raw, container.settings)
        if parsed.request is None:
            log.info("event ignored", extra={"event_type": parsed.event_type, "event_id": parsed.event_id})
            return EventResult(True, "ignored", f"event type {parsed.event_type} is not handled")
        outcome = await container.engine.run(parsed.request)
    except PermanentError as exc:
        log.warning("event rejected: %s", exc.message, extra={"error_code": exc.code})
        return EventResult(True, "rejected", exc.message)
    except RotationError as exc:
        log.warning("event will be retried: %s", exc.message, extra={"error_code": exc.code})
        raise
    log.info(
        "event handled: %s",
        outcome.status,
        extra={"rotation_id": outcome.rotation_id, "secret": outcome.secret_name, "vault": outcome.vault},
    )
    return EventResult(True, outcome.status, outcome.reason, outcome.to_dict())


@bp.function_name("rotate_on_event")
@bp.event_grid_trigger(arg_name="event")
async def rotate_on_event(event: func.EventGridEvent) -> None:
    container = get_container()
    try:
        await handle_event(event_to_dict(event), container)
    finally:
        await container.flush_telemetry()
