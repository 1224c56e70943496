"""The e2e run's steady load, in a process of its own: ``python -m tests.e2e.load '<json config>'``.

Users of the services are not in the rotation app's process, nor in Key
Vault's: run in the test process, the load generator would share one
interpreter lock with the engine and the Key Vault emulator, and every vault
read and ping would wait for it. The process prints ``ready`` once the load
runs, and when its stdin closes it stops and prints ``{"total": N,
"failures": [...]}``.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

import aiohttp
from keyvault_rotation_kit import CachedSecretClient, JwtKeyRing

from kvemulator.credentials import AsyncStaticTokenCredential


class Load:
    """Steady load on both services through nginx: ``rate`` requests per second to each, every one with a JWT,
    touching PostgreSQL and Redis."""

    def __init__(self, http: aiohttp.ClientSession, targets: dict[str, str], signer: JwtKeyRing,
                 signer_client: CachedSecretClient, *, rate: float, token_lifetime: int) -> None:
        self._http, self._targets, self._signer, self._client = http, targets, signer, signer_client
        self._rate, self._lifetime = rate, token_lifetime
        self.total = 0
        self.failures: list[str] = []
        self._token = ""
        self._stop = asyncio.Event()

    async def issue(self) -> None:
        """The issuer: a fresh token every second, signed with the key the vault serves then."""
        while not self._stop.is_set():
            self._client.invalidate("jwt-signing-key")  # the issuer reads the key the vault serves now
            await self._signer.reload()
            self._token = await self._signer.sign({"sub": "load", "exp": int(time.time()) + self._lifetime})
            await asyncio.sleep(1.0)

    async def request(self, url: str) -> None:
        token = self._token  # may have been issued up to a second before a rotation
        try:
            async with self._http.get(url, headers={"Authorization": f"Bearer {token}"}) as response:
                await response.read()
                ok = response.status == 200
                status: int | str = response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            ok, status = False, type(exc).__name__
        self.total += 1
        if not ok:
            self.failures.append(f"{url} -> {status}")

    async def arrivals(self, url: str) -> None:
        """Requests at a steady rate, each on its own (open loop): a slow answer does not slow the users."""
        loop = asyncio.get_running_loop()
        interval = 1.0 / self._rate
        due = loop.time()
        in_flight: set[asyncio.Task[None]] = set()
        while not self._stop.is_set():
            task = asyncio.create_task(self.request(url))
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)
            due += interval
            await asyncio.sleep(max(0.0, due - loop.time()))
        await asyncio.gather(*in_flight, return_exceptions=True)

    async def run(self) -> list[asyncio.Task[None]]:
        await self._signer.reload()
        self._token = await self._signer.sign({"sub": "load", "exp": int(time.time()) + self._lifetime})
        tasks = [asyncio.create_task(self.issue())]
        for path in (self._targets["backend"] + "/api/items", self._targets["bridge"] + "/api/session"):
            tasks.append(asyncio.create_task(self.arrivals(path)))
        return tasks

    def stop(self) -> None:
        self._stop.set()


async def _main(config: dict[str, Any]) -> None:
    async with CachedSecretClient.from_vault_url(config["kv_url"], credential=AsyncStaticTokenCredential(),
                                                 verify_challenge_resource=False,
                                                 connection_verify=config["ca_path"]) as client, \
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        load = Load(http, config["targets"], JwtKeyRing(client, "jwt-signing-key"), client,
                    rate=config["rate"], token_lifetime=config["token_lifetime"])
        tasks = await load.run()
        print("ready", flush=True)
        await asyncio.to_thread(sys.stdin.read)  # until the test closes our stdin
        load.stop()
        await asyncio.gather(*tasks, return_exceptions=True)
        print(json.dumps({"total": load.total, "failures": load.failures}), flush=True)


if __name__ == "__main__":
    asyncio.run(_main(json.loads(sys.argv[1])))
