"""The API gateway's Entra client secret: added and removed through Microsoft Graph.

Entra generates client secrets itself, and an application may hold several
at once, which gives a zero-downtime rotation:

- ``apply`` first removes passwords this app added earlier for this secret
  that are not the vault's current one (an attempt abandoned by a crash
  before the commit), then calls ``addPassword`` on the application with
  ``endDateTime`` = the new version's expiry; Entra's ``secretText`` is the
  new value and its ``keyId`` is recorded on the new version
  (``rotator-key-id``);
- ``verify`` acquires a client-credentials token with it from the token
  endpoint (retrying while Entra propagates a new password, up to the
  target's ``verifyTimeoutSeconds``);
- ``retire`` (after acknowledgements or the grace period) calls
  ``removePassword`` for the previous credential, and only then.

A password is identified by its ``keyId`` and checked against its ``hint``
(the first three characters Entra keeps of every secret): a tag can name a
``keyId``, but the app removes only a password whose hint matches the
*previous* vault value and never the one whose hint matches the current
value, so a forged ``rotator-*`` tag cannot make it remove the credential in
use. The application, tenant and client id come from the operator file
(:class:`~shared.config.operator_file.EntraApplicationTarget`); the app's
identity needs ``Application.ReadWrite.OwnedBy`` and to own that one
application (infra/modules/rotator-roles.bicep explains). Graph is reached
through azure-core's pipeline (:mod:`shared.rotators.azure_http`), not the
Graph SDK, for cold start. Secret text is never logged.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import UTC, timedelta
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import quote

from shared.config.operator_file import EntraApplicationTarget
from shared.domain.errors import ConfigurationError, DownstreamError, VerificationFailed
from shared.domain.model import NewSecret, RetireResult, SecretVersion
from shared.rotators.base import Applied, RotationContext, RotatorDefaults

if TYPE_CHECKING:
    from azure.core.credentials_async import AsyncTokenCredential

    from shared.config.settings import Settings
    from shared.rotators.azure_http import AzureHttp

log = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain"
DISPLAY_PREFIX = "secret-rotation:"
HINT_LENGTH = 3
DEFAULT_LIFETIME = timedelta(days=180)


def _hint(value: str | None) -> str:
    return (value or "")[:HINT_LENGTH]


class EntraClientSecretRotator(RotatorDefaults):
    fences_writes = True  # addPassword and removePassword are each fenced
    record_tags: ClassVar[int] = 1  # rotator-key-id

    def __init__(self, credential: Callable[[], AsyncTokenCredential], settings: Settings) -> None:
        self._credential = credential
        self._settings = settings
        self._graph: AzureHttp | None = None
        self._login: AzureHttp | None = None

    # -------------------------------------------------------------- plumbing

    @staticmethod
    def _target(ctx: RotationContext) -> EntraApplicationTarget:
        if not isinstance(ctx.target, EntraApplicationTarget):
            raise ConfigurationError(
                f"secret {ctx.secret_name}: the entra-client-secret rotator needs an entra-application target"
            )
        return ctx.target

    def graph(self) -> AzureHttp:
        if self._graph is None:
            from shared.rotators.azure_http import AzureHttp

            s = self._settings
            self._graph = AzureHttp(s.graph_endpoint, credential=self._credential(),
                                    scope=f"{s.graph_endpoint}/.default", ca_bundle=s.azure_ca_bundle, retries=0)
        return self._graph

    def login(self) -> AzureHttp:
        if self._login is None:
            from shared.rotators.azure_http import AzureHttp

            self._login = AzureHttp(self._settings.login_endpoint, ca_bundle=self._settings.azure_ca_bundle,
                                    retries=1)
        return self._login

    @staticmethod
    def _app_path(target: EntraApplicationTarget) -> str:
        return f"/v1.0/applications/{quote(target.application_object_id, safe='')}"

    async def _passwords(self, target: EntraApplicationTarget) -> list[dict[str, Any]]:
        _, body = await self.graph().send("GET", f"{self._app_path(target)}?$select=passwordCredentials",
                                          what=f"read the passwords of application {target.client_id}")
        creds = body.get("passwordCredentials") if isinstance(body, dict) else None
        if not isinstance(creds, list):
            raise DownstreamError(f"application {target.client_id}: unexpected Graph answer")
        return [c for c in creds if isinstance(c, dict) and isinstance(c.get("keyId"), str)]

    async def _remove(self, ctx: RotationContext, target: EntraApplicationTarget, key_id: str) -> None:
        await ctx.fence()  # after the listing: a paused worker must not remove what is now in force
        await self.graph().send("POST", f"{self._app_path(target)}/removePassword", json={"keyId": key_id},
                                what=f"removePassword on application {target.client_id}", ok=(200, 204, 404))

    @staticmethod
    def _display_name(ctx: RotationContext) -> str:
        return f"{DISPLAY_PREFIX}{ctx.secret_name.lower()}"

    # ------------------------------------------------------------------ port

    async def create(self, ctx: RotationContext) -> NewSecret:
        self._target(ctx)
        return NewSecret(value="", content_type=CONTENT_TYPE, state={"generated": "by Entra"})

    async def apply(self, ctx: RotationContext, new: NewSecret) -> Applied:
        target = self._target(ctx)
        current_hint = _hint(ctx.current.value if ctx.current is not None else None)
        mine = self._display_name(ctx)
        for cred in await self._passwords(target):
            if cred.get("displayName") == mine and cred.get("hint") != current_hint:
                await self._remove(ctx, target, cred["keyId"])  # abandoned by an earlier, crashed attempt
                log.info("secret %s: removed an abandoned password of an earlier attempt", ctx.secret_name,
                         extra={"secret": ctx.secret_name, "key_id": cred["keyId"]})
        end = ctx.expires_on or (ctx.now + DEFAULT_LIFETIME)
        body = {"passwordCredential": {"displayName": mine,
                                       "endDateTime": end.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}}
        await ctx.fence()
        _, answer = await self.graph().send("POST", f"{self._app_path(target)}/addPassword", json=body,
                                            what=f"addPassword on application {target.client_id}")
        secret = answer.get("secretText") if isinstance(answer, dict) else None
        key_id = answer.get("keyId") if isinstance(answer, dict) else None
        if not isinstance(secret, str) or not secret or not isinstance(key_id, str):
            raise DownstreamError(f"addPassword on application {target.client_id}: no secret in the answer")
        return Applied(record={"key-id": key_id},
                       new=NewSecret(value=secret, content_type=CONTENT_TYPE, state={"key_id": key_id}))

    async def verify(self, ctx: RotationContext, new: NewSecret) -> None:
        target = self._target(ctx)
        form = {"grant_type": "client_credentials", "client_id": target.client_id,
                "client_secret": new.value, "scope": target.verify_scope}
        deadline = time.monotonic() + target.verify_timeout_seconds
        delay = 1.0
        while True:
            status, body = await self.login().send(
                "POST", f"/{quote(target.tenant_id, safe='')}/oauth2/v2.0/token", data=form,
                what=f"token request for application {target.client_id}", ok=(200, 400, 401))
            if status == 200 and isinstance(body, dict) and body.get("access_token"):
                return
            code = body.get("error") if isinstance(body, dict) else None
            code = code if isinstance(code, str) and code.isidentifier() else None
            if time.monotonic() + delay > deadline:
                raise VerificationFailed(
                    f"application {target.client_id}: the new client secret was refused ({code or status})")
            await asyncio.sleep(delay)  # a new password takes a while to reach every Entra node
            delay = min(delay * 2, 10.0)

    async def retire(self, ctx: RotationContext, previous: SecretVersion | None) -> RetireResult:
        target = self._target(ctx)
        current_hint = _hint(ctx.current.value if ctx.current is not None else None)
        previous_hint = _hint(previous.value if previous is not None else None)
        recorded = ctx.record.get("key-id")
        mine = self._display_name(ctx)
        removed = 0
        for cred in await self._passwords(target):
            hint = cred.get("hint")
            if cred["keyId"] == recorded or hint == current_hint:
                continue  # the credential in force: never removed
            if (previous_hint and hint == previous_hint) or cred.get("displayName") == mine:
                await self._remove(ctx, target, cred["keyId"])
                removed += 1
        if removed == 0:
            return RetireResult(done=True, detail="no previous password left to remove")
        return RetireResult(done=True, detail=f"removePassword: {removed} previous password(s) removed")

    async def aclose(self) -> None:
        for client in (self._graph, self._login):
            if client is not None:
                await client.close()
        self._graph = self._login = None

