"""Publishing the ``SecretRotated`` event to an Event Grid custom topic.

Pings reach the consumers we know about; the event reaches everyone else
(dashboards, audit, services that subscribe on their own) without this app
knowing them. Like pings, the event names the secret and its new version but
never carries the value, so subscribers fetch it from Key Vault with their
own identity and a captured event is harmless.

Schema decisions:

* Event type ``SecretRotation.SecretRotated`` (:data:`EVENT_TYPE`): namespaced
  so subscription filters cannot confuse it with Key Vault's own
  ``Microsoft.KeyVault.*`` system events, and free of any company name so the
  type survives a rename.
* Subject ``/vaults/{vault}/secrets/{name}``: subscribers can filter with
  "subject begins with" per vault or per secret.
* Event Grid schema by default (``data_version="1.0"``); CloudEvents 1.0
  (``source=/secret-rotation/{vault}``, same type and subject) when
  ``ROTATION_EVENTGRID_SCHEMA=cloudevents``. The topic must be created with the
  matching input schema.
* The event id is the rotation id, so a subscriber can drop a duplicate
  delivered when a notification is repeated for the same rotation.
* ``data`` holds the ping fields plus ``expiresOn``.

Publishing failures are returned, not raised: the rotation is already
committed and the event is best effort on top of the pings.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlunsplit

from azure.core.credentials import AzureKeyCredential
from azure.core.credentials_async import AsyncTokenCredential
from azure.core.exceptions import AzureError, HttpResponseError
from azure.core.messaging import CloudEvent
from azure.eventgrid import EventGridEvent
from azure.eventgrid.aio import EventGridPublisherClient

from shared.adapters.notifiers.http_ping import iso8601, notice_fields
from shared.domain.errors import ConfigurationError
from shared.domain.ports import RotatedNotice
from shared.domain.validation import check_url

EVENT_TYPE = "SecretRotation.SecretRotated"
DATA_VERSION = "1.0"
SCHEMAS = frozenset({"eventgrid", "cloudevents"})


def event_subject(notice: RotatedNotice) -> str:
    """``/vaults/{vault}/secrets/{name}``, the same in both schemas."""
    return f"/vaults/{notice.vault}/secrets/{notice.secret_name}"


def event_source(notice: RotatedNotice) -> str:
    """The CloudEvents ``source``: this app acting on one vault."""
    return f"/secret-rotation/{notice.vault}"


def event_data(notice: RotatedNotice) -> dict[str, str | None]:
    """The event payload: the notice's identifiers and times, never the value."""
    data = notice_fields(notice)
    data["expiresOn"] = iso8601(notice.expires_on) if notice.expires_on is not None else None
    return data


class EventGridPublisher:
    """Publishes ``SecretRotated`` to one Event Grid custom topic.

    ``endpoint`` is the topic endpoint; ``/api/events`` is appended when it
    is given without a path. ``key`` (the topic access key) selects
    ``AzureKeyCredential``; without it ``credential`` (an async
    ``TokenCredential``, e.g. ``DefaultAzureCredential``) is used and needs the
    "EventGrid Data Sender" role. ``client_kwargs`` go to the SDK client, e.g.
    ``connection_verify`` (a CA bundle path, for tests) or ``retry_total``.
    The client is created on first publish and reused.
    """

    def __init__(
        self,
        endpoint: str,
        *,
        key: str | None = None,
        credential: AsyncTokenCredential | None = None,
        schema: str = "eventgrid",
        **client_kwargs: Any,
    ) -> None:
        if schema not in SCHEMAS:
            raise ConfigurationError("Event Grid schema must be 'eventgrid' or 'cloudevents'")
        if not key and credential is None:
            raise ConfigurationError("Event Grid publishing needs a topic key or a token credential")
        self._endpoint = _topic_url(endpoint)
        self._key = key
        self._credential = credential
        self._schema = schema
        self._client_kwargs = client_kwargs
        self._client: EventGridPublisherClient | None = None

    @property
    def schema(self) -> str:
        return self._schema

    def build_event(self, notice: RotatedNotice) -> EventGridEvent | CloudEvent[Any]:
        """The event for a notice in the configured schema (exposed for tests and docs)."""
        if self._schema == "cloudevents":
            return CloudEvent(
                source=event_source(notice),
                type=EVENT_TYPE,
                subject=event_subject(notice),
                data=event_data(notice),
                id=notice.rotation_id,
                time=notice.rotated_at,
                datacontenttype="application/json",
            )
        return EventGridEvent(
            subject=event_subject(notice),
            event_type=EVENT_TYPE,
            data=event_data(notice),
            data_version=DATA_VERSION,
            id=notice.rotation_id,
            event_time=notice.rotated_at,
        )

    async def publish(self, notice: RotatedNotice) -> tuple[bool, str | None]:
        """Send the event; ``(True, None)`` or ``(False, short reason)``. Never raises."""
        try:
            await self._get_client().send(self.build_event(notice))
        except HttpResponseError as exc:
            return False, _describe(exc, exc.status_code)
        except AzureError as exc:
            return False, _describe(exc, None)
        except Exception as exc:  # the rotation is committed; never fail it here
            return False, f"unexpected error ({type(exc).__name__})"
        return True, None

    async def close(self) -> None:
        """Close the SDK client; a later publish opens a new one."""
        client, self._client = self._client, None
        if client is not None:
            await client.close()

    def _get_client(self) -> EventGridPublisherClient:
        if self._client is None:
            credential: AzureKeyCredential | AsyncTokenCredential
            if self._key:
                credential = AzureKeyCredential(self._key)
            else:
                assert self._credential is not None  # checked in __init__
                credential = self._credential
            self._client = EventGridPublisherClient(self._endpoint, credential, **self._client_kwargs)
        return self._client


def _describe(exc: Exception, status: int | None) -> str:
    """Class name and status only: SDK messages may quote whole response bodies."""
    if status is not None:
        reason = getattr(getattr(exc, "response", None), "reason", None) or ""
        reason = "".join(ch for ch in str(reason) if 32 <= ord(ch) < 127)[:60]
        return f"{type(exc).__name__}: HTTP {status} {reason}".rstrip()
    # Connection-level errors have no response; their message names the host
    # and the socket error, which is what an operator needs.
    message = str(getattr(exc, "message", "") or exc).splitlines()[0] if str(exc) else "publish failed"
    message = "".join(ch for ch in message if 32 <= ord(ch) < 127)[:120]
    return f"{type(exc).__name__}: {message}"


def _topic_url(endpoint: str) -> str:
    """Validate the topic endpoint and add ``/api/events`` when no path is given."""
    parts = check_url(endpoint.strip(), "ROTATION_EVENTGRID_TOPIC_ENDPOINT", allow_local_http=True)
    path = parts.path if parts.path not in ("", "/") else "/api/events"
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))
