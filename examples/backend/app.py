"""The backend (FastAPI) wired to keyvault_rotation_kit: the code docs/consumers.md quotes.

Run it with ``create_app(CachedSecretClient.from_vault_url(...), ...)`` under
any ASGI server; tests/kits/test_examples.py runs it against the Key Vault
emulator, PostgreSQL and Redis and pings it with the rotation app's notifier.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any

from fastapi import FastAPI, Header, HTTPException
from keyvault_rotation_kit import (
    CachedSecretClient,
    JwtKeyRing,
    RedisFanout,
    RefreshEndpoint,
    SecretValue,
    SelfHealingRedis,
    TokenInvalid,
    connect_postgres,
    fastapi_router,
)

SECRETS_USED = ["jwt-signing-key", "database-connection-string", "redis-password", "session-encryption-key"]


def create_app(make_secrets: Callable[[], CachedSecretClient], *, redis_host: str, redis_port: int,
               redis_user: str | None = None, fanout_service: str | None = None) -> FastAPI:
    """The backend: ``GET /api/items`` (JWT, PostgreSQL, Redis) and the refresh endpoint.

    With ``fanout_service`` the refresh is fanned out to the other replicas
    over Redis pub/sub (the Redis URL is the Key Vault secret
    ``fanout-redis-url``) and acknowledged for the whole service.
    """
    state: dict[str, Any] = {}

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # --8<-- [start:wiring]
        secrets = make_secrets()  # e.g. CachedSecretClient.from_vault_url(VAULT_URL)
        ring = JwtKeyRing(secrets, "jwt-signing-key")
        redis = SelfHealingRedis(secrets, "redis-password", host=redis_host, port=redis_port, username=redis_user)
        # (a redis:// URL in the secret wins over host, port and username)

        async def on_refreshed(secret: SecretValue) -> None:  # after each re-read caused by a ping
            if secret.name == "jwt-signing-key":
                await ring.reload()
            elif secret.name == "redis-password":
                await redis.refresh()

        fanout = None
        if fanout_service:  # optional: acknowledge for every replica
            channel = SelfHealingRedis(secrets, "fanout-redis-url")
            fanout = RedisFanout(channel, secrets, service=fanout_service, on_refreshed=on_refreshed)
            await fanout.start()
        endpoint = RefreshEndpoint(
            secrets,
            allowed_secrets=SECRETS_USED,
            webhook_key_secret="backend-refresh-hmac-key",  # whsec_ key, read from Key Vault
            fanout=fanout,
            on_refreshed=on_refreshed,
        )
        await endpoint.warm()  # reads the ping key now, not when the first ping arrives
        app.include_router(fastapi_router(endpoint))  # POST /internal/secrets/refresh
        # --8<-- [end:wiring]
        state.update(secrets=secrets, ring=ring, redis=redis)
        try:
            yield
        finally:
            if fanout is not None:
                await fanout.stop()
                await channel.aclose()
            await redis.aclose()
            await secrets.close()

    app = FastAPI(lifespan=lifespan)

    # --8<-- [start:request]
    @app.get("/api/items")
    async def items(authorization: Annotated[str, Header()] = "") -> dict[str, Any]:
        try:  # current key, or any still-enabled previous one: tokens survive a rotation
            claims = await state["ring"].verify(authorization.removeprefix("Bearer ").strip())
        except TokenInvalid:
            raise HTTPException(status_code=401) from None
        conn = await connect_postgres(state["secrets"], "database-connection-string")  # heals once on auth failure
        async with conn:
            await conn.execute("SELECT 1")
        hits = await state["redis"].run(lambda r: r.incr("backend:hits"))  # heals once on auth failure
        await state["secrets"].get_secret("session-encryption-key")  # cached; re-read on a ping
        return {"user": claims["sub"], "hits": hits}
    # --8<-- [end:request]

    @app.get("/internal/secrets/version")
    async def version(name: str) -> dict[str, str | None]:
        """What this replica uses now and when it read it (the e2e run measures convergence with it)."""
        held = state["secrets"].cached(name)
        read_at = held.read_at.isoformat() if held is not None and held.read_at is not None else None
        return {"version": held.version if held is not None else None, "readAt": read_at}

    return app
