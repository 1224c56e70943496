"""On-demand failures, so reliability code is tested against the real SDK.

Retry, back-off and timeout behaviour lives partly in our code and partly in
azure-core's pipeline; mocking either hides how they interact. Instead a test
arms a fault here and the emulator answers the next matching request(s) the
way a throttled or sick Key Vault would, and the real ``SecretClient`` reacts
as it would in production.

Faults only apply to authenticated requests, i.e. to what would reach the
vault itself; the 401 challenge handshake is never faulted, so ``times=2``
means exactly two vault operations fail whatever the client's token state.
Arming and consuming happen from different threads, hence the lock.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from typing import Literal

_DEFAULT_ERRORS: dict[int, tuple[str, str]] = {
    408: ("RequestTimeout", "The request timed out."),
    429: (
        "Throttled",
        "Request was not processed because too many requests were received. Reason: emulator fault injection.",
    ),
    500: ("InternalServerError", "An unexpected error occurred while processing the request."),
    502: ("BadGateway", "The service is temporarily unable to process the request."),
    503: ("ServiceUnavailable", "The service is currently unavailable. Please retry the request."),
    504: ("GatewayTimeout", "The request timed out at the gateway."),
}

FaultKind = Literal["status", "latency", "disconnect"]


@dataclass
class Fault:
    """One armed fault. ``remaining`` None means until cleared."""

    kind: FaultKind
    status: int | None = None
    retry_after: float | None = None
    seconds: float = 0.0
    remaining: int | None = 1
    method: str | None = None
    path_regex: str | None = None
    code: str | None = None
    message: str | None = None
    hits: int = 0
    _pattern: re.Pattern[str] | None = field(default=None, repr=False)

    def matches(self, method: str, path: str) -> bool:
        if self.method is not None and self.method.upper() != method.upper():
            return False
        return self._pattern is None or self._pattern.search(path) is not None

    def error(self) -> tuple[str, str]:
        default_code, default_message = _DEFAULT_ERRORS.get(self.status or 500, ("Error", "Injected failure."))
        return self.code or default_code, self.message or default_message

    def retry_after_header(self) -> str | None:
        if self.retry_after is None:
            return None
        if float(self.retry_after).is_integer():
            return str(int(self.retry_after))
        return repr(float(self.retry_after))


@dataclass(frozen=True)
class FaultDecision:
    """What to do to one request: wait ``delay`` seconds, then maybe fail."""

    delay: float = 0.0
    fault: Fault | None = None


class Faults:
    """Thread-safe registry of armed faults for one emulator."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []

    def add(
        self,
        status: int,
        *,
        retry_after: float | None = None,
        times: int | None = 1,
        method: str | None = None,
        path_regex: str | None = None,
        code: str | None = None,
        message: str | None = None,
    ) -> Fault:
        """Answer the next ``times`` matching requests with ``status`` and a Key Vault error body.

        ``retry_after`` (seconds) adds a ``Retry-After`` header; ``path_regex``
        is searched in the request path (no query string); ``times=None``
        keeps failing until :meth:`clear`.
        """
        if not 400 <= status <= 599:
            raise ValueError("status must be an HTTP error status (4xx or 5xx)")
        return self._arm(
            Fault(
                kind="status",
                status=status,
                retry_after=retry_after,
                remaining=self._times(times),
                method=method,
                path_regex=path_regex,
                code=code,
                message=message,
            )
        )

    def latency(
        self,
        seconds: float,
        times: int | None = None,
        *,
        method: str | None = None,
        path_regex: str | None = None,
    ) -> Fault:
        """Delay matching requests by ``seconds`` before answering (``times=None``: until cleared)."""
        if seconds < 0:
            raise ValueError("seconds must not be negative")
        return self._arm(
            Fault(
                kind="latency",
                seconds=seconds,
                remaining=self._times(times),
                method=method,
                path_regex=path_regex,
            )
        )

    def disconnect(
        self,
        times: int | None = 1,
        *,
        method: str | None = None,
        path_regex: str | None = None,
    ) -> Fault:
        """Close the connection without answering the next ``times`` matching requests."""
        return self._arm(Fault(kind="disconnect", remaining=self._times(times), method=method, path_regex=path_regex))

    def remove(self, fault: Fault) -> None:
        with self._lock:
            if fault in self._faults:
                self._faults.remove(fault)

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    @property
    def armed(self) -> list[Fault]:
        with self._lock:
            return list(self._faults)

    def take(self, method: str, path: str) -> FaultDecision:
        """Consume what applies to one request (every matching latency, the first matching failure)."""
        delay = 0.0
        failure: Fault | None = None
        with self._lock:
            for fault in list(self._faults):
                if not fault.matches(method, path):
                    continue
                if fault.kind == "latency":
                    delay += fault.seconds
                elif failure is None:
                    failure = fault
                else:
                    continue
                fault.hits += 1
                if fault.remaining is not None:
                    fault.remaining -= 1
                    if fault.remaining <= 0:
                        self._faults.remove(fault)
        return FaultDecision(delay=delay, fault=failure)

    def _arm(self, fault: Fault) -> Fault:
        if fault.path_regex is not None:
            fault._pattern = re.compile(fault.path_regex)
        with self._lock:
            self._faults.append(fault)
        return fault

    @staticmethod
    def _times(times: int | None) -> int | None:
        if times is not None and times < 1:
            raise ValueError("times must be at least 1 (or None for until cleared)")
        return times
