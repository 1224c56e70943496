"""A local HTTPS endpoint that accepts Event Grid topic publishes.

There is no Event Grid emulator we can run in CI, and a mocked SDK would not
show what the real ``EventGridPublisherClient`` puts on the wire. This sink
speaks just enough of the topic API (``POST /api/events?api-version=...``
with an ``aeg-sas-key`` header) for the real client to publish to it over TLS,
and records each publish for assertions. The certificate comes from a trustme
CA; hand :attr:`EventGridSink.ca_path` to the client as ``connection_verify``.
"""

from __future__ import annotations

import json
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import trustme
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.support import leakscan
from tests.support.consumer_app import ServerThread

EVENTS_PATH = "/api/events"


@dataclass(frozen=True)
class ReceivedPublish:
    """One accepted publish: the events as sent plus the request metadata."""

    api_version: str
    content_type: str
    headers: dict[str, str]
    events: list[dict[str, Any]]


class EventGridSink:
    """Records publishes that carry the right ``aeg-sas-key``; rejects the rest with 401.

    Use as a context manager or call :meth:`start`/:meth:`stop`. ``stop``
    makes the port refuse connections, for "topic unreachable" tests.
    """

    def __init__(self, key: str, *, ca: trustme.CA | None = None) -> None:
        self.key = key
        self.ca = ca or trustme.CA()
        self._lock = threading.Lock()
        self._published: list[ReceivedPublish] = []
        self.rejected = 0
        self.app = Starlette(routes=[Route(EVENTS_PATH, self._publish, methods=["POST"])])
        self._server = ServerThread(self.app, tls=self.ca.issue_cert("127.0.0.1", "localhost"))
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self.ca_path = ""

    @property
    def endpoint(self) -> str:
        return f"{self._server.base_url}{EVENTS_PATH}"

    @property
    def published(self) -> list[ReceivedPublish]:
        with self._lock:
            return list(self._published)

    @property
    def events(self) -> list[dict[str, Any]]:
        return [event for publish in self.published for event in publish.events]

    def start(self) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="eventgrid-sink-")
        ca_file = Path(self._tmp.name) / "ca.pem"
        self.ca.cert_pem.write_to_path(str(ca_file))
        self.ca_path = str(ca_file)
        self._server.start()

    def stop(self) -> None:
        self._server.stop()

    async def astop(self) -> None:
        """:meth:`stop` without blocking the caller's event loop (see ``ServerThread.astop``)."""
        await self._server.astop()

    def close(self) -> None:
        self.stop()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    async def _publish(self, request: Request) -> Response:
        api_version = request.query_params.get("api-version")
        if not api_version:
            return JSONResponse({"error": {"code": "MissingApiVersion"}}, status_code=400)
        if request.headers.get("aeg-sas-key") != self.key:
            with self._lock:
                self.rejected += 1
            return JSONResponse({"error": {"code": "Unauthorized"}}, status_code=401)
        raw = await request.body()
        leakscan.record("published-event", raw)
        try:
            body = json.loads(raw)
        except ValueError:
            return JSONResponse({"error": {"code": "BadRequest"}}, status_code=400)
        if not isinstance(body, list):
            return JSONResponse({"error": {"code": "BadRequest", "message": "expected an array"}}, status_code=400)
        received = ReceivedPublish(
            api_version=api_version,
            content_type=request.headers.get("content-type", ""),
            headers={k.lower(): v for k, v in request.headers.items()},
            events=body,
        )
        with self._lock:
            self._published.append(received)
        return Response(status_code=200)
