"""Telemetry: one span per rotation, a child per step, metrics, and log dimensions.

Operators read three kinds of signal, all named by the vocabulary below
(:class:`Attr` for attributes, :class:`Metric` for instrument names), which is
the only place the KQL in ``docs/`` and ``infra/alerts/`` may take names from
(``tests/unit/test_telemetry.py`` checks that against what the exporters
really received):

* **traces** - a ``rotation`` span per engine request (event, HTTP, sweep),
  with a ``rotation.<step>`` child per step (create, apply, verify, commit,
  notify, retire) and a ``rotation.sweep`` span per sweep. In Application
  Insights they are ``dependencies`` rows (type ``InProc``) whose
  ``customDimensions`` hold the attributes.
* **metrics** - counters, histograms and gauges in ``customMetrics``.
* **logs** - every record logged while a rotation runs (the Azure SDK's
  included) carries the rotation's attributes as ``customDimensions``. The
  Functions worker drops ``extra=``; :class:`LogContextFilter` instead sets
  the attributes on the record for the OpenTelemetry log handler, from a
  context variable, so no call site has to pass them.

Cost when nothing is configured: :data:`NO_TELEMETRY` is plain Python and
nothing imports this module at cold start (the engine and the sweep import it
on first use). The SDK (and the Azure Monitor distro, most of a second to
import) is loaded only by :func:`configure`, and only when
``APPLICATIONINSIGHTS_CONNECTION_STRING`` is set or ``ROTATION_TELEMETRY=console``. In Azure the Functions worker
configures the distro itself (``PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY``),
so :func:`configure` reuses the providers it installed instead of installing
a second set.

Nothing here reads a secret value: attributes are names, versions, ids,
outcomes and our own error messages, which never carry secret material; the
test-suite's leak scan reads every exported span, log and metric attribute.
"""

from __future__ import annotations

import contextvars
import json
import logging
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opentelemetry.metrics import MeterProvider
    from opentelemetry.trace import Span, TracerProvider

    from shared.config.settings import Settings
    from shared.domain.model import SecretProperties
    from shared.domain.policy import Policy
    from shared.domain.record import Outcome
    from shared.service.sweep import SweepSummary

log = logging.getLogger(__name__)

INSTRUMENTATION_NAME = "keyvault-secret-rotation"


class Attr:
    """Attribute names shared by spans, log records and metric data points."""

    VAULT = "rotation.vault"
    SECRET = "rotation.secret"  # noqa: S105 - an attribute name
    ROTATOR = "rotation.rotator"
    TRIGGER = "rotation.trigger"
    ID = "rotation.id"
    VERSION = "rotation.version"
    PREVIOUS_VERSION = "rotation.previous_version"
    OUTCOME = "rotation.outcome"  # rotated | completed | skipped | planned | rejected | busy | failed
    REASON = "rotation.reason"
    STATE = "rotation.state"
    STEP = "rotation.step"
    ERROR_CODE = "rotation.error_code"
    WILL_RETRY = "rotation.will_retry"  # whether Event Grid redelivers this failure
    MANUAL = "rotation.manual"
    PENDING_CONSUMERS = "rotation.pending_consumers"
    SWEEP_FAILED = "rotation.sweep.failed"


class Metric:
    """Instrument names (``customMetrics.name`` in Application Insights)."""

    RUNS = "rotation.runs"  # counter: every engine request, by outcome, rotator, trigger, secret
    STEP_DURATION = "rotation.step.duration"  # histogram (ms), by step and rotator
    CONSUMERS_ACKNOWLEDGED = "rotation.consumers.acknowledged"  # counter, per notify
    CONSUMERS_PENDING = "rotation.consumers.pending"  # counter, per notify
    UNACKNOWLEDGED_AT_GRACE = "rotation.consumers.unacknowledged_at_grace"  # counter: retired without every ack
    MANUAL_NEAR_EXPIRY = "rotation.manual.near_expiry_events"  # counter: a Key Vault event for a manual secret
    SWEEP_RUNS = "rotation.sweep.runs"  # counter: a sweep completed (with or without per-secret failures)
    SECRETS_OVERDUE = "rotation.secrets.overdue"  # gauge per sweep and vault
    RETIREMENTS_PENDING = "rotation.retirements.pending"  # gauge per sweep and vault
    SECRET_DAYS_TO_EXPIRY = "rotation.secret.days_to_expiry"  # noqa: S105 - gauge per secret (managed and manual-only)
    SECRET_VERSION_AGE = "rotation.secret.version_age_days"  # noqa: S105 - gauge per secret
    SECRET_DAYS_TO_ROTATION = "rotation.secret.days_to_next_rotation"  # noqa: S105 - gauge per managed secret
    SECRET_OVERDUE = "rotation.secret.overdue"  # noqa: S105 - gauge per managed secret: 1 overdue or expired, else 0
    SECRET_RETIREMENT_PENDING = "rotation.secret.retirement_pending"  # noqa: S105 - gauge per secret: 1 or 0


SPAN_ROTATION = "rotation"
SPAN_SWEEP = "rotation.sweep"
EVENT_TRIGGERS = frozenset({"SecretNearExpiry", "SecretExpired"})
# Errors that refuse a request rather than fail a rotation (nothing was attempted).
_REFUSALS = frozenset({"InvalidRequest", "VaultNotAllowed", "SecretNotFound", "NotManaged", "ManualOnly", "Forbidden"})
_PRIMITIVES = (str, bool, int, float)
_DAY = 86_400.0


def classify(exc: BaseException, trigger: str) -> tuple[str, str, bool, str]:
    """(outcome, error code, will Event Grid retry, safe reason) of a request that raised.

    Only our own exception messages are used as the reason: they never carry
    secret material. Anything else is named by its type only.
    """
    from shared.domain.errors import RotationError, RotationInProgress, TransientError

    is_event = trigger in EVENT_TRIGGERS
    if isinstance(exc, RotationError):
        retry = is_event and isinstance(exc, TransientError)
        if isinstance(exc, RotationInProgress):
            return "busy", exc.code, retry, exc.message
        if exc.code in _REFUSALS:
            return "rejected", exc.code, False, exc.message
        return "failed", exc.code, retry, exc.message
    # The event function maps any other exception to a retry too (it raises).
    return "failed", "InternalError", is_event, f"unexpected {type(exc).__name__}"


# ------------------------------------------------------------------ log dimensions

_current: contextvars.ContextVar[_Run | None] = contextvars.ContextVar("rotation_run", default=None)


class _Run:
    """The running rotation: its attributes (also the log dimensions) and its span."""

    __slots__ = ("attrs", "span")

    def __init__(self, attrs: dict[str, Any]) -> None:
        self.attrs = attrs
        self.span: Span | None = None


_STANDARD_RECORD_ATTRS = frozenset(logging.LogRecord("x", 0, "x", 0, "x", None, None).__dict__) | {
    "message",
    "asctime",
}


class LogContextFilter(logging.Filter):
    """Puts the running rotation's attributes on every record a telemetry handler sees.

    Attached to the OpenTelemetry log handler (which exports a record's
    non-standard attributes as ``customDimensions``). It also makes the
    ``extra=`` fields already logged exportable: ``None`` is dropped and a
    dict or list becomes JSON text, since an attribute must be a primitive.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        run = _current.get()
        if run is not None:
            for key, value in run.attrs.items():
                if key not in record.__dict__:
                    record.__dict__[key] = value
        for key in [k for k in record.__dict__ if k not in _STANDARD_RECORD_ATTRS]:
            value = record.__dict__[key]
            if value is None:
                del record.__dict__[key]
            elif not isinstance(value, _PRIMITIVES):
                record.__dict__[key] = json.dumps(value, default=str, sort_keys=True)
        return True


def attach_log_filter(logger: logging.Logger | None = None) -> int:
    """Add :class:`LogContextFilter` to every OpenTelemetry log handler of ``logger`` (root)."""
    from opentelemetry.sdk._logs import LoggingHandler

    target = logger if logger is not None else logging.getLogger()
    attached = 0
    for handler in target.handlers:
        if isinstance(handler, LoggingHandler) and not any(isinstance(f, LogContextFilter) for f in handler.filters):
            handler.addFilter(LogContextFilter())
            attached += 1
    return attached


# ------------------------------------------------------------------ the facade


class Telemetry:
    """What the engine and the sweep report. This base class does nothing (telemetry off)."""

    enabled = False

    @contextmanager
    def rotation(self, *, vault: str, secret: str, trigger: str) -> Iterator[None]:
        yield

    def annotate(self, **attrs: Any) -> None:
        """Add attributes (keys of :class:`Attr`, by field name) to the running rotation."""

    def finished(self, outcome: Outcome) -> None:
        """The request ended with this outcome (rotated, completed, skipped, planned)."""

    def step(self, name: str, seconds: float) -> None:
        """A step of the running rotation took ``seconds``."""

    def notified(self, acknowledged: int, pending: int) -> None:
        """Consumers were pinged: how many acknowledged, how many did not."""

    def retiring(self, why: str, pending_consumers: str | None) -> None:
        """The previous credential is retired now, for this reason."""

    @contextmanager
    def sweep(self) -> Iterator[SweepObserver]:
        yield SweepObserver()

    def flush(self) -> None:
        """Export what is buffered (end of an invocation: the instance may be frozen next)."""


class SweepObserver:
    """Per-secret facts seen by the sweep; the base class ignores them."""

    def secret(self, vault: str, props: SecretProperties, policy: Policy, now: datetime, lead_days: int) -> None:
        pass

    def done(self, summary: SweepSummary) -> None:
        pass


NO_TELEMETRY = Telemetry()


def _days(seconds: float) -> float:
    return round(seconds / _DAY, 2)


class OtelTelemetry(Telemetry):
    """Telemetry through the OpenTelemetry API, on the given or the global providers."""

    enabled = True

    def __init__(self, tracer_provider: TracerProvider | None = None, meter_provider: MeterProvider | None = None):
        from opentelemetry import metrics, trace

        self._trace = trace
        tracers = tracer_provider if tracer_provider is not None else trace.get_tracer_provider()
        meters = meter_provider if meter_provider is not None else metrics.get_meter_provider()
        self._tracer_provider = tracers
        self._meter_provider = meters
        self._tracer = tracers.get_tracer(INSTRUMENTATION_NAME)
        meter = meters.get_meter(INSTRUMENTATION_NAME)
        self._runs = meter.create_counter(Metric.RUNS, unit="{rotation}", description="Rotation requests by outcome")
        self._step_ms = meter.create_histogram(Metric.STEP_DURATION, unit="ms", description="Duration of a step")
        self._acked = meter.create_counter(Metric.CONSUMERS_ACKNOWLEDGED, unit="{consumer}")
        self._pending = meter.create_counter(Metric.CONSUMERS_PENDING, unit="{consumer}")
        self._unacked_at_grace = meter.create_counter(Metric.UNACKNOWLEDGED_AT_GRACE, unit="{rotation}")
        self._manual_events = meter.create_counter(Metric.MANUAL_NEAR_EXPIRY, unit="{event}")
        self.sweeps = meter.create_counter(Metric.SWEEP_RUNS, unit="{sweep}")
        self.gauges = {
            name: meter.create_gauge(name, unit=unit)
            for name, unit in (
                (Metric.SECRETS_OVERDUE, "{secret}"),
                (Metric.RETIREMENTS_PENDING, "{secret}"),
                (Metric.SECRET_DAYS_TO_EXPIRY, "d"),
                (Metric.SECRET_VERSION_AGE, "d"),
                (Metric.SECRET_DAYS_TO_ROTATION, "d"),
                (Metric.SECRET_OVERDUE, "1"),
                (Metric.SECRET_RETIREMENT_PENDING, "1"),
            )
        }

    # -------------------------------------------------------------- rotation

    @contextmanager
    def rotation(self, *, vault: str, secret: str, trigger: str) -> Iterator[None]:
        attrs: dict[str, Any] = {Attr.VAULT: vault, Attr.SECRET: secret, Attr.TRIGGER: trigger}
        run = _Run(attrs=attrs)
        token = _current.set(run)
        try:
            with self._tracer.start_as_current_span(
                SPAN_ROTATION, attributes=attrs, record_exception=False, set_status_on_exception=False
            ) as span:
                run.span = span
                try:
                    yield
                except BaseException as exc:
                    self._failed(run, exc, trigger)
                    raise
        finally:
            _current.reset(token)

    def _failed(self, run: _Run, exc: BaseException, trigger: str) -> None:
        from opentelemetry.trace import Status, StatusCode

        outcome, code, retry, reason = classify(exc, trigger)
        self._set(run, {Attr.OUTCOME: outcome, Attr.ERROR_CODE: code, Attr.WILL_RETRY: retry, Attr.REASON: reason})
        if run.span is not None and outcome == "failed":
            run.span.set_status(Status(StatusCode.ERROR, code))
            run.span.add_event("exception", {"exception.type": type(exc).__name__, "exception.message": reason})
        self._count_run(run)
        if code == "ManualOnly" and trigger in EVENT_TRIGGERS:
            self._manual_events.add(1, self._dims(run, Attr.VAULT, Attr.SECRET))
            log.warning(
                "manual-only secret %s in vault %s is near expiry: rotate it at its provider and write the new "
                "version to the vault", run.attrs[Attr.SECRET], run.attrs[Attr.VAULT],
            )
        elif outcome == "failed":
            log.warning("rotation failed (%s)%s: %s", code, ", Event Grid will retry" if retry else "", reason)

    def _set(self, run: _Run, attrs: Mapping[str, Any]) -> None:
        clean = {k: v for k, v in attrs.items() if isinstance(v, _PRIMITIVES)}
        run.attrs.update(clean)
        if run.span is not None:
            run.span.set_attributes(clean)

    @staticmethod
    def _dims(run: _Run, *keys: str) -> dict[str, Any]:
        return {k: run.attrs[k] for k in keys if k in run.attrs}

    def _count_run(self, run: _Run) -> None:
        self._runs.add(1, self._dims(run, Attr.OUTCOME, Attr.ROTATOR, Attr.TRIGGER, Attr.VAULT, Attr.SECRET,
                                     Attr.ERROR_CODE, Attr.WILL_RETRY))

    def annotate(self, **attrs: Any) -> None:
        run = _current.get()
        if run is not None:
            self._set(run, {getattr(Attr, key.upper()): value for key, value in attrs.items()})

    def finished(self, outcome: Outcome) -> None:
        run = _current.get()
        if run is None:
            return
        self._set(run, {
            Attr.OUTCOME: outcome.status,
            Attr.REASON: outcome.reason,
            Attr.ID: outcome.rotation_id,
            Attr.VERSION: outcome.version,
            Attr.PREVIOUS_VERSION: outcome.previous_version,
            Attr.STATE: outcome.state,
        })
        self._count_run(run)

    def step(self, name: str, seconds: float) -> None:
        run = _current.get()
        end = time.time_ns()
        attrs = {**(run.attrs if run is not None else {}), Attr.STEP: name}
        span = self._tracer.start_span(f"{SPAN_ROTATION}.{name}", attributes=attrs,
                                       start_time=end - int(seconds * 1e9))
        span.end(end_time=end)
        dims = {Attr.STEP: name}
        if run is not None and Attr.ROTATOR in run.attrs:
            dims[Attr.ROTATOR] = run.attrs[Attr.ROTATOR]
        self._step_ms.record(seconds * 1000, dims)

    def notified(self, acknowledged: int, pending: int) -> None:
        run = _current.get()
        dims = self._dims(run, Attr.VAULT, Attr.SECRET) if run is not None else {}
        self._acked.add(acknowledged, dims)
        self._pending.add(pending, dims)

    def retiring(self, why: str, pending_consumers: str | None) -> None:
        run = _current.get()
        if run is None or not pending_consumers:
            return
        self._set(run, {Attr.PENDING_CONSUMERS: pending_consumers})
        self._unacked_at_grace.add(1, self._dims(run, Attr.VAULT, Attr.SECRET))
        log.warning("grace period ended with consumers unacknowledged (%s): retiring the previous credential (%s)",
                    pending_consumers, why)

    # -------------------------------------------------------------- sweep

    @contextmanager
    def sweep(self) -> Iterator[SweepObserver]:
        with self._tracer.start_as_current_span(SPAN_SWEEP) as span:
            yield _OtelSweep(self, span)

    def flush(self) -> None:
        for provider in (self._tracer_provider, self._meter_provider):
            force_flush = getattr(provider, "force_flush", None)
            if force_flush is not None:
                try:
                    force_flush(5_000)
                except Exception:  # telemetry must never fail an invocation
                    log.debug("telemetry flush failed", exc_info=True)
        try:
            from opentelemetry._logs import get_logger_provider

            force_flush = getattr(get_logger_provider(), "force_flush", None)
            if force_flush is not None:
                force_flush(5_000)
        except Exception:
            log.debug("telemetry log flush failed", exc_info=True)


class _OtelSweep(SweepObserver):
    def __init__(self, telemetry: OtelTelemetry, span: Span) -> None:
        self._t = telemetry
        self._span = span
        self._overdue: dict[str, int] = {}
        self._pending: dict[str, int] = {}

    def secret(self, vault: str, props: SecretProperties, policy: Policy, now: datetime, lead_days: int) -> None:
        from shared.domain.record import pending_state

        gauges = self._t.gauges
        dims: dict[str, str | bool] = {
            Attr.VAULT: vault, Attr.SECRET: props.name, Attr.ROTATOR: policy.kind, Attr.MANUAL: policy.manual
        }
        self._overdue.setdefault(vault, 0)
        self._pending.setdefault(vault, 0)
        if props.expires_on is not None:
            gauges[Metric.SECRET_DAYS_TO_EXPIRY].set(_days((props.expires_on - now).total_seconds()), dims)
        if props.created_on is not None:
            gauges[Metric.SECRET_VERSION_AGE].set(_days((now - props.created_on).total_seconds()), dims)
        pending = pending_state(props.tags) is not None
        gauges[Metric.SECRET_RETIREMENT_PENDING].set(1 if pending else 0, dims)
        self._pending[vault] += pending
        if policy.manual or not props.enabled:
            return
        next_rotation = policy.next_rotation(props, lead_days)
        if next_rotation is not None:
            gauges[Metric.SECRET_DAYS_TO_ROTATION].set(_days((next_rotation - now).total_seconds()), dims)
        due = policy.is_due(props, now, lead_days)[0]
        gauges[Metric.SECRET_OVERDUE].set(1 if due else 0, dims)
        self._overdue[vault] += due

    def done(self, summary: SweepSummary) -> None:
        for vault in summary.vaults:
            dims = {Attr.VAULT: vault}
            self._t.gauges[Metric.SECRETS_OVERDUE].set(self._overdue.get(vault, 0), dims)
            self._t.gauges[Metric.RETIREMENTS_PENDING].set(self._pending.get(vault, 0), dims)
        counts = {k: v for k, v in summary.to_dict().items() if isinstance(v, int | float) and not isinstance(v, bool)}
        self._span.set_attributes({f"rotation.sweep.{k}": v for k, v in counts.items()})
        self._span.set_attribute(Attr.VAULT, ",".join(summary.vaults))
        self._t.sweeps.add(1, {Attr.SWEEP_FAILED: summary.failed})


# ------------------------------------------------------------------ configuration

_lock = threading.Lock()
_installed: Telemetry | None = None


def install(telemetry: Telemetry | None) -> None:
    """Make ``telemetry`` the process-wide instance :func:`configure` returns (tests, the demo)."""
    global _installed  # noqa: PLW0603 - one telemetry pipeline per process
    with _lock:
        _installed = telemetry


def configure(settings: Settings) -> Telemetry:
    """The process-wide telemetry, set up on first use from the settings.

    ``off``: nothing. ``console``: spans and metrics printed to stdout (``func
    start``, ``make demo``). ``auto`` (default): Azure Monitor when
    ``APPLICATIONINSIGHTS_CONNECTION_STRING`` is set, reusing the providers
    the Functions worker installed if it already configured the distro;
    otherwise nothing.
    """
    global _installed  # noqa: PLW0603
    with _lock:
        if _installed is None:
            _installed = _build(settings)
        return _installed


def _build(settings: Settings) -> Telemetry:
    mode = settings.telemetry
    if mode == "off" or (mode == "auto" and not settings.appinsights_connection_string):
        return NO_TELEMETRY
    if mode == "console":
        return _console()
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider

    if not isinstance(trace.get_tracer_provider(), SdkTracerProvider):
        from azure.monitor.opentelemetry import configure_azure_monitor

        # The exporter authenticates with the managed identity when
        # APPLICATIONINSIGHTS_AUTHENTICATION_STRING says Authorization=AAD.
        configure_azure_monitor(
            connection_string=settings.appinsights_connection_string,
            logger_name="",
            enable_live_metrics=False,
        )
        log.info("telemetry: Azure Monitor configured by the app")
    attach_log_filter()
    return OtelTelemetry()


def _console() -> Telemetry:
    """Spans and metrics printed on stdout, one line each."""
    import sys

    from opentelemetry.sdk.metrics import Counter, Histogram, UpDownCounter
    from opentelemetry.sdk.metrics import MeterProvider as SdkMeterProvider
    from opentelemetry.sdk.metrics._internal.instrument import Gauge
    from opentelemetry.sdk.metrics.export import (
        AggregationTemporality,
        ConsoleMetricExporter,
        MetricsData,
        PeriodicExportingMetricReader,
    )
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
    from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor

    def span_line(span: ReadableSpan) -> str:
        ms = ((span.end_time or 0) - (span.start_time or 0)) / 1e6
        attrs = " ".join(f"{k}={v!s}" for k, v in sorted((span.attributes or {}).items()))
        return f"[span] {span.name} {ms:.1f}ms {attrs}\n"

    def metric_lines(data: MetricsData) -> str:
        lines: list[str] = []
        for resource in data.resource_metrics:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    for point in metric.data.data_points:
                        value = getattr(point, "value", None)
                        if value is None:
                            value = f"sum={getattr(point, 'sum', 0):.1f} count={getattr(point, 'count', 0)}"
                        attrs = " ".join(f"{k}={v!s}" for k, v in sorted((point.attributes or {}).items()))
                        lines.append(f"[metric] {metric.name} {value} {attrs}\n")
        return "".join(lines)

    class Stdout:
        """Whatever sys.stdout is when a line is written (test capture, func's console)."""

        def write(self, text: str) -> int:
            return sys.stdout.write(text)

        def flush(self) -> None:
            sys.stdout.flush()

    out: Any = Stdout()
    tracers = SdkTracerProvider()
    tracers.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter(out=out, formatter=span_line)))
    delta = AggregationTemporality.DELTA  # each point printed once, not again at every export
    exporter = ConsoleMetricExporter(out=out, formatter=metric_lines, preferred_temporality={
        Counter: delta, Histogram: delta, UpDownCounter: delta, Gauge: delta,
    })
    reader = PeriodicExportingMetricReader(exporter, export_interval_millis=60_000)
    meters = SdkMeterProvider(metric_readers=[reader])
    return OtelTelemetry(tracers, meters)
