"""Two-slot access keys regenerated at the provider: Azure OpenAI / AI Foundry, Azure Redis.

Azure gives these services two keys (Key1/Key2, Primary/Secondary) so that
one can be renewed while clients use the other. A rotation:

- ``apply`` lists the keys, finds the slot the vault's current value is in,
  and regenerates the *other* (idle) slot through ARM; the provider's new
  key is the new value, and the slot is recorded on the new version
  (``rotator-slot``);
- ``verify`` proves the new key with one real, cheap data-plane call (the
  Cognitive Services endpoint lists its models; Redis answers ``AUTH``);
- commit and notify as usual; ``retire`` does nothing: the previous slot
  stays valid until the *next* rotation regenerates it, after consumers moved
  (an emergency regenerates it at once).

A crash after ``apply`` and a redelivery regenerate the idle slot again: the
abandoned key dies, the vault's key is never touched, so the run converges
without lockout. If the vault's value is in neither slot (it was already
broken), the second slot is regenerated.

What is touched comes only from the operator file's target
(:class:`~shared.config.operator_file.CognitiveServicesTarget`,
:class:`~shared.config.operator_file.AzureRedisTarget`), through the app's
identity, which holds only the list/regenerate-keys actions on that one
resource (infra/modules/rotator-roles.bicep). Keys are never logged.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from shared.config.operator_file import AzureRedisTarget, CognitiveServicesTarget, Target
from shared.domain.errors import ConfigurationError, DownstreamError, VerificationFailed
from shared.domain.model import NewSecret, RetireResult, SecretVersion
from shared.rotators.base import Applied, RotationContext, RotatorDefaults

if TYPE_CHECKING:
    from azure.core.credentials_async import AsyncTokenCredential

    from shared.config.settings import Settings

log = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain"


class KeySlots(Protocol):
    """One provider's pair of keys."""

    slots: tuple[str, str]

    async def list_keys(self) -> dict[str, str]: ...

    async def regenerate(self, slot: str) -> str: ...

    async def verify(self, key: str) -> None: ...


def _arm_error(what: str, exc: Exception) -> DownstreamError:
    status = getattr(exc, "status_code", None)
    return DownstreamError(f"{what} failed ({type(exc).__name__}{f', HTTP {status}' if status else ''})")


def _arm_kwargs(settings: Settings) -> dict[str, Any]:
    return {"base_url": settings.arm_endpoint, "connection_verify": settings.azure_ca_bundle or True,
            "retry_total": 3, "retry_backoff_factor": 0.5}


class CognitiveServicesSlots:
    slots = ("Key1", "Key2")

    def __init__(self, target: CognitiveServicesTarget, credential: AsyncTokenCredential, settings: Settings) -> None:
        from azure.mgmt.cognitiveservices.aio import CognitiveServicesManagementClient

        from shared.rotators.azure_http import AzureHttp

        self.target = target
        self._client = CognitiveServicesManagementClient(credential, target.subscription_id, **_arm_kwargs(settings))
        self._data = AzureHttp(target.endpoint, ca_bundle=settings.azure_ca_bundle, retries=2)

    async def list_keys(self) -> dict[str, str]:
        t = self.target
        try:
            keys = await self._client.accounts.list_keys(t.resource_group, t.account)
        except Exception as exc:
            raise _arm_error(f"listKeys on account {t.account}", exc) from exc
        return {"Key1": keys.key1 or "", "Key2": keys.key2 or ""}

    async def regenerate(self, slot: str) -> str:
        t = self.target
        try:
            keys = await self._client.accounts.regenerate_key(t.resource_group, t.account, slot)
        except Exception as exc:
            raise _arm_error(f"regenerateKey {slot} on account {t.account}", exc) from exc
        return (keys.key1 if slot == "Key1" else keys.key2) or ""

    async def verify(self, key: str) -> None:
        status, _ = await self._data.send("GET", self.target.verify_path, headers={"api-key": key},
                                          what=f"data-plane check of account {self.target.account}",
                                          ok=(200, 401, 403))
        if status != 200:
            raise VerificationFailed(f"account {self.target.account} refused the new key (HTTP {status})")

    async def close(self) -> None:
        await self._client.close()
        await self._data.close()


class AzureRedisSlots:
    slots = ("Primary", "Secondary")

    def __init__(self, target: AzureRedisTarget, credential: AsyncTokenCredential, settings: Settings) -> None:
        self.target = target
        self._ca = settings.azure_ca_bundle
        self._client: Any
        if target.service == "azure-redis":
            from azure.mgmt.redis.aio import RedisManagementClient

            self._client = RedisManagementClient(credential, target.subscription_id, **_arm_kwargs(settings))
        else:
            from azure.mgmt.redisenterprise.aio import RedisEnterpriseManagementClient

            self._client = RedisEnterpriseManagementClient(credential, target.subscription_id,
                                                           **_arm_kwargs(settings))

    async def list_keys(self) -> dict[str, str]:
        t = self.target
        try:
            if t.service == "azure-redis":
                keys = await self._client.redis.list_keys(t.resource_group, t.cache)
            else:
                keys = await self._client.databases.list_keys(t.resource_group, t.cache, t.database)
        except Exception as exc:
            raise _arm_error(f"listKeys on {t.service} {t.cache}", exc) from exc
        return {"Primary": keys.primary_key or "", "Secondary": keys.secondary_key or ""}

    async def regenerate(self, slot: str) -> str:
        t = self.target
        try:
            if t.service == "azure-redis":
                from azure.mgmt.redis.models import RedisRegenerateKeyParameters

                keys = await self._client.redis.regenerate_key(
                    t.resource_group, t.cache, RedisRegenerateKeyParameters(key_type=slot))
            else:
                from azure.mgmt.redisenterprise.models import RegenerateKeyParameters

                poller = await self._client.databases.begin_regenerate_key(
                    t.resource_group, t.cache, t.database, RegenerateKeyParameters(key_type=slot))
                keys = await poller.result()
        except Exception as exc:
            raise _arm_error(f"regenerateKey {slot} on {t.service} {t.cache}", exc) from exc
        return (keys.primary_key if slot == "Primary" else keys.secondary_key) or ""

    async def verify(self, key: str) -> None:
        import redis.asyncio as aioredis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff
        from redis.exceptions import AuthenticationError, RedisError, ResponseError

        t = self.target
        extra: dict[str, Any] = {"ssl": True, "ssl_ca_certs": self._ca} if t.tls else {}
        client = aioredis.Redis(host=t.host, port=t.port, password=key, socket_timeout=5, socket_connect_timeout=5,
                                retry=Retry(NoBackoff(), 0), **extra)
        try:
            await client.ping()
        except (AuthenticationError, ResponseError) as exc:
            raise VerificationFailed(f"{t.service} {t.cache} refused the new key") from exc
        except RedisError as exc:
            what = f"{t.service} {t.cache} unreachable for the AUTH check ({type(exc).__name__})"
            raise DownstreamError(what) from exc
        finally:
            await client.aclose()

    async def close(self) -> None:
        await self._client.close()


def same(a: str, b: str) -> bool:
    return bool(a) and hmac.compare_digest(a.encode(), b.encode())


class KeySlotRotator(RotatorDefaults):
    fences_writes = True  # regenerateKey is fenced after listKeys
    record_tags: ClassVar[int] = 1  # rotator-slot

    def __init__(self, credential: Callable[[], AsyncTokenCredential], settings: Settings) -> None:
        self._credential = credential
        self._settings = settings
        self._providers: dict[str, Any] = {}

    def _provider(self, ctx: RotationContext) -> KeySlots:
        target: Target | None = ctx.target
        if not isinstance(target, CognitiveServicesTarget | AzureRedisTarget):
            raise ConfigurationError(f"secret {ctx.secret_name}: the key-slot rotator needs a cognitive-services, "
                                     "azure-redis or azure-managed-redis target in the operator file")
        provider = self._providers.get(target.name)
        if provider is None or provider.target != target:
            if isinstance(target, CognitiveServicesTarget):
                provider = CognitiveServicesSlots(target, self._credential(), self._settings)
            else:
                provider = AzureRedisSlots(target, self._credential(), self._settings)
            self._providers[target.name] = provider
        return provider

    async def create(self, ctx: RotationContext) -> NewSecret:
        self._provider(ctx)  # refuse a wrong target before anything happens
        return NewSecret(value="", content_type=CONTENT_TYPE, state={"generated": "at the provider"})

    async def apply(self, ctx: RotationContext, new: NewSecret) -> Applied:
        provider = self._provider(ctx)
        keys = await provider.list_keys()
        current = ctx.current.value if ctx.current is not None else ""
        in_use = next((slot for slot in provider.slots if same(keys.get(slot, ""), current)), None)
        if in_use is None:
            log.warning("secret %s: the vault's value is in neither key slot; regenerating %s",
                        ctx.secret_name, provider.slots[1], extra={"secret": ctx.secret_name})
            idle = provider.slots[1]
        else:
            idle = provider.slots[1] if in_use == provider.slots[0] else provider.slots[0]
        await ctx.fence()  # after listKeys: a worker paused there must not regenerate the slot now in force
        value = await provider.regenerate(idle)
        if not value or same(value, current):
            raise DownstreamError(f"regenerating {idle} returned no new key")
        return Applied(record={"slot": idle}, new=NewSecret(value=value, content_type=CONTENT_TYPE,
                                                            state={"slot": idle}))

    async def verify(self, ctx: RotationContext, new: NewSecret) -> None:
        await self._provider(ctx).verify(new.value)

    async def retire(self, ctx: RotationContext, previous: SecretVersion | None) -> RetireResult:
        slot = ctx.record.get("slot", "")
        provider = self._provider(ctx)
        if not ctx.emergency:
            return RetireResult(done=True, detail="previous key slot stays valid until the next rotation "
                                                  "regenerates it, after consumers moved")
        if slot not in provider.slots:
            return RetireResult(done=False, detail="the new version records no key slot; regenerate the other "
                                                   "slot by hand")
        keys = await provider.list_keys()
        current = ctx.current.value if ctx.current is not None else ""
        if not same(keys.get(slot, ""), current):
            return RetireResult(done=False, detail=f"the vault's value is no longer in {slot}; nothing regenerated")
        other = provider.slots[1] if slot == provider.slots[0] else provider.slots[0]
        await ctx.fence()
        await provider.regenerate(other)
        return RetireResult(done=True, detail=f"emergency: {other} regenerated, the previous key no longer works")

    async def aclose(self) -> None:
        providers, self._providers = list(self._providers.values()), {}
        for provider in providers:
            await provider.close()
