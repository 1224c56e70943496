"""What operators see: spans, metrics and log dimensions of a rotation, a skip, a failure and a sweep.

The engine and the sweep run against fakes of our own ports and report
through the real OpenTelemetry SDK with in-memory exporters (the suite-wide
capture of tests/support/telemetry.py). The last tests check that every name
the KQL in docs/ and in the alert rules and workbook relies on is one the app
really exported here.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import StatusCode

from shared.adapters.telemetry import (
    NO_TELEMETRY,
    SPAN_ROTATION,
    SPAN_SWEEP,
    Attr,
    LogContextFilter,
    Metric,
    Telemetry,
    classify,
    configure,
    install,
)
from shared.config.operator_file import OperatorConfig
from shared.config.settings import Settings
from shared.domain.errors import LeaseLost, ManualOnly, PolicyError
from shared.domain.ports import Consumer
from shared.domain.record import RotationRequest, Tag, Trigger
from shared.rotators.jwt_key import JwtRotator
from shared.rotators.random_secret import RandomRotator
from shared.service.engine import RotationEngine
from shared.service.sweep import SweepDeps, sweep
from tests.support import leakscan
from tests.support.operator_files import base_config
from tests.support.telemetry import Capture, Point, capture
from tests.unit.fakes import FakeLocker, FakeStore, RecordingNotifier

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
VAULT = "kv-test"
STEPS = ["create", "apply", "verify", "commit", "notify"]
OPERATOR = OperatorConfig.from_mapping(base_config())


class Clock:
    def __init__(self, now: datetime = NOW) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@dataclass
class Exported:
    spans: list[ReadableSpan]
    points: list[Point]
    logs: list[dict[str, Any]]

    def roots(self, name: str) -> list[ReadableSpan]:
        return [s for s in self.spans if s.name == name]

    def children(self, parent: ReadableSpan) -> list[ReadableSpan]:
        ctx = parent.get_span_context()
        assert ctx is not None, "a finished span has a context"
        return sorted((s for s in self.spans if s.parent is not None and s.parent.span_id == ctx.span_id),
                      key=lambda s: s.start_time or 0)

    def points_named(self, name: str) -> list[Point]:
        return [p for p in self.points if p.name == name]

    def log(self, text: str) -> dict[str, Any]:
        found = [r for r in self.logs if text in str(r["body"])]
        assert found, f"no exported log record contains {text!r}"
        return found[-1]


@pytest.fixture
def cap() -> Iterator[Capture]:
    c = capture()
    c.clear()
    yield c


def exported(c: Capture, store: FakeStore | None = None) -> Exported:
    """What was exported so far; every value the store holds goes to the secret-leak scan."""
    if store is not None:
        leakscan.register(v.value for versions in store.versions.values() for v in versions)
    logs = [{"body": r.log_record.body, **dict(r.log_record.attributes or {})} for r in c.log_records()]
    return Exported(c.finished_spans(), c.metrics(), logs)


def engine(store: FakeStore, telemetry: Telemetry, *, clock: Callable[[], datetime] | None = None,
           notifier: RecordingNotifier | None = None, consumers: list[Consumer] | None = None,
           locker: FakeLocker | None = None) -> RotationEngine:
    return RotationEngine(
        settings=Settings(allowed_vaults=(VAULT,)),
        operator=OPERATOR,
        stores=lambda vault: store,
        locker=locker or FakeLocker(),
        rotators={"random": RandomRotator(), "jwt": JwtRotator(timedelta(hours=1))},
        notifier=notifier,
        consumers_for=lambda name, tag: consumers or [],
        clock=clock or Clock(),
        telemetry=telemetry,
    )


def event(store: FakeStore, name: str) -> RotationRequest:
    return RotationRequest(VAULT, name, Trigger.NEAR_EXPIRY, event_version=store.versions[name][-1].version)


# ------------------------------------------------------------------ scenarios (also feed the KQL check)

CONSUMERS = [Consumer("backend", "https://backend.internal/refresh"), Consumer("bridge", "https://bridge.internal/r")]


async def rotate_with_one_consumer_silent(c: Capture) -> tuple[Exported, FakeStore]:
    store = FakeStore()
    store.seed("session-encryption-key", "old-value-123", expires_on=NOW + timedelta(days=30))
    await engine(store, c.telemetry, notifier=RecordingNotifier(ok=[True, False]), consumers=CONSUMERS).run(
        event(store, "session-encryption-key"))
    return exported(c, store), store


async def grace_ends_unacknowledged(c: Capture, store: FakeStore) -> Exported:
    clock = Clock(NOW + timedelta(hours=25))
    await engine(store, c.telemetry, clock=clock, notifier=RecordingNotifier(ok=False),
                 consumers=CONSUMERS).complete_pending(VAULT, "session-encryption-key")
    return exported(c, store)


async def skip_a_replayed_event(c: Capture) -> Exported:
    store = FakeStore()
    old = store.seed("session-encryption-key", "old-value-123", expires_on=NOW + timedelta(days=30))
    store.seed("session-encryption-key", "new-value-456", expires_on=NOW + timedelta(days=120))
    req = RotationRequest(VAULT, "session-encryption-key", Trigger.NEAR_EXPIRY, event_version=old.version)
    await engine(store, c.telemetry).run(req)
    return exported(c, store)


async def fail_with_a_lost_lease(c: Capture) -> Exported:
    store = FakeStore()
    store.seed("session-encryption-key", "old-value-123", expires_on=NOW + timedelta(days=30))
    locker = FakeLocker()
    locker.lease.lost = True
    with pytest.raises(LeaseLost):
        await engine(store, c.telemetry, locker=locker).run(event(store, "session-encryption-key"))
    return exported(c, store)


async def fail_for_good_with_a_bad_policy(c: Capture) -> Exported:
    store = FakeStore()
    tags = {f"team-tag-{i}": "x" for i in range(12)}
    store.seed("session-encryption-key", "old-value-123", tags=tags, expires_on=NOW + timedelta(days=30))
    with pytest.raises(PolicyError):
        await engine(store, c.telemetry).run(RotationRequest(VAULT, "session-encryption-key", Trigger.HTTP))
    return exported(c, store)


async def manual_secret_near_expiry(c: Capture) -> Exported:
    store = FakeStore()
    store.seed("openai-api-key", "sk-provider-key-1", expires_on=NOW + timedelta(days=30))
    with pytest.raises(ManualOnly):
        await engine(store, c.telemetry).run(event(store, "openai-api-key"))
    return exported(c, store)


class FakeSweepDeps(SweepDeps):
    def __init__(self, store: FakeStore, telemetry: Telemetry) -> None:
        self._settings = Settings(allowed_vaults=(VAULT,))
        self._store = store
        self.telemetry = telemetry
        self._engine = engine(store, telemetry, clock=lambda: datetime.now(UTC))  # the sweep decides on real time

    @property
    def settings(self) -> Settings:
        return self._settings

    @property
    def operator(self) -> OperatorConfig:
        return OPERATOR

    @property
    def engine(self) -> RotationEngine:
        return self._engine

    def store(self, vault: str) -> FakeStore:
        return self._store


async def sweep_a_vault(c: Capture) -> Exported:
    now = datetime.now(UTC)
    store = FakeStore()
    store.seed("session-encryption-key", "old-value-123", expires_on=now + timedelta(days=10))  # overdue
    store.seed("jwt-signing-key", "jwt-key-value-1", expires_on=now + timedelta(days=50))  # not due
    store.seed("openai-api-key", "sk-provider-key-1", expires_on=now + timedelta(days=12))  # manual only
    deps = FakeSweepDeps(store, c.telemetry)
    summary = await sweep(deps)
    assert summary.rotated == 1
    return exported(c, store)


# ------------------------------------------------------------------ a rotation


async def test_a_rotation_is_one_span_with_a_child_per_step_carrying_every_attribute(cap: Capture) -> None:
    out, store = await rotate_with_one_consumer_silent(cap)
    [root] = out.roots(SPAN_ROTATION)
    assert root.parent is None
    assert [s.name for s in out.children(root)] == [f"rotation.{step}" for step in STEPS]
    attrs = dict(root.attributes or {})
    latest = store.versions["session-encryption-key"][-1].properties
    assert attrs[Attr.VAULT] == VAULT
    assert attrs[Attr.SECRET] == "session-encryption-key"
    assert attrs[Attr.ROTATOR] == "random"
    assert attrs[Attr.TRIGGER] == "SecretNearExpiry"
    assert attrs[Attr.ID] == latest.tags[Tag.ID]
    assert attrs[Attr.VERSION] == latest.version
    assert attrs[Attr.PREVIOUS_VERSION] == store.versions["session-encryption-key"][0].version
    assert attrs[Attr.OUTCOME] == "rotated"
    reason = attrs[Attr.REASON]
    assert isinstance(reason, str) and reason.startswith("rotated (")
    assert attrs[Attr.STATE] == "notified"
    for child in out.children(root):
        assert dict(child.attributes or {})[Attr.STEP] == child.name.removeprefix("rotation.")
        assert dict(child.attributes or {})[Attr.SECRET] == "session-encryption-key"


async def test_a_rotation_counts_its_outcome_step_durations_and_consumer_acknowledgements(cap: Capture) -> None:
    out, _ = await rotate_with_one_consumer_silent(cap)
    [run] = out.points_named(Metric.RUNS)
    assert run.value == 1
    assert run.attributes[Attr.OUTCOME] == "rotated"
    assert run.attributes[Attr.ROTATOR] == "random"
    assert run.attributes[Attr.TRIGGER] == "SecretNearExpiry"
    assert run.attributes[Attr.SECRET] == "session-encryption-key"
    steps = {p.attributes[Attr.STEP] for p in out.points_named(Metric.STEP_DURATION)}
    assert steps == set(STEPS)
    assert all(p.attributes[Attr.ROTATOR] == "random" for p in out.points_named(Metric.STEP_DURATION))
    assert [p.value for p in out.points_named(Metric.CONSUMERS_ACKNOWLEDGED)] == [1]
    assert [p.value for p in out.points_named(Metric.CONSUMERS_PENDING)] == [1]


async def test_every_log_record_of_a_rotation_carries_its_attributes_as_dimensions(cap: Capture) -> None:
    out, store = await rotate_with_one_consumer_silent(cap)
    rotation_id = store.versions["session-encryption-key"][-1].properties.tags[Tag.ID]
    for message in ("rotation started", "rotation committed", "consumers notified", "rotation finished"):
        record = out.log(message)
        assert record[Attr.SECRET] == "session-encryption-key"
        assert record[Attr.VAULT] == VAULT
        assert record[Attr.TRIGGER] == "SecretNearExpiry"
        assert record[Attr.ID] == rotation_id
        assert record[Attr.ROTATOR] == "random"
    # extra= fields that are not primitives reach the exporter as JSON text instead of being dropped
    assert json.loads(out.log("rotation finished")["durations_ms"]).keys() >= {"create", "commit"}


async def test_consumers_unacknowledged_when_the_grace_period_ends_are_counted_and_logged(cap: Capture) -> None:
    _, store = await rotate_with_one_consumer_silent(cap)
    cap.clear()
    out = await grace_ends_unacknowledged(cap, store)
    [point] = out.points_named(Metric.UNACKNOWLEDGED_AT_GRACE)
    assert point.value == 1 and point.attributes[Attr.SECRET] == "session-encryption-key"
    record = out.log("grace period ended with consumers unacknowledged")
    assert record[Attr.PENDING_CONSUMERS] == "bridge"
    [root] = out.roots(SPAN_ROTATION)
    assert [s.name for s in out.children(root)] == ["rotation.notify", "rotation.retire"]
    assert dict(root.attributes or {})[Attr.OUTCOME] == "completed"


# ------------------------------------------------------------------ a skip


async def test_a_skip_is_one_span_without_steps_and_counted_as_skipped(cap: Capture) -> None:
    out = await skip_a_replayed_event(cap)
    [root] = out.roots(SPAN_ROTATION)
    assert out.children(root) == []
    attrs = dict(root.attributes or {})
    assert attrs[Attr.OUTCOME] == "skipped"
    reason = attrs[Attr.REASON]
    assert isinstance(reason, str) and reason.startswith("duplicate")
    assert attrs[Attr.ROTATOR] == "random"
    assert root.status.status_code != StatusCode.ERROR
    [run] = out.points_named(Metric.RUNS)
    assert run.attributes[Attr.OUTCOME] == "skipped"
    assert out.log("rotation skipped")[Attr.SECRET] == "session-encryption-key"


# ------------------------------------------------------------------ failures


async def test_a_transient_failure_of_an_event_is_an_error_span_that_event_grid_will_retry(cap: Capture) -> None:
    out = await fail_with_a_lost_lease(cap)
    [root] = out.roots(SPAN_ROTATION)
    # Fencing: a lost lease is caught right before the first side effect; `random` writes nothing downstream
    # (its apply asks for no fence), so that is the vault write after verify.
    assert [s.name for s in out.children(root)] == ["rotation.create", "rotation.apply", "rotation.verify"]
    assert root.status.status_code == StatusCode.ERROR
    attrs = dict(root.attributes or {})
    assert attrs[Attr.OUTCOME] == "failed"
    assert attrs[Attr.ERROR_CODE] == "LeaseLost"
    assert attrs[Attr.WILL_RETRY] is True
    assert attrs[Attr.ID]
    assert [e.name for e in root.events] == ["exception"]
    [run] = out.points_named(Metric.RUNS)
    assert run.attributes[Attr.OUTCOME] == "failed" and run.attributes[Attr.WILL_RETRY] is True
    assert out.log("rotation failed")[Attr.ERROR_CODE] == "LeaseLost"


async def test_a_permanent_failure_is_marked_as_not_retried_which_is_what_the_alert_matches(cap: Capture) -> None:
    out = await fail_for_good_with_a_bad_policy(cap)
    [root] = out.roots(SPAN_ROTATION)
    attrs = dict(root.attributes or {})
    assert attrs[Attr.OUTCOME] == "failed"
    assert attrs[Attr.ERROR_CODE] == "PolicyError"
    assert attrs[Attr.WILL_RETRY] is False
    assert attrs[Attr.TRIGGER] == "http"
    [run] = out.points_named(Metric.RUNS)
    assert run.attributes[Attr.WILL_RETRY] is False and run.attributes[Attr.SECRET] == "session-encryption-key"


async def test_a_near_expiry_event_for_a_manual_secret_tells_the_human_to_rotate_it_at_its_provider(
        cap: Capture) -> None:
    out = await manual_secret_near_expiry(cap)
    [root] = out.roots(SPAN_ROTATION)
    assert dict(root.attributes or {})[Attr.OUTCOME] == "rejected"
    assert root.status.status_code != StatusCode.ERROR  # a refusal, not a failure
    [point] = out.points_named(Metric.MANUAL_NEAR_EXPIRY)
    assert point.attributes == {Attr.VAULT: VAULT, Attr.SECRET: "openai-api-key"}
    record = out.log("rotate it at its provider")
    assert record[Attr.SECRET] == "openai-api-key"
    assert record["body"].startswith("manual-only secret openai-api-key")


def test_classify_maps_the_error_tree_to_outcomes() -> None:
    from shared.domain.errors import NotManaged, RotationInProgress, VerificationFailed

    assert classify(VerificationFailed("x"), "SecretNearExpiry")[:3] == ("failed", "VerificationFailed", True)
    assert classify(VerificationFailed("x"), "http")[:3] == ("failed", "VerificationFailed", False)
    assert classify(RotationInProgress("x"), "sweep")[:3] == ("busy", "RotationInProgress", False)
    assert classify(NotManaged("x"), "SecretNearExpiry")[:3] == ("rejected", "NotManaged", False)
    outcome, code, retry, reason = classify(ValueError("password=hunter2"), "SecretNearExpiry")
    assert (outcome, code, retry) == ("failed", "InternalError", True)
    assert "hunter2" not in reason  # a foreign exception's text never becomes an attribute


# ------------------------------------------------------------------ a sweep


async def test_a_sweep_is_a_span_around_its_rotations_with_per_secret_gauges(cap: Capture) -> None:
    out = await sweep_a_vault(cap)
    [root] = out.roots(SPAN_SWEEP)
    assert root.parent is None
    [rotation] = [s for s in out.children(root) if s.name == SPAN_ROTATION]
    assert dict(rotation.attributes or {})[Attr.TRIGGER] == "sweep"
    attrs = dict(root.attributes or {})
    assert attrs["rotation.sweep.rotated"] == 1 and attrs["rotation.sweep.failed"] == 0
    assert attrs[Attr.VAULT] == VAULT

    def gauge(name: str, secret: str) -> Point:
        [p] = [p for p in out.points_named(name) if p.attributes.get(Attr.SECRET) == secret]
        return p

    manual = gauge(Metric.SECRET_DAYS_TO_EXPIRY, "openai-api-key")
    assert manual.attributes[Attr.MANUAL] is True and manual.attributes[Attr.ROTATOR] == "manual"
    assert 11.9 < manual.value <= 12
    assert gauge(Metric.SECRET_OVERDUE, "session-encryption-key").value == 1
    assert gauge(Metric.SECRET_OVERDUE, "jwt-signing-key").value == 0
    assert 19.9 < gauge(Metric.SECRET_DAYS_TO_ROTATION, "jwt-signing-key").value <= 20
    assert gauge(Metric.SECRET_VERSION_AGE, "jwt-signing-key").value < 0.01
    assert gauge(Metric.SECRET_RETIREMENT_PENDING, "jwt-signing-key").value == 0
    assert not [p for p in out.points_named(Metric.SECRET_OVERDUE) if p.attributes[Attr.SECRET] == "openai-api-key"]
    assert [(p.value, p.attributes) for p in out.points_named(Metric.SECRETS_OVERDUE)] == [(1, {Attr.VAULT: VAULT})]
    assert [p.value for p in out.points_named(Metric.RETIREMENTS_PENDING)] == [0]
    [run] = out.points_named(Metric.SWEEP_RUNS)
    assert run.value == 1 and run.attributes == {Attr.SWEEP_FAILED: 0}


# ------------------------------------------------------------------ off means off


def test_nothing_configured_means_no_telemetry_and_no_opentelemetry_import() -> None:
    """Cold start pays nothing: importing the app loads no telemetry code, and an empty environment
    builds the no-op telemetry without importing OpenTelemetry."""
    import subprocess
    import sys

    code = (
        "import sys; import function_app; assert 'shared.adapters.telemetry' not in sys.modules; "
        "from shared.config.settings import Settings; from shared.adapters.telemetry import "
        "_build, NO_TELEMETRY; t = _build(Settings.from_env({})); "
        "assert t is NO_TELEMETRY, t; "
        "loaded = [m for m in sys.modules if m.startswith(('opentelemetry', 'azure.monitor'))]; "
        "assert not loaded, loaded"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr


async def test_the_no_op_telemetry_accepts_every_call() -> None:
    t = NO_TELEMETRY
    with t.rotation(vault=VAULT, secret="s", trigger="http"):
        t.annotate(rotator="random")
        t.step("create", 0.1)
        t.notified(1, 0)
        t.retiring("grace period ended", "bridge")
    with t.sweep() as observer:
        observer.done(None)  # type: ignore[arg-type]
    t.flush()
    assert t.enabled is False


def test_console_mode_prints_spans_and_metrics(capsys: pytest.CaptureFixture[str]) -> None:
    from shared.adapters.telemetry import _console

    t = _console()
    with t.rotation(vault=VAULT, secret="jwt-signing-key", trigger="http"):
        t.annotate(rotator="jwt")
        t.step("create", 0.002)
    t.flush()
    out = capsys.readouterr().out
    assert "[span] rotation.create" in out and "rotation.secret=jwt-signing-key" in out
    assert "[span] rotation " in out
    assert "[metric] rotation.step.duration" in out


def test_configure_returns_the_installed_telemetry_once_per_process() -> None:
    installed = capture().telemetry
    assert configure(Settings(telemetry="console")) is installed
    install(None)
    try:
        assert configure(Settings(telemetry="off")) is NO_TELEMETRY
        assert configure(Settings(telemetry="console")) is NO_TELEMETRY  # first configuration wins
    finally:
        install(installed)


def test_settings_read_the_telemetry_mode() -> None:
    from shared.domain.errors import ConfigurationError

    assert Settings.from_env({}).telemetry == "auto"
    assert Settings.from_env({"ROTATION_TELEMETRY": "Console"}).telemetry == "console"
    env = {"APPLICATIONINSIGHTS_CONNECTION_STRING": "InstrumentationKey=00000000-0000-0000-0000-000000000000"}
    assert Settings.from_env(env).appinsights_connection_string == env["APPLICATIONINSIGHTS_CONNECTION_STRING"]
    with pytest.raises(ConfigurationError):
        Settings.from_env({"ROTATION_TELEMETRY": "verbose"})


def test_log_filter_makes_extra_fields_exportable_without_touching_plain_records() -> None:
    record = logging.LogRecord("x", logging.INFO, "x", 1, "hello", None, None)
    record.__dict__.update({"sweep": {"rotated": 1}, "rotation_id": None, "acks": "1/2"})
    assert LogContextFilter().filter(record)
    assert record.__dict__["sweep"] == '{"rotated": 1}'
    assert "rotation_id" not in record.__dict__
    assert record.__dict__["acks"] == "1/2"


# ------------------------------------------------------------------ KQL names only what the app emits


KQL_SOURCES = [
    *sorted((ROOT / "docs").glob("*.md")),
    ROOT / "README.md",
    *sorted((ROOT / "infra" / "alerts").glob("*.kql")),
    *sorted((ROOT / "infra" / "workbook").glob("*.json")),
]


def kql_queries() -> list[tuple[str, str]]:
    """(source, query) for every KQL query in the docs, the alert rules and the workbook."""
    found: list[tuple[str, str]] = []
    for path in KQL_SOURCES:
        if not path.exists():
            continue
        text = path.read_text(encoding="utf-8")
        name = str(path.relative_to(ROOT))
        if path.suffix == ".md":
            found += [(name, q) for q in re.findall(r"```(?:kusto|kql)\n(.*?)```", text, re.DOTALL)]
        elif path.suffix == ".kql":
            found.append((name, text))
        else:
            found += [(name, q) for q in re.findall(r'"query":\s*"((?:[^"\\]|\\.)*)"', text)]
    return found


def names_in(query: str) -> set[str]:
    """Attribute and metric names a query relies on: customDimensions keys and "rotation.*" literals."""
    query = query.replace('\\"', '"').replace("\\n", "\n")
    names = set(re.findall(r'customDimensions\[\s*"([^"]+)"\s*\]', query))
    names |= set(re.findall(r"customDimensions\.([A-Za-z_][A-Za-z0-9_]*)", query))
    names |= set(re.findall(r'"(rotation\.[A-Za-z0-9_.]+)"', query))
    return names


async def everything_exported() -> set[str]:
    c = capture()
    c.clear()
    names: set[str] = set()
    outs = []
    first, store = await rotate_with_one_consumer_silent(c)
    outs.append(first)
    outs.append(await grace_ends_unacknowledged(c, store))
    for scenario in (skip_a_replayed_event, fail_with_a_lost_lease, fail_for_good_with_a_bad_policy,
                     manual_secret_near_expiry, sweep_a_vault):
        c.clear()
        outs.append(await scenario(c))
    for out in outs:
        for span in out.spans:
            names |= {span.name, *(span.attributes or {})}
        for point in out.points:
            names |= {point.name, *point.attributes}
        for record in out.logs:
            names |= set(record)
    return names


async def test_the_kql_of_docs_alerts_and_workbook_names_only_what_the_app_exports() -> None:
    queries = kql_queries()
    assert len(queries) >= 8, "expected the docs' queries, six alert rules and the workbook's"
    emitted = await everything_exported()
    unknown = {(source, name) for source, query in queries for name in names_in(query) if name not in emitted}
    assert unknown == set()


def test_the_kql_name_extraction_sees_both_spellings() -> None:
    query = 'traces | where customDimensions["rotation.id"] == x and customDimensions.rotation_id != "" ' \
            '| where name == "rotation.runs"'
    assert names_in(query) == {"rotation.id", "rotation_id", "rotation.runs"}


async def test_the_leak_scan_reads_every_exported_span_log_and_metric(cap: Capture) -> None:
    """Positive control: what the exporters received is in the text the session's leak scan searches."""
    _, store = await rotate_with_one_consumer_silent(cap)
    cap.metrics()
    rotation_id = store.versions["session-encryption-key"][-1].properties.tags[Tag.ID]
    recorder = leakscan._recorder
    assert recorder is not None
    recorder._file.flush()
    text = recorder.path.read_text(encoding="utf-8", errors="replace")
    assert re.search(rf"\[span\] rotation .*{rotation_id}", text)
    assert re.search(rf"\[otel-log\] 'rotation started' .*{rotation_id}", text)
    assert re.search(r"\[metric\] rotation\.runs .*session-encryption-key", text)
