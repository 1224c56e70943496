"""Self-healing connections: on an authentication failure, re-read the secret and retry once.

A service that missed a refresh ping (it was restarting, the ping was lost)
still holds the old credential in its cache. Once the rotation app retires
that credential, every new connection fails authentication. These helpers
turn that outage into one failed attempt: the failure is recognised as an
*authentication* failure (never a timeout or a query error), the secret is
re-read bypassing the cache (one read per burst, see
:meth:`CachedSecretClient.reread_after_failure`) and the connection is tried
once more with the new value. Any other error, or a second authentication
failure, propagates unchanged.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from keyvault_rotation_kit.secrets import CachedSecretClient, SecretValue

T = TypeVar("T")

# PostgreSQL: invalid_password, invalid_authorization_specification.
PG_AUTH_SQLSTATES = frozenset({"28P01", "28000"})


def is_postgres_auth_failure(exc: BaseException) -> bool:
    """True for a psycopg error that says the credentials were refused."""
    import psycopg

    if not isinstance(exc, psycopg.OperationalError):
        return False
    if getattr(exc, "sqlstate", None) in PG_AUTH_SQLSTATES:
        return True
    # psycopg reports a failed connection attempt without a sqlstate; libpq's
    # message is stable for these two cases.
    text = str(exc)
    return "password authentication failed" in text or ("role" in text and "is not permitted to log in" in text)


async def connect_postgres(secrets: CachedSecretClient, secret_name: str, **kwargs: Any) -> Any:
    """A ``psycopg.AsyncConnection`` from the conninfo in ``secret_name``, healing once on auth failure.

    ``kwargs`` go to ``psycopg.AsyncConnection.connect`` (e.g.
    ``autocommit=True``, ``connect_timeout``).
    """
    import psycopg

    async def connect(secret: SecretValue) -> psycopg.AsyncConnection[Any]:
        return await psycopg.AsyncConnection.connect(secret.value, **kwargs)

    return await with_fresh_secret(secrets, secret_name, connect, is_postgres_auth_failure)


def is_redis_auth_failure(exc: BaseException) -> bool:
    """True for a redis-py error that says the credentials were refused (WRONGPASS, NOAUTH, ...)."""
    from redis import exceptions

    if isinstance(exc, exceptions.AuthenticationError | exceptions.AuthenticationWrongNumberOfArgsError):
        return True
    if isinstance(exc, exceptions.NoPermissionError):
        return False  # authenticated, but the ACL forbids the command: a re-read will not help
    return isinstance(exc, exceptions.ResponseError) and str(exc).startswith(("WRONGPASS", "NOAUTH"))


class SelfHealingRedis:
    """A ``redis.asyncio.Redis`` built from a secret, rebuilt once when authentication fails.

    ``factory(secret_value)`` builds the client; by default the value is a
    ``redis://``/``rediss://`` URL, or a bare password used with
    ``redis_kwargs`` (``host``, ``port``, ``username``, ...). Use
    :meth:`run` for each unit of work: ``await redis.run(lambda r: r.get(k))``.
    """

    def __init__(
        self,
        secrets: CachedSecretClient,
        secret_name: str,
        *,
        factory: Callable[[str], Any] | None = None,
        **redis_kwargs: Any,
    ) -> None:
        self._secrets = secrets
        self._name = secret_name
        self._factory = factory or (lambda value: _default_redis(value, redis_kwargs))
        self._client: Any = None
        self._version: str | None = None
        self._retiring: set[asyncio.Task[None]] = set()
        self._revalidating: asyncio.Future[SecretValue] | None = None
        self.retire_after_seconds = 30.0  # how long a replaced client may finish its in-flight commands
        self.heals = 0

    async def client(self) -> Any:
        """The client for the version the cache holds: built on first use, rebuilt when the cache moves on.

        An instance that missed a ping thus uses the new value within its cache age, not only once its
        connections break. Past the TTL the secret is re-read in the background while this call keeps the
        client it has: a command never waits for Key Vault (nor fails when it cannot be read)."""
        if self._client is None:
            await self._swap(await self._secrets.get(self._name))
            return self._client
        held = self._secrets.cached(self._name)
        if held is not None and held.version != self._version:
            await self._swap(held)  # checked and swapped without a suspension in between: one rebuild
        elif not self._secrets.fresh(self._name):
            self._revalidate()
        return self._client

    def _revalidate(self) -> None:
        if self._revalidating is not None and not self._revalidating.done():
            return
        task = asyncio.ensure_future(self._secrets.get(self._name))
        # A failed re-read only means the client stays as it is; the next command after the TTL tries again.
        task.add_done_callback(lambda t: t.cancelled() or t.exception())
        self._revalidating = task

    async def run(self, work: Callable[[Any], Awaitable[T]]) -> T:
        client = await self.client()
        used = self._version
        try:
            return await work(client)
        except Exception as exc:
            if not is_redis_auth_failure(exc) or used is None:
                raise
        fresh = await self._secrets.reread_after_failure(self._name, used)
        if fresh.version != self._version:
            await self._swap(fresh)
        self.heals += 1
        return await work(self._client)

    async def refresh(self) -> None:
        """Rebuild from the secret now (call from the refresh endpoint's ``on_refreshed``)."""
        await self._swap(await self._secrets.get(self._name))

    async def _swap(self, secret: SecretValue) -> None:
        old, self._client, self._version = self._client, self._factory(secret.value), secret.version
        if old is not None:
            # Commands already running on the old client must finish: close it later, not now.
            task = asyncio.create_task(self._close_later(old))
            self._retiring.add(task)
            task.add_done_callback(self._retiring.discard)

    async def _close_later(self, client: Any) -> None:
        try:
            await asyncio.sleep(self.retire_after_seconds)
        finally:
            await client.aclose()

    async def aclose(self) -> None:
        if self._revalidating is not None:
            self._revalidating.cancel()
        for task in list(self._retiring):
            task.cancel()  # closes its client now
        if self._retiring:
            await asyncio.gather(*self._retiring, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()
            self._client = None


def _default_redis(value: str, kwargs: dict[str, Any]) -> Any:
    import redis.asyncio as redis

    if value.startswith(("redis://", "rediss://", "unix://")):
        return redis.Redis.from_url(value, **kwargs)
    return redis.Redis(password=value, **kwargs)


async def with_fresh_secret(
    secrets: CachedSecretClient,
    secret_name: str,
    attempt: Callable[[SecretValue], Awaitable[T]],
    is_auth_failure: Callable[[BaseException], bool],
) -> T:
    """Run ``attempt`` with the cached secret; on an auth failure, once more with a re-read one.

    The generic form of the helpers above, for any client library.
    """
    secret = await secrets.get(secret_name)
    try:
        return await attempt(secret)
    except Exception as exc:
        if not is_auth_failure(exc):
            raise
    fresh = await secrets.reread_after_failure(secret_name, secret.version)
    return await attempt(fresh)
