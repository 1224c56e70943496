"""Consumer pings and the SecretRotated event over real sockets.

The consumers are :class:`tests.support.consumer_app.ConsumerApp` instances
served by uvicorn (mostly over TLS with a trustme CA) and the Event Grid topic
is :class:`tests.support.eventgrid_sink.EventGridSink`, published to by the
real ``azure.eventgrid.aio.EventGridPublisherClient``.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import ssl
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import trustme
from azure.core.credentials import AccessToken
from standardwebhooks.webhooks import Webhook

from shared.adapters.notifiers.composite import ConsumerNotifier
from shared.adapters.notifiers.eventgrid import EVENT_TYPE, EventGridPublisher
from shared.adapters.notifiers.http_ping import AsyncTokenSource, HttpPingNotifier
from shared.bootstrap import build_notifier
from shared.domain.errors import SecretNotFound
from shared.domain.model import SecretProperties, SecretVersion
from shared.domain.ports import Consumer, RotatedNotice, SecretReader
from tests.support.consumer_app import ConsumerApp, ConsumerServer
from tests.support.eventgrid_sink import EventGridSink

SECRET = "jwt-signing-key"
SECRET_VALUE = "s3cr3t-VALUE-of-v2-never-on-the-wire"
HMAC_SECRET = "backend-refresh-hmac-key"
HMAC_KEY_BYTES = b"hmac-KEY-material-also-never-on-the-wire"
HMAC_KEY = "whsec_" + base64.b64encode(HMAC_KEY_BYTES).decode()
TOPIC_KEY = "topic-key-for-the-sink"

NOTICE = RotatedNotice(
    vault="kv-main",
    vault_url="https://kv-main.vault.azure.net",
    secret_name=SECRET,
    version="v2",
    previous_version="v1",
    rotation_id="rot-0001",
    rotated_at=datetime(2025, 3, 4, 5, 6, 7, tzinfo=UTC),
    expires_on=datetime(2025, 6, 2, 5, 6, 7, tzinfo=UTC),
    trigger="near-expiry",
)
EXPECTED_BODY = {
    "vault": "kv-main",
    "vaultUrl": "https://kv-main.vault.azure.net",
    "secretName": SECRET,
    "version": "v2",
    "previousVersion": "v1",
    "rotationId": "rot-0001",
    "rotatedAt": "2025-03-04T05:06:07Z",
    "trigger": "near-expiry",
}


class FakeVault(SecretReader):
    """In-memory Key Vault: the notifier's SecretReader and the consumers' reader."""

    def __init__(self) -> None:
        self.secrets: dict[str, tuple[str, str]] = {SECRET: (SECRET_VALUE, "v2"), HMAC_SECRET: (HMAC_KEY, "k1")}
        self.gets: list[str] = []

    async def get(self, name: str, version: str | None = None) -> SecretVersion:
        self.gets.append(name)
        if name not in self.secrets:
            raise SecretNotFound("secret does not exist")
        value, current = self.secrets[name]
        return SecretVersion(properties=SecretProperties(name=name, version=current), value=value)

    async def read(self, name: str) -> tuple[str, str]:
        return self.secrets[name]


class FakeCredential(AsyncTokenSource):
    """An async token credential of our own: hands out a recognisable token per scope."""

    def __init__(self) -> None:
        self.scopes: list[str] = []

    async def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        self.scopes.extend(scopes)
        return AccessToken(f"token-for-{scopes[0]}", int(time.time()) + 3600)


def bearer_for(audience: str) -> str:
    return f"token-for-{audience}/.default"


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def leaf(ca: trustme.CA) -> trustme.LeafCert:
    return ca.issue_cert("127.0.0.1", "localhost")


@pytest.fixture(scope="module")
def client_ssl(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


@pytest.fixture
def vault() -> FakeVault:
    return FakeVault()


@pytest.fixture
def credential() -> FakeCredential:
    return FakeCredential()


@pytest.fixture
async def servers(leaf: trustme.LeafCert) -> AsyncIterator[Callable[[ConsumerApp], ConsumerServer]]:
    """Start consumer servers on demand; all are stopped after the test.

    Stopped off the event loop: a TLS server waits for the client's
    close_notify, which the client cannot send while its loop is blocked.
    """
    started: list[ConsumerServer] = []

    def start(app: ConsumerApp, *, tls: bool = True) -> ConsumerServer:
        server = ConsumerServer(app, tls=leaf if tls else None)
        server.start()
        started.append(server)
        return server

    yield start
    for server in started:
        await server.astop()


@pytest.fixture
async def notifier(
    vault: FakeVault, credential: FakeCredential, client_ssl: ssl.SSLContext
) -> AsyncIterator[HttpPingNotifier]:
    pinger = HttpPingNotifier(
        credential=credential,
        hmac_keys=vault,
        timeout_seconds=2.0,
        attempts=3,
        backoff_initial=0.01,
        backoff_max=0.05,
        backoff_jitter=0.01,
        ssl_context=client_ssl,
    )
    yield pinger
    await pinger.close()


@pytest.fixture
async def sink(ca: trustme.CA) -> AsyncIterator[EventGridSink]:
    running = EventGridSink(TOPIC_KEY, ca=ca)
    running.start()
    yield running
    await running.astop()
    running.close()


def hmac_app(vault: FakeVault, **kwargs: Any) -> ConsumerApp:
    return ConsumerApp(vault.read, secret_name=SECRET, hmac_key=HMAC_KEY, **kwargs)


def assert_no_secret(text: str | bytes | None) -> None:
    if text is None:
        return
    raw = text if isinstance(text, str) else text.decode("utf-8", "replace")
    assert SECRET_VALUE not in raw
    assert HMAC_KEY not in raw
    assert HMAC_KEY.removeprefix("whsec_") not in raw


# --- pings ---------------------------------------------------------------


async def test_ping_body_has_the_notice_fields_and_never_the_value(
    vault: FakeVault, notifier: HttpPingNotifier, servers: Callable[[ConsumerApp], ConsumerServer]
) -> None:
    app = hmac_app(vault)
    server = servers(app)
    assert server.url.startswith("https://")

    [result] = await notifier.ping_all(NOTICE, [Consumer("backend", server.url, "hmac", hmac_secret=HMAC_SECRET)])

    assert result.ok, result
    assert (result.status, result.acknowledged_version, result.attempts, result.error) == (200, "v2", 1, None)
    [ping] = app.pings
    assert ping.body == EXPECTED_BODY
    assert ping.headers["content-type"] == "application/json"
    assert ping.headers["x-rotation-id"] == "rot-0001"
    assert_no_secret(ping.raw_body)
    assert_no_secret(json.dumps(ping.headers))
    # The consumer dropped its cache and re-read the new version.
    assert app.reads == 1
    assert app.cached_version == "v2"


async def test_hmac_pings_carry_a_standard_webhooks_signature_verified_by_the_standardwebhooks_package(
    vault: FakeVault, notifier: HttpPingNotifier, servers: Callable[[ConsumerApp], ConsumerServer]
) -> None:
    """The consumer verifies with the PyPI ``standardwebhooks`` package, not with our code."""
    good = servers(hmac_app(vault))
    other_key = "whsec_" + base64.b64encode(b"another-key-of-at-least-24-bytes").decode()
    wrong_key = servers(ConsumerApp(vault.read, secret_name=SECRET, hmac_key=other_key))
    consumers = [
        Consumer("backend", good.url, "hmac", hmac_secret=HMAC_SECRET),
        Consumer("backend-2", good.url + "?replica=2", "hmac", hmac_secret=HMAC_SECRET),
        Consumer("misconfigured", wrong_key.url, "hmac", hmac_secret=HMAC_SECRET),
    ]

    results = await notifier.ping_all(NOTICE, consumers)

    assert [r.ok for r in results] == [True, True, False]
    for ping in good.consumer.pings:
        assert ping.auth == "hmac"
        assert ping.verified
        # webhook-id is the rotation id (the same on every retry, the consumer's de-duplication key).
        assert ping.headers["webhook-id"] == "rot-0001"
        timestamp = ping.headers["webhook-timestamp"]
        assert timestamp.isdigit() and abs(int(timestamp) - time.time()) < 60
        # v1,<base64 HMAC-SHA256 of id.timestamp.body> keyed with the decoded whsec_ key.
        material = b"rot-0001." + timestamp.encode() + b"." + ping.raw_body
        expected = base64.b64encode(hmac.new(HMAC_KEY_BYTES, material, hashlib.sha256).digest()).decode()
        assert ping.headers["webhook-signature"] == "v1," + expected
        Webhook(HMAC_KEY).verify(ping.raw_body, ping.headers)
    # A 401 is final: not retried, reported with its status only.
    bad = results[2]
    assert (bad.status, bad.attempts, bad.error) == (401, 1, "HTTP 401 Unauthorized")
    assert wrong_key.consumer.pings[0].verified is False
    # The HMAC key was read from Key Vault once for the whole notify call.
    assert vault.gets.count(HMAC_SECRET) == 1


async def test_prepared_keys_are_read_ahead_once_and_used_by_the_pings(
    vault: FakeVault, notifier: HttpPingNotifier, servers: Callable[[ConsumerApp], ConsumerServer]
) -> None:
    """The engine prepares the pings while it fences and writes: the key read is done before the commit."""
    good = servers(hmac_app(vault))
    consumers = [Consumer("backend", good.url, "hmac", hmac_secret=HMAC_SECRET),
                 Consumer("bridge", good.url + "?replica=2", "hmac", hmac_secret=HMAC_SECRET)]

    prepared = notifier.prepare(consumers)
    await asyncio.sleep(0.05)
    assert vault.gets.count(HMAC_SECRET) == 1  # read before any ping is sent
    results = await notifier.ping_all(NOTICE, consumers, prepared)

    assert [r.ok for r in results] == [True, True]
    assert vault.gets.count(HMAC_SECRET) == 1
    prepared.close()  # closing again after use is harmless


async def test_prepared_keys_that_are_never_used_are_dropped_quietly(notifier: HttpPingNotifier) -> None:
    """A rotation that fails before its commit closes what it prepared; a failed read leaves no stray task."""
    consumers = [Consumer("backend", "https://127.0.0.1:9/refresh", "hmac", hmac_secret="no-such-key")]
    prepared = notifier.prepare(consumers)
    await asyncio.sleep(0.05)
    prepared.close()


async def test_missing_hmac_key_secret_is_reported_not_raised(
    vault: FakeVault, notifier: HttpPingNotifier, servers: Callable[[ConsumerApp], ConsumerServer]
) -> None:
    server = servers(hmac_app(vault))
    [result] = await notifier.ping_all(NOTICE, [Consumer("backend", server.url, "hmac", hmac_secret="no-such-key")])
    assert not result.ok
    assert result.error == "could not read HMAC key secret 'no-such-key' (SecretNotFound)"
    assert server.consumer.pings == []


@pytest.mark.parametrize(
    ("stored", "reason"),
    [
        ("plain-text-key-without-the-prefix-0123456789", "is not a Standard Webhooks key (expected whsec_<base64>)"),
        ("whsec_***not-base64***", "is not a Standard Webhooks key (the part after whsec_ is not base64)"),
        ("whsec_" + base64.b64encode(b"short").decode(), "must hold a key of 24 to 64 bytes"),
    ],
)
async def test_hmac_key_not_in_whsec_form_is_reported_without_its_value(
    vault: FakeVault,
    notifier: HttpPingNotifier,
    servers: Callable[[ConsumerApp], ConsumerServer],
    stored: str,
    reason: str,
) -> None:
    vault.secrets[HMAC_SECRET] = (stored, "k2")
    server = servers(hmac_app(vault))
    [result] = await notifier.ping_all(NOTICE, [Consumer("backend", server.url, "hmac", hmac_secret=HMAC_SECRET)])
    assert not result.ok
    assert result.error == f"HMAC key secret {HMAC_SECRET!r} {reason}"
    assert stored not in (result.error or "")
    assert server.consumer.pings == []


async def test_entra_consumer_gets_a_bearer_token_for_its_audience(
    vault: FakeVault,
    credential: FakeCredential,
    notifier: HttpPingNotifier,
    servers: Callable[[ConsumerApp], ConsumerServer],
) -> None:
    app = ConsumerApp(vault.read, secret_name=SECRET, bearer_tokens=[bearer_for("api://bridge")])
    server = servers(app)

    [result] = await notifier.ping_all(NOTICE, [Consumer("bridge", server.url, "entra", audience="api://bridge")])

    assert result.ok, result
    assert credential.scopes == ["api://bridge/.default"]
    [ping] = app.pings
    assert ping.headers["authorization"] == "Bearer token-for-api://bridge/.default"
    assert (ping.auth, ping.verified) == ("bearer", True)
    assert "webhook-signature" not in ping.headers


async def test_slow_consumer_times_out_after_every_attempt_while_others_succeed(
    vault: FakeVault, credential: FakeCredential, client_ssl: ssl.SSLContext, servers: Callable[..., ConsumerServer]
) -> None:
    slow = servers(hmac_app(vault))
    slow.consumer.delay_seconds = 1.5
    fast = servers(hmac_app(vault))
    pinger = HttpPingNotifier(
        credential=credential,
        hmac_keys=vault,
        timeout_seconds=0.3,
        attempts=3,
        backoff_initial=0.01,
        backoff_max=0.02,
        backoff_jitter=0.0,
        ssl_context=client_ssl,
    )
    try:
        started = time.monotonic()
        slow_result, fast_result = await pinger.ping_all(
            NOTICE,
            [
                Consumer("slow", slow.url, "hmac", hmac_secret=HMAC_SECRET),
                Consumer("fast", fast.url, "hmac", hmac_secret=HMAC_SECRET),
            ],
        )
        elapsed = time.monotonic() - started
    finally:
        await pinger.close()

    assert not slow_result.ok
    assert slow_result.attempts == 3
    assert slow_result.status is None
    assert slow_result.error == "timed out after 0.3s on each of 3 attempt(s)"
    assert len(slow.consumer.pings) == 3
    assert fast_result.ok and fast_result.attempts == 1
    assert elapsed < 1.5  # 3 x 0.3 s plus tiny backoff, not the consumer's 1.5 s each


async def test_server_errors_are_retried_until_acknowledged(
    vault: FakeVault, notifier: HttpPingNotifier, servers: Callable[[ConsumerApp], ConsumerServer]
) -> None:
    app = hmac_app(vault)
    server = servers(app)
    app.fail_next(500, 500)

    [result] = await notifier.ping_all(NOTICE, [Consumer("backend", server.url, "hmac", hmac_secret=HMAC_SECRET)])

    assert result.ok, result
    assert (result.status, result.attempts, result.acknowledged_version) == (200, 3, "v2")
    assert [p.status for p in app.pings] == [500, 500, 200]
    # Each attempt is signed afresh and verified; webhook-id stays the rotation id on every retry.
    assert app.pings[-1].verified
    assert {p.headers["webhook-id"] for p in app.pings} == {"rot-0001"}


async def test_persistent_failure_reports_status_without_the_response_body(
    vault: FakeVault, notifier: HttpPingNotifier, servers: Callable[[ConsumerApp], ConsumerServer]
) -> None:
    app = hmac_app(vault)
    server = servers(app)
    app.fail_next(503, 429, 502, 500)

    [result] = await notifier.ping_all(NOTICE, [Consumer("backend", server.url, "hmac", hmac_secret=HMAC_SECRET)])

    assert not result.ok
    assert (result.status, result.attempts) == (502, 3)
    assert result.error == "HTTP 502 Bad Gateway after 3 attempt(s)"
    assert "simulated" not in (result.error or "")
    assert len(app.pings) == 3


async def test_client_errors_are_not_retried(
    vault: FakeVault, notifier: HttpPingNotifier, servers: Callable[[ConsumerApp], ConsumerServer]
) -> None:
    app = hmac_app(vault)
    server = servers(app)
    app.fail_next(404)

    [result] = await notifier.ping_all(NOTICE, [Consumer("backend", server.url, "hmac", hmac_secret=HMAC_SECRET)])

    assert (result.ok, result.status, result.attempts, result.error) == (False, 404, 1, "HTTP 404 Not Found")


async def test_unreachable_consumer_is_retried_then_reported(
    vault: FakeVault, notifier: HttpPingNotifier, servers: Callable[[ConsumerApp], ConsumerServer]
) -> None:
    server = servers(hmac_app(vault))
    url = server.url
    await server.astop()

    [result] = await notifier.ping_all(NOTICE, [Consumer("backend", url, "hmac", hmac_secret=HMAC_SECRET)])

    assert not result.ok
    assert result.attempts == 3
    assert result.error is not None
    assert result.error.startswith("connection failed after 3 attempt(s)")


async def test_version_mismatch_is_not_an_acknowledgement(
    vault: FakeVault, notifier: HttpPingNotifier, servers: Callable[[ConsumerApp], ConsumerServer]
) -> None:
    async def stale_replica(name: str) -> tuple[str, str]:
        return "old-value", "v1"

    app = ConsumerApp(stale_replica, secret_name=SECRET, hmac_key=HMAC_KEY)
    server = servers(app)

    [result] = await notifier.ping_all(NOTICE, [Consumer("backend", server.url, "hmac", hmac_secret=HMAC_SECRET)])

    assert not result.ok
    assert (result.status, result.acknowledged_version, result.attempts) == (200, "v1", 1)
    assert result.error == "version mismatch: consumer uses 'v1', expected 'v2'"


async def test_a_service_wide_consumer_must_say_its_acknowledgement_covers_every_instance(
    vault: FakeVault, notifier: HttpPingNotifier, servers: Callable[[ConsumerApp], ConsumerServer]
) -> None:
    """A catalog entry with acknowledges=service lets an ack retire early, so a per-instance answer is refused."""
    one_replica = hmac_app(vault, coverage="instance")
    whole = hmac_app(vault)
    single, service = servers(one_replica), servers(whole)
    per_instance, covered = await notifier.ping_all(NOTICE, [
        Consumer("backend", single.url, "hmac", hmac_secret=HMAC_SECRET, acknowledges="service"),
        Consumer("bridge", service.url, "hmac", hmac_secret=HMAC_SECRET, acknowledges="service"),
    ])
    assert (per_instance.ok, per_instance.status, per_instance.attempts) == (False, 200, 1)
    assert per_instance.error == 'acknowledgement does not cover every instance (no "coverage": "service")'
    assert covered.ok and covered.acknowledged_version == "v2"
    # The default (acknowledges=instance) takes either answer; the engine then waits for the cache age.
    [plain] = await notifier.ping_all(NOTICE, [Consumer("backend", single.url, "hmac", hmac_secret=HMAC_SECRET)])
    assert plain.ok


async def test_two_xx_without_a_version_is_an_acknowledgement(
    vault: FakeVault, notifier: HttpPingNotifier, servers: Callable[[ConsumerApp], ConsumerServer]
) -> None:
    app = ConsumerApp(vault.read, secret_name=SECRET, allow_anonymous=True)
    server = servers(app)
    app.fail_next(204)

    [result] = await notifier.ping_all(NOTICE, [Consumer("plain", server.url)])

    assert (result.ok, result.status, result.acknowledged_version) == (True, 204, "v2")


async def test_fan_out_is_concurrent(
    vault: FakeVault, notifier: HttpPingNotifier, servers: Callable[[ConsumerApp], ConsumerServer]
) -> None:
    app = hmac_app(vault)
    app.delay_seconds = 0.1
    server = servers(app)
    consumers = [Consumer(f"replica-{i}", f"{server.url}?n={i}", "hmac", hmac_secret=HMAC_SECRET) for i in range(100)]

    results = await notifier.ping_all(NOTICE, consumers)

    assert [r.consumer for r in results] == [c.name for c in consumers]
    assert all(r.ok for r in results), [r for r in results if not r.ok][:3]
    assert len(app.pings) == 100
    # Concurrency shown by overlap, not by a wall-clock bound a loaded machine can miss:
    # a sequential fan-out would never hold two pings at once.
    assert app.max_in_flight >= 10, app.max_in_flight
    assert vault.gets.count(HMAC_SECRET) == 1


async def test_no_consumers_means_no_session(notifier: HttpPingNotifier) -> None:
    assert await notifier.ping_all(NOTICE, []) == []
    assert notifier._session is None


# --- Event Grid -------------------------------------------------------------


def publisher_for(sink: EventGridSink, schema: str, **kwargs: Any) -> EventGridPublisher:
    options: dict[str, Any] = {"key": TOPIC_KEY, "connection_verify": sink.ca_path, "retry_total": 0}
    options.update(kwargs)
    return EventGridPublisher(sink.endpoint, schema=schema, **options)


async def test_event_grid_schema_event_reaches_the_topic(sink: EventGridSink) -> None:
    publisher = publisher_for(sink, "eventgrid")
    try:
        assert await publisher.publish(NOTICE) == (True, None)
    finally:
        await publisher.close()

    [publish] = sink.published
    assert publish.api_version == "2018-01-01"
    assert publish.content_type.startswith("application/json")
    [event] = publish.events
    assert event["eventType"] == EVENT_TYPE == "SecretRotation.SecretRotated"
    assert event["subject"] == "/vaults/kv-main/secrets/jwt-signing-key"
    assert event["dataVersion"] == "1.0"
    assert event["id"] == "rot-0001"
    assert event["data"] == {**EXPECTED_BODY, "expiresOn": "2025-06-02T05:06:07Z"}
    assert datetime.fromisoformat(event["eventTime"]) == NOTICE.rotated_at
    assert_no_secret(json.dumps(sink.published[0].events))


async def test_cloud_event_reaches_the_topic(sink: EventGridSink) -> None:
    publisher = publisher_for(sink, "cloudevents")
    try:
        assert await publisher.publish(NOTICE) == (True, None)
    finally:
        await publisher.close()

    [publish] = sink.published
    assert publish.content_type.startswith("application/cloudevents-batch+json")
    [event] = publish.events
    assert event["specversion"] == "1.0"
    assert event["type"] == EVENT_TYPE
    assert event["source"] == "/secret-rotation/kv-main"
    assert event["subject"] == "/vaults/kv-main/secrets/jwt-signing-key"
    assert event["id"] == "rot-0001"
    assert event["data"] == {**EXPECTED_BODY, "expiresOn": "2025-06-02T05:06:07Z"}
    assert_no_secret(json.dumps(publish.events))


async def test_publisher_client_is_created_once_and_reused(sink: EventGridSink) -> None:
    publisher = publisher_for(sink, "eventgrid")
    try:
        assert await publisher.publish(NOTICE) == (True, None)
        client = publisher._client
        assert await publisher.publish(NOTICE) == (True, None)
        assert publisher._client is client is not None
    finally:
        await publisher.close()
    assert len(sink.events) == 2


async def test_rejected_publish_is_reported_without_the_key(sink: EventGridSink) -> None:
    publisher = publisher_for(sink, "eventgrid", key="wrong-key")
    try:
        published, error = await publisher.publish(NOTICE)
    finally:
        await publisher.close()
    assert not published
    assert error == "ClientAuthenticationError: HTTP 401 Unauthorized"
    assert sink.rejected == 1


async def test_unreachable_topic_is_reported_not_raised(sink: EventGridSink) -> None:
    await sink.astop()
    publisher = publisher_for(sink, "cloudevents")
    try:
        published, error = await publisher.publish(NOTICE)
    finally:
        await publisher.close()
    assert not published
    assert error is not None
    assert error.startswith("ServiceRequestError: ")
    assert TOPIC_KEY not in error


# --- composite ----------------------------------------------------------------


async def test_consumer_notifier_pings_and_publishes_together(
    vault: FakeVault,
    notifier: HttpPingNotifier,
    sink: EventGridSink,
    servers: Callable[[ConsumerApp], ConsumerServer],
    caplog: pytest.LogCaptureFixture,
) -> None:
    backend = servers(hmac_app(vault))
    down = servers(hmac_app(vault))
    down.consumer.down = True
    composite = ConsumerNotifier(notifier, publisher_for(sink, "eventgrid"))
    consumers = [
        Consumer("backend", backend.url, "hmac", hmac_secret=HMAC_SECRET),
        Consumer("down", down.url, "hmac", hmac_secret=HMAC_SECRET),
    ]
    try:
        with caplog.at_level(logging.INFO, logger="shared.adapters.notifiers"):
            result = await composite.notify(NOTICE, consumers)
    finally:
        await composite.close()

    assert [(c.consumer, c.ok) for c in result.consumers] == [("backend", True), ("down", False)]
    assert not result.all_acknowledged
    assert (result.event_published, result.event_error) == (True, None)
    assert len(sink.events) == 1
    lines = [r for r in caplog.records if r.name == "shared.adapters.notifiers"]
    assert len(lines) == 3  # one per consumer, one for the event
    assert "consumer=backend" in lines[0].getMessage()
    assert lines[1].levelno == logging.WARNING
    assert "HTTP 503" in lines[1].getMessage()
    for record in caplog.records:
        assert_no_secret(record.getMessage())
    for ping in backend.consumer.pings + down.consumer.pings:
        assert_no_secret(ping.raw_body)


async def test_the_event_waits_for_event_after_while_the_pings_do_not_and_is_never_sent_if_cancelled(
    vault: FakeVault, notifier: HttpPingNotifier, sink: EventGridSink, servers: Callable[[ConsumerApp], ConsumerServer]
) -> None:
    """The engine pings while it confirms the new version is the one served; the event waits for that."""
    backend = servers(hmac_app(vault))
    composite = ConsumerNotifier(notifier, publisher_for(sink, "eventgrid"))
    consumers = [Consumer("backend", backend.url, "hmac", hmac_secret=HMAC_SECRET)]
    try:
        confirmed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        notifying = asyncio.ensure_future(composite.notify(NOTICE, consumers, event_after=confirmed))
        while not backend.consumer.pings or backend.consumer.pings[-1].status is None:
            await asyncio.sleep(0.01)
        assert sink.events == [] and not notifying.done()  # acknowledged, the event still held
        confirmed.set_result(None)
        result = await notifying
        assert result.all_acknowledged and result.event_published is True
        assert len(sink.events) == 1

        superseded: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        notifying = asyncio.ensure_future(composite.notify(NOTICE, consumers, event_after=superseded))
        while len(backend.consumer.pings) < 2 or backend.consumer.pings[-1].status is None:
            await asyncio.sleep(0.01)
        notifying.cancel()  # what the engine does when another version is served
        await asyncio.wait([notifying])
        assert len(sink.events) == 1
    finally:
        await composite.close()


async def test_publish_failure_does_not_affect_acknowledgements(
    vault: FakeVault, notifier: HttpPingNotifier, sink: EventGridSink, servers: Callable[[ConsumerApp], ConsumerServer]
) -> None:
    backend = servers(hmac_app(vault))
    await sink.astop()
    composite = ConsumerNotifier(notifier, publisher_for(sink, "eventgrid"))
    try:
        result = await composite.notify(NOTICE, [Consumer("backend", backend.url, "hmac", hmac_secret=HMAC_SECRET)])
    finally:
        await composite.close()

    assert result.all_acknowledged
    assert result.event_published is False
    assert result.event_error is not None


async def test_without_a_topic_the_event_is_not_applicable(
    vault: FakeVault, notifier: HttpPingNotifier, servers: Callable[[ConsumerApp], ConsumerServer]
) -> None:
    backend = servers(hmac_app(vault))
    composite = ConsumerNotifier(notifier)
    result = await composite.notify(NOTICE, [Consumer("backend", backend.url, "hmac", hmac_secret=HMAC_SECRET)])
    assert result.all_acknowledged
    assert (result.event_published, result.event_error) == (None, None)


async def test_consumer_notifier_from_settings(vault: FakeVault, credential: FakeCredential) -> None:
    from shared.config.settings import Settings

    settings = Settings.from_env(
        {
            "ROTATION_PING_TIMEOUT_SECONDS": "1.5",
            "ROTATION_PING_ATTEMPTS": "4",
            "ROTATION_EVENTGRID_TOPIC_ENDPOINT": "https://topic.westeurope-1.eventgrid.azure.net",
            "ROTATION_EVENTGRID_TOPIC_KEY": TOPIC_KEY,
            "ROTATION_EVENTGRID_SCHEMA": "cloudevents",
        }
    )
    composite = build_notifier(settings, None, vault)
    pinger = composite._pinger
    publisher = composite._publisher
    assert isinstance(pinger, HttpPingNotifier) and isinstance(publisher, EventGridPublisher)
    assert (pinger._timeout, pinger._attempts) == (1.5, 4)
    assert publisher._endpoint == "https://topic.westeurope-1.eventgrid.azure.net/api/events"
    assert publisher.schema == "cloudevents"
    assert build_notifier(Settings(), None, None)._publisher is None  # no topic configured: pings only
    await composite.close()


def test_expiry_is_optional_in_event_data() -> None:
    from dataclasses import replace

    from shared.adapters.notifiers.eventgrid import event_data

    data = event_data(replace(NOTICE, expires_on=None, rotated_at=datetime(2025, 1, 1) + timedelta(hours=1)))
    assert data["expiresOn"] is None
    assert data["rotatedAt"] == "2025-01-01T01:00:00Z"
