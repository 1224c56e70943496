"""azure-core's aiohttp transport, trusting a private CA file with one SSL context shared by its connections.

Given ``connection_verify=<CA file>``, azure-core builds a new SSL context for
every request, and aiohttp keeps its connections per context: every Key Vault
read would open a new TLS connection (a handshake, milliseconds of CPU on both
ends, on the path from a rotation to the replicas using the new version). With
the context on the connector instead, requests use it through ``ssl=True`` and
share one pool of kept-alive connections. Proxy settings from the environment
are honoured as azure-core does when one is set; otherwise the session does not
look them (and ~/.netrc) up in worker threads on every request.
"""

from __future__ import annotations

import os
import ssl

import aiohttp
from azure.core.pipeline.transport import AioHttpTransport


class CaFileTransport(AioHttpTransport):  # type: ignore[misc]
    def __init__(self, cafile: str) -> None:
        super().__init__()
        self._cafile = cafile
        self._built = False

    async def open(self) -> None:
        if not self._built:
            self._built = True  # once: after close() the base class refuses to reopen, as it should
            connector = aiohttp.TCPConnector(ssl=ssl.create_default_context(cafile=self._cafile))
            # What the base class would build, plus the connector.
            self.session = aiohttp.ClientSession(connector=connector, trust_env=proxy_configured(),
                                                 cookie_jar=aiohttp.DummyCookieJar(), auto_decompress=False)
        await super().open()


def proxy_configured() -> bool:
    """Whether the environment names an HTTP(S) proxy (what ``trust_env`` would make aiohttp use)."""
    return any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy",
                                            "ALL_PROXY", "all_proxy"))
