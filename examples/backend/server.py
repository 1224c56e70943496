"""One backend replica as a process (used by ``make e2e-consumers``), like examples/bridge/server.ts.

``python -m examples.backend.server``. Configuration from the environment:
KV_URL, KV_EMULATOR=1 (a static token for the local emulator, whose CA is
KV_CA_PATH; otherwise DefaultAzureCredential), REDIS_HOST/REDIS_PORT/REDIS_USER,
CACHE_TTL_SECONDS, FANOUT_SERVICE to enable the replica fan-out (over the Redis
URL in the Key Vault secret ``fanout-redis-url``) and PORT (0: any free port).
Prints ``listening <port>`` once it accepts requests.
"""

from __future__ import annotations

import os
import socket
import time
from typing import Any

import uvicorn
from azure.core.credentials import AccessToken
from keyvault_rotation_kit import CachedSecretClient

from examples.backend.app import create_app


class _EmulatorToken:
    """The local emulator accepts any bearer token; never used against a real vault."""

    async def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return AccessToken("local-emulator-token", int(time.time()) + 3600)

    async def close(self) -> None:
        return None


def main() -> None:
    env = os.environ
    emulator = env.get("KV_EMULATOR") == "1"
    ttl = float(env.get("CACHE_TTL_SECONDS", "3600"))

    def make_secrets() -> CachedSecretClient:
        if not emulator:
            return CachedSecretClient.from_vault_url(env["KV_URL"], ttl_seconds=ttl)
        return CachedSecretClient.from_vault_url(env["KV_URL"], credential=_EmulatorToken(), ttl_seconds=ttl,
                                                 verify_challenge_resource=False,
                                                 connection_verify=env["KV_CA_PATH"])

    app = create_app(make_secrets, redis_host=env.get("REDIS_HOST", "127.0.0.1"),
                     redis_port=int(env.get("REDIS_PORT", "6379")), redis_user=env.get("REDIS_USER"),
                     fanout_service=env.get("FANOUT_SERVICE") or None)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", int(env.get("PORT", "0"))))
    server = _Server(uvicorn.Config(app, lifespan="on", log_level="warning", access_log=False,
                                    timeout_graceful_shutdown=1, backlog=512))
    server.run(sockets=[sock])


class _Server(uvicorn.Server):
    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started and sockets:
            print(f"listening {sockets[0].getsockname()[1]}", flush=True)


if __name__ == "__main__":
    main()
