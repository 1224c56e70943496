"""Light HTTPS calls to Azure (Graph, Entra's token endpoint, a data-plane probe) on azure-core's own pipeline.

The Microsoft Graph SDK costs seconds of cold start for the two calls the
Entra rotator makes, so they go through ``AsyncPipelineClient`` with a bearer
policy instead: the same transport, retry and token caching the Key Vault
client uses. No policy here logs a body (responses of ``addPassword`` carry
the new secret), and nothing here raises with one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from azure.core import AsyncPipelineClient
from azure.core.exceptions import AzureError
from azure.core.pipeline.policies import (
    AsyncBearerTokenCredentialPolicy,
    AsyncRetryPolicy,
    HeadersPolicy,
    UserAgentPolicy,
)
from azure.core.pipeline.transport import AioHttpTransport
from azure.core.rest import HttpRequest

from shared.domain.errors import DownstreamError

if TYPE_CHECKING:
    from azure.core.credentials_async import AsyncTokenCredential
    from azure.core.rest import AsyncHttpResponse

USER_AGENT = "keyvault-secret-rotation"


class AzureHttp:
    """One HTTPS endpoint: JSON or form requests, optionally with the app's bearer token."""

    def __init__(
        self,
        base_url: str,
        *,
        credential: AsyncTokenCredential | None = None,
        scope: str | None = None,
        ca_bundle: str | None = None,
        retries: int = 3,
    ) -> None:
        policies: list[Any] = [HeadersPolicy(), UserAgentPolicy(USER_AGENT),
                               AsyncRetryPolicy(retry_total=retries, retry_backoff_factor=0.5)]
        if credential is not None:
            policies.append(AsyncBearerTokenCredentialPolicy(credential, scope or f"{base_url}/.default"))
        self.base_url = base_url.rstrip("/")
        self._client: AsyncPipelineClient[HttpRequest, AsyncHttpResponse] = AsyncPipelineClient(
            self.base_url, policies=policies, transport=AioHttpTransport(connection_verify=ca_bundle or True)
        )

    async def send(
        self,
        method: str,
        path: str,
        *,
        what: str,
        json: Any = None,
        data: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        ok: Sequence[int] = (200, 201, 204),
    ) -> tuple[int, Any]:
        """``(status, parsed JSON body or None)``; a status not in ``ok`` is returned too when the caller
        lists it, otherwise DownstreamError naming ``what`` and the status only."""
        request = HttpRequest(method, f"{self.base_url}{path}", json=json, data=dict(data) if data else None,
                              headers=dict(headers or {}))
        try:
            response = await self._client.send_request(request)
        except AzureError as exc:
            raise DownstreamError(f"{what}: {type(exc).__name__}") from exc
        status = response.status_code
        body: Any = None
        if response.content:
            try:
                body = response.json()
            except ValueError:
                body = None
        if status not in ok:
            raise DownstreamError(f"{what}: HTTP {status}")
        return status, body

    async def close(self) -> None:
        await self._client.close()
