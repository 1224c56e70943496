"""Proof that no secret value reaches a log record, across the whole suite.

Every log record of the session (all loggers at DEBUG, the Azure SDK's
included) is appended to one file; every secret value the suite generates or
seeds is registered here (from each emulator's store at teardown, and by tests
that create passwords themselves). At the end of the session each value is
searched for in the log file; a hit fails the run.
"""

from __future__ import annotations

import logging
import tempfile
import threading
from collections.abc import Iterable
from pathlib import Path

MIN_LEN = 8  # shorter strings collide with ordinary words
_values: set[str] = set()
_lock = threading.Lock()


def register(values: Iterable[str]) -> None:
    with _lock:
        for value in values:
            if isinstance(value, str) and len(value) >= MIN_LEN:
                _values.add(value)


def registered() -> set[str]:
    with _lock:
        return set(_values)


class FileRecorder(logging.Handler):
    """Writes every record's final text (message, arguments, traceback) to a file."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        fd, name = tempfile.mkstemp(prefix="rotation-suite-log-", suffix=".txt")
        self.path = Path(name)
        self._file = open(fd, "a", encoding="utf-8", errors="replace")  # noqa: SIM115 - lives for the session
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
        self.records = 0

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
            extras = {k: v for k, v in record.__dict__.items() if k not in _STANDARD_ATTRS}
            with self.lock or threading.Lock():
                self._file.write(f"{text} {extras!r}\n")
                self.records += 1
        except Exception:
            self.handleError(record)

    def record_text(self, kind: str, text: str) -> None:
        """Something other than a log record that must not carry a value either."""
        with self.lock or threading.Lock():
            self._file.write(f"[{kind}] {text}\n")
            self.records += 1

    def close(self) -> None:
        self._file.close()
        super().close()


_STANDARD_ATTRS = set(logging.LogRecord("x", 0, "x", 0, "x", None, None).__dict__) | {"message", "asctime"}


class ExtrasFormatter(logging.Formatter):
    """The recorder's line format, extras included, for processes that log elsewhere (the fault matrix's
    workers write it to stderr, which the parent adds with :func:`record`)."""

    def __init__(self) -> None:
        super().__init__("%(name)s %(levelname)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        extras = {k: v for k, v in record.__dict__.items() if k not in _STANDARD_ATTRS}
        return f"{super().format(record)} {extras!r}"


_recorder: FileRecorder | None = None


def install(recorder: FileRecorder) -> None:
    global _recorder
    _recorder = recorder


def record(kind: str, text: str | bytes) -> None:
    """Add an HTTP response, an exception message, a published event or tags to the scan."""
    if _recorder is not None:
        _recorder.record_text(kind, text.decode("utf-8", "replace") if isinstance(text, bytes) else text)


def find_leaks(log_path: Path, values: Iterable[str]) -> list[str]:
    text = log_path.read_text(encoding="utf-8", errors="replace")
    return [v for v in values if v in text]
