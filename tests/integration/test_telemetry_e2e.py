"""Telemetry on real components: the Event Grid function, the real Key Vault SDK over HTTPS to the
emulator, the lease in Azurite, reported through the OpenTelemetry SDK's in-memory exporters.

The Azure SDK's own spans (azure-core-tracing-opentelemetry, which the Azure
Monitor distro turns on in Azure) are children of the rotation span, so one
trace shows every Key Vault call a rotation made.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan

from functions.event_grid import handle_event
from functions.timer import handle_sweep
from kvemulator import KeyVaultEmulator, seed_standard
from shared.adapters.telemetry import SPAN_ROTATION, SPAN_SWEEP, Attr, Metric
from shared.bootstrap import Container
from tests.integration.test_vertical_slice import near_expiry_event
from tests.support.telemetry import Capture, capture


@pytest.fixture
def cap() -> Iterator[Capture]:
    from azure.core.settings import settings

    c = capture()
    c.clear()
    before = settings.tracing_implementation()
    settings.tracing_implementation = "opentelemetry"  # what the distro's azure_sdk instrumentation sets
    try:
        yield c
    finally:
        settings.tracing_implementation = before


def span_id(span: ReadableSpan) -> int:
    ctx = span.get_span_context()
    assert ctx is not None, "a finished span has a context"
    return ctx.span_id


def descendants(spans: list[ReadableSpan], root: ReadableSpan) -> list[ReadableSpan]:
    ids = {span_id(root)}
    found: list[ReadableSpan] = []
    changed = True
    while changed:
        changed = False
        for span in spans:
            if span.parent is not None and span.parent.span_id in ids and span_id(span) not in ids:
                ids.add(span_id(span))
                found.append(span)
                changed = True
    return found


async def test_an_event_rotation_is_one_trace_with_its_steps_and_the_key_vault_calls(
        emulator: KeyVaultEmulator, container: Container, cap: Capture) -> None:
    versions = seed_standard(emulator, near_expiry=("jwt-signing-key",))
    result = await handle_event(near_expiry_event("jwt-signing-key", versions["jwt-signing-key"]), container)
    assert result.status == "rotated"
    spans = cap.finished_spans()
    [root] = [s for s in spans if s.name == SPAN_ROTATION]
    attrs = dict(root.attributes or {})
    assert attrs[Attr.OUTCOME] == "rotated" and attrs[Attr.ROTATOR] == "jwt"
    assert attrs[Attr.PREVIOUS_VERSION] == versions["jwt-signing-key"]
    below = descendants(spans, root)
    names = [s.name for s in below]
    assert {"rotation.create", "rotation.apply", "rotation.verify", "rotation.commit", "rotation.notify"} <= set(names)
    sdk = [s for s in below if not s.name.startswith("rotation")]
    assert sdk, f"no Azure SDK span under the rotation: {names}"
    assert any("SecretClient" in s.name or "get_secret" in s.name.lower() for s in sdk), names
    points = cap.metrics()
    [run] = [p for p in points if p.name == Metric.RUNS]
    assert run.attributes[Attr.SECRET] == "jwt-signing-key" and run.attributes[Attr.OUTCOME] == "rotated"


async def test_a_sweep_reports_every_secret_including_manual_ones(
        emulator: KeyVaultEmulator, container: Container, cap: Capture) -> None:
    now = datetime.now(UTC)
    versions = {
        "jwt-signing-key": now + timedelta(days=50),
        "session-encryption-key": now + timedelta(days=80),
        "openai-api-key": now + timedelta(days=12),
        "encryption-master-key": now + timedelta(days=200),
    }
    for name, expires_on in versions.items():
        emulator.put(name, f"initial-value-of-{name}-0123456789", expires_on=expires_on)
    summary = await handle_sweep(container)
    assert summary.failed == 0
    [sweep_span] = [s for s in cap.finished_spans() if s.name == SPAN_SWEEP]
    assert dict(sweep_span.attributes or {})["rotation.sweep.managed"] == len(versions)
    points = cap.metrics()
    expiry: dict[str, dict[str, Any]] = {
        str(p.attributes[Attr.SECRET]): p.attributes for p in points if p.name == Metric.SECRET_DAYS_TO_EXPIRY
    }
    assert set(expiry) == set(versions)
    assert expiry["openai-api-key"][Attr.MANUAL] is True
    assert expiry["jwt-signing-key"][Attr.MANUAL] is False
    [manual] = [p for p in points if p.name == Metric.SECRET_DAYS_TO_EXPIRY
                and p.attributes[Attr.SECRET] == "openai-api-key"]
    assert 11.9 < manual.value <= 12
    [runs] = [p for p in points if p.name == Metric.SWEEP_RUNS]
    assert runs.value == 1
