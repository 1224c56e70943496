"""Suite-wide fixtures and the secret-leak scan.

Real services come from tests.support.fixtures (PostgreSQL, Redis, Azurite);
the Key Vault is the project's emulator over HTTPS, driven by the real SDK.
Every log record of the session is kept and, at the end, searched for every
secret value the suite produced (tests.support.leakscan). Every container of
the suite reports through the OpenTelemetry SDK with in-memory exporters
(tests.support.telemetry), so every exported span, log record and metric data
point is in that scan too.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import trustme

from kvemulator import KeyVaultEmulator
from shared.bootstrap import Container, set_container
from shared.config.settings import Settings
from tests.support import leakscan, operator_files
from tests.support import telemetry as telemetry_capture

pytest_plugins = ["tests.support.fixtures"]

VAULT = "kv-test"
_recorder: leakscan.FileRecorder | None = None


def pytest_configure(config: pytest.Config) -> None:
    global _recorder
    _recorder = leakscan.FileRecorder()
    leakscan.install(_recorder)
    _instrument_outputs()
    root = logging.getLogger()
    root.addHandler(_recorder)
    _install_telemetry()
    root.setLevel(logging.DEBUG)
    for name in ("azure", "azure.core", "azure.identity", "azure.keyvault", "azure.storage", "aiohttp",
                 "psycopg", "redis", "urllib3", "shared", "functions", "kvemulator", "uvicorn"):
        logging.getLogger(name).setLevel(logging.DEBUG)


def _instrument_outputs() -> None:
    """Every project error message and every HTTP response body goes into the leak scan too."""
    import azure.functions as func

    from shared.domain.errors import RotationError

    original_error_init = RotationError.__init__

    def error_init(self: RotationError, message: str) -> None:
        leakscan.record("exception", f"{type(self).__name__}: {message}")
        original_error_init(self, message)

    RotationError.__init__ = error_init  # type: ignore[method-assign]
    original_response_init = func.HttpResponse.__init__

    def response_init(self: func.HttpResponse, body: Any = None, **kwargs: Any) -> None:
        if body is not None:
            leakscan.record("http-response", body if isinstance(body, str | bytes) else repr(body))
        original_response_init(self, body, **kwargs)

    func.HttpResponse.__init__ = response_init  # type: ignore[method-assign]


def _install_telemetry() -> None:
    from opentelemetry import trace

    from shared.adapters import telemetry

    capture = telemetry_capture.Capture()
    capture.install_log_handler()
    # The Azure SDK's spans (azure-core-tracing-opentelemetry) go to the global provider: the same one.
    trace.set_tracer_provider(capture.tracer_provider)
    telemetry_capture.set_capture(capture)
    telemetry.install(capture.telemetry)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _recorder is None:
        return
    capture = telemetry_capture.capture()
    capture.metrics()  # the last data points go through the leak scan too
    capture.remove_log_handler()
    logging.getLogger().removeHandler(_recorder)
    _recorder.close()
    values = leakscan.registered()
    leaks = leakscan.find_leaks(_recorder.path, values)
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    line = (f"secret-leak scan: {len(values)} secret values checked against {_recorder.records} log records: "
            f"{'NO LEAK' if not leaks else f'{len(leaks)} LEAKED'}")
    if reporter is not None:
        reporter.write_line(line)
    if leaks:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    else:
        _recorder.path.unlink(missing_ok=True)


@pytest.fixture(scope="session")
def kv_ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def emulator(kv_ca: trustme.CA) -> Iterator[KeyVaultEmulator]:
    """A fresh vault per test, served over HTTPS to the real SDK."""
    with KeyVaultEmulator(ca=kv_ca, vault_name=VAULT) as emu:
        try:
            yield emu
        finally:
            versions = [v for name in emu.secret_names() for v in emu.versions(name)]
            leakscan.register(str(v["value"]) for v in versions)
            leakscan.record("tags", repr([v.get("tags") for v in versions]))


def make_settings(emu: KeyVaultEmulator, azurite: Any, **overrides: Any) -> Settings:
    base: dict[str, Any] = {
        "allowed_vaults": (VAULT,),
        "default_vault": VAULT,
        "vault_url_overrides": {VAULT: emu.url},
        "vault_ca_bundle": emu.ca_path,
        "vault_verify_challenge_resource": False,
        "vault_credential": "emulator",
        "vault_retry_backoff_seconds": 0.05,
        "vault_retry_max_wait_seconds": 2.0,
        "storage_connection_string": azurite.connection_string,
        "lease_container": f"locks-{uuid.uuid4().hex[:12]}",
        "lease_wait_seconds": 20.0,
        "config_file": operator_files.operator_file(emu),
    }
    base.update(overrides)
    return Settings(**base)


@pytest.fixture
def settings(emulator: KeyVaultEmulator, azurite: Any) -> Settings:
    return make_settings(emulator, azurite)


@pytest.fixture
async def container(settings: Settings) -> AsyncIterator[Container]:
    """The app's composition root wired to the emulator and Azurite, installed as the process container."""
    c = Container(settings)
    set_container(c)
    try:
        yield c
    finally:
        set_container(None)
        await c.aclose()
