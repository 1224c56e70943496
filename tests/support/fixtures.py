"""pytest plugin: real PostgreSQL, Redis and Azurite servers as fixtures.

Loaded by ``tests/conftest.py`` via ``pytest_plugins``. The servers come from
:mod:`tests.support.services`; this module only decides their lifetime.

Why the scopes are what they are: the shared servers are session-scoped
because each test then pays nothing for them, which keeps the suite fast on a
2-core machine. Tests must therefore leave them as they found them; a test
that stops a server, changes the admin password or otherwise damages it
should take a ``*_fresh`` fixture instead, which gives it a private server
that is thrown away afterwards (Redis starts in ~0.1 s, PostgreSQL in ~1 s).
The Azure doubles (ARM, Graph, the token endpoint) are per test: their
resources are the test's own.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import trustme

from azuredoubles import AzureDoubles
from azuredoubles.doubles import GENERATED
from tests.support import leakscan
from tests.support.services import Azurite, PostgresServer, RedisServer

__all__ = [
    "azurite",
    "doubles",
    "postgres_server",
    "postgres_server_fresh",
    "redis_server",
    "redis_server_fresh",
]


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """Shared SCRAM-only PostgreSQL, logging every statement (``log_path``)."""
    with PostgresServer(log_statement="all") as server:
        yield server


@pytest.fixture
def postgres_server_fresh() -> Iterator[PostgresServer]:
    """Private PostgreSQL for one test, free to stop, kill or break."""
    with PostgresServer(log_statement="all") as server:
        yield server


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """Shared password-protected Redis with an ACL file, no replicas."""
    with RedisServer() as server:
        yield server


@pytest.fixture
def redis_server_fresh() -> Iterator[RedisServer]:
    """Private Redis (ACL file, no replicas) for one test, free to break."""
    with RedisServer() as server:
        yield server


@pytest.fixture(scope="session")
def azurite() -> Iterator[Azurite]:
    """Shared Azurite blob service; use unique container names per test."""
    with Azurite() as server:
        yield server


@pytest.fixture
def doubles(kv_ca: trustme.CA) -> Iterator[AzureDoubles]:
    """The Azure doubles over HTTPS, with a certificate from the Key Vault emulator's CA."""
    with AzureDoubles(ca=kv_ca) as d:
        try:
            yield d
        finally:
            leakscan.register(GENERATED)  # keys and passwords of abandoned attempts never reach a vault
