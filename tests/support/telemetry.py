"""The OpenTelemetry SDK with in-memory exporters, for the whole suite.

``pytest_configure`` installs one :class:`Capture` as the process telemetry,
so every ``Container`` of the suite reports through the real SDK: each span,
log record and metric data point that would be exported is also written to
the secret-leak scan (tests/support/leakscan.py), and the telemetry tests read
what was exported from here.
"""

from __future__ import annotations

import collections
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler, ReadableLogRecord
from opentelemetry.sdk._logs.export import LogRecordExporter, LogRecordExportResult, SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import Counter, Histogram, MeterProvider, UpDownCounter
from opentelemetry.sdk.metrics._internal.instrument import Gauge
from opentelemetry.sdk.metrics.export import AggregationTemporality, InMemoryMetricReader, NumberDataPoint
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

from shared.adapters.telemetry import OtelTelemetry, attach_log_filter
from tests.support import leakscan

KEEP = 20_000  # records kept for the tests to read; the leak scan sees all of them


class _Spans(SpanExporter):
    def __init__(self) -> None:
        self.items: collections.deque[ReadableSpan] = collections.deque(maxlen=KEEP)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        for span in spans:
            events = [(e.name, dict(e.attributes or {})) for e in span.events]
            leakscan.record("span", f"{span.name} {dict(span.attributes or {})!r} {events!r} {span.status!r}")
            self.items.append(span)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass


class _Logs(LogRecordExporter):
    def __init__(self) -> None:
        self.items: collections.deque[ReadableLogRecord] = collections.deque(maxlen=KEEP)

    def export(self, batch: Sequence[ReadableLogRecord]) -> LogRecordExportResult:
        for data in batch:
            record = data.log_record
            leakscan.record("otel-log", f"{record.body!r} {dict(record.attributes or {})!r}")
            self.items.append(data)
        return LogRecordExportResult.SUCCESS

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True


@dataclass(frozen=True)
class Point:
    name: str
    value: float
    attributes: dict[str, Any]


class Capture:
    """The SDK wired to in-memory exporters; :attr:`telemetry` is what the app uses."""

    def __init__(self) -> None:
        delta = AggregationTemporality.DELTA
        self.reader = InMemoryMetricReader(preferred_temporality={
            Counter: delta, UpDownCounter: delta, Histogram: delta, Gauge: delta,
        })
        self.tracer_provider = TracerProvider()
        self.spans = _Spans()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.spans))
        self.meter_provider = MeterProvider(metric_readers=[self.reader])
        self.logger_provider = LoggerProvider()
        self.logs = _Logs()
        self.logger_provider.add_log_record_processor(SimpleLogRecordProcessor(self.logs))
        # INFO, as the app exports in Azure (Functions' default level); the leak scan's own file
        # recorder still reads every DEBUG record, so the slower OpenTelemetry path is spared those.
        self.handler = LoggingHandler(level=logging.INFO, logger_provider=self.logger_provider)
        self.telemetry = OtelTelemetry(self.tracer_provider, self.meter_provider)
        self._lock = threading.Lock()

    def install_log_handler(self) -> None:
        """The production log path: the OpenTelemetry handler on the root logger, with our filter."""
        root = logging.getLogger()
        root.addHandler(self.handler)
        attach_log_filter(root)

    def remove_log_handler(self) -> None:
        logging.getLogger().removeHandler(self.handler)

    def clear(self) -> None:
        """Forget what was exported so far (the leak scan has already seen it)."""
        with self._lock:
            self.spans.items.clear()
            self.logs.items.clear()
            self.metrics()

    def metrics(self) -> list[Point]:
        """Every data point since the last call (delta), each also given to the leak scan."""
        data = self.reader.get_metrics_data()
        points: list[Point] = []
        for resource in data.resource_metrics if data is not None else ():
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    for point in metric.data.data_points:
                        value = point.value if isinstance(point, NumberDataPoint) else point.sum
                        attrs = dict(point.attributes or {})
                        leakscan.record("metric", f"{metric.name} {value!r} {attrs!r}")
                        points.append(Point(metric.name, float(value), attrs))
        return points

    def finished_spans(self) -> list[ReadableSpan]:
        return list(self.spans.items)

    def log_records(self) -> list[ReadableLogRecord]:
        return list(self.logs.items)


_capture: Capture | None = None


def capture() -> Capture:
    if _capture is None:
        raise RuntimeError("the suite's telemetry capture is not installed (tests/conftest.py)")
    return _capture


def set_capture(value: Capture | None) -> None:
    global _capture
    _capture = value
