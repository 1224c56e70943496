"""Composition root: the one place that builds clients, lazily, and reuses them.

Azure Functions keeps a worker process alive across invocations, so clients
(Key Vault, blob storage, HTTP sessions) are built on first use and reused;
nothing is built or read from the environment at import time, which keeps
cold start cheap and lets tests build a container from explicit settings.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from shared.config.settings import Settings

if TYPE_CHECKING:
    from azure.core.credentials_async import AsyncTokenCredential

    from shared.adapters.keyvault import KeyVaultStore
    from shared.adapters.lease import BlobLocker
    from shared.adapters.notifiers.composite import ConsumerNotifier
    from shared.adapters.telemetry import Telemetry
    from shared.config.consumers import ConsumerCatalog
    from shared.config.operator_file import OperatorConfig
    from shared.domain.ports import Consumer, Notifier, SecretReader
    from shared.rotators.base import Rotator
    from shared.service.engine import RotationEngine, StepHook


class Container:
    def __init__(
        self,
        settings: Settings | None = None,
        *,
        operator: OperatorConfig | None = None,
        after_step: StepHook | None = None,
        telemetry: Telemetry | None = None,
    ) -> None:
        self._settings = settings
        self._operator = operator
        self._after_step = after_step
        self._telemetry = telemetry
        self._credential: AsyncTokenCredential | None = None
        self._stores: dict[str, KeyVaultStore] = {}
        self._locker: BlobLocker | None = None
        self._blob_service: Any = None
        self._rotators: dict[str, Rotator] | None = None
        self._notifier: Notifier | None = None
        self._notifier_built = False
        self._engine: RotationEngine | None = None
        self._catalog: ConsumerCatalog | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = Settings.from_env(os.environ)
        return self._settings

    @property
    def operator(self) -> OperatorConfig:
        """The operator file (``rotation.json``), checked as a whole on first use.

        ``${SETTING}`` placeholders in it are filled from the app settings."""
        if self._operator is None:
            from shared.config.operator_file import OperatorConfig

            self._operator = OperatorConfig.load(self.settings.config_file, os.environ)
        return self._operator

    @property
    def telemetry(self) -> Telemetry:
        """The process-wide telemetry (shared/adapters/telemetry.py); off unless configured."""
        if self._telemetry is None:
            from shared.adapters.telemetry import configure

            self._telemetry = configure(self.settings)
        return self._telemetry

    async def flush_telemetry(self) -> None:
        """Export an invocation's spans and metrics before it ends: an idle instance may be frozen."""
        if self.telemetry.enabled:
            import asyncio

            await asyncio.to_thread(self.telemetry.flush)

    def credential(self) -> AsyncTokenCredential:
        if self._credential is None:
            if self.settings.vault_credential == "emulator":
                from shared.adapters.credentials import EmulatorCredential

                self._credential = EmulatorCredential()
            else:
                from azure.identity.aio import DefaultAzureCredential

                self._credential = DefaultAzureCredential()
        return self._credential

    def store(self, vault: str) -> KeyVaultStore:
        name = vault.strip().lower()
        store = self._stores.get(name)
        if store is None:
            from azure.keyvault.secrets.aio import SecretClient

            from shared.adapters.keyvault import KeyVaultStore

            s = self.settings
            tls: dict[str, Any] = {"transport": ca_bundle_transport(s.vault_ca_bundle)} if s.vault_ca_bundle else {}
            client = SecretClient(
                s.vault_url(name),  # raises VaultNotAllowed for anything off the list
                self.credential(),
                verify_challenge_resource=s.vault_verify_challenge_resource,
                retry_total=s.vault_max_retries,
                retry_backoff_factor=s.vault_retry_backoff_seconds,
                retry_backoff_max=s.vault_retry_max_wait_seconds,
                **tls,
            )
            store = KeyVaultStore(name, client)
            self._stores[name] = store
        return store

    @property
    def locker(self) -> BlobLocker:
        if self._locker is None:
            from azure.storage.blob.aio import BlobServiceClient

            from shared.adapters.lease import BlobLocker
            from shared.domain.errors import ConfigurationError

            s = self.settings
            if s.storage_connection_string:
                service = BlobServiceClient.from_connection_string(s.storage_connection_string)
            elif s.storage_blob_service_uri:
                service = BlobServiceClient(s.storage_blob_service_uri, credential=self.credential())
            else:
                raise ConfigurationError("AzureWebJobsStorage is not configured; the rotation lease needs it")
            self._blob_service = service
            self._locker = BlobLocker(service, s.lease_container, s.lease_wait_seconds)
        return self._locker

    @property
    def rotators(self) -> dict[str, Rotator]:
        if self._rotators is None:
            from shared.rotators.registry import Deps, build_rotators

            self._rotators = build_rotators(Deps(settings=self.settings, credential=self.credential))
        return self._rotators

    @property
    def notifier(self) -> Notifier | None:
        if not self._notifier_built:
            self._notifier_built = True
            s = self.settings
            if s.consumers or s.eventgrid_topic_endpoint:
                # HMAC keys are read from the vault each consumer names (``hmacVault``, resolved at
                # start-up to the default vault when omitted); the default-vault reader only serves
                # consumers built without the catalog (tests, embedders).
                self._notifier = build_notifier(
                    s, self.credential(), self._secret_reader_for_default_vault(), hmac_vaults=self.store
                )
        return self._notifier

    def _secret_reader_for_default_vault(self) -> KeyVaultStore | None:
        vault = self.settings.default_vault
        return self.store(vault) if vault else None

    def consumers_for(self, secret_name: str, tag_value: str | None) -> Sequence[Consumer]:
        s = self.settings
        if not s.consumers and not tag_value:
            return ()
        if self._catalog is None:  # settings are frozen: parsed once, not on every rotation's pings
            from shared.config.consumers import parse_consumers

            self._catalog = parse_consumers(s.consumers, allowed_vaults=s.allowed_vaults,
                                            default_vault=s.default_vault)
        return self._catalog.resolve(secret_name, tag_value)

    @property
    def engine(self) -> RotationEngine:
        if self._engine is None:
            from shared.service.engine import RotationEngine

            self._engine = RotationEngine(
                settings=self.settings,
                operator=self.operator,
                stores=self.store,
                locker=self.locker,
                rotators=self.rotators,
                notifier=self.notifier,
                consumers_for=self.consumers_for,
                after_step=self._after_step,
                telemetry=self.telemetry,
            )
        return self._engine

    async def aclose(self) -> None:
        for store in self._stores.values():
            await store.close()
        self._stores.clear()
        if self._blob_service is not None:
            await self._blob_service.close()
        closer = getattr(self._notifier, "close", None)
        if closer is not None:
            await closer()
        for rotator in (self._rotators or {}).values():
            rotator_closer = getattr(rotator, "aclose", None)  # rotators holding ARM/Graph clients
            if rotator_closer is not None:
                await rotator_closer()
        if self._credential is not None:
            await self._credential.close()


def build_notifier(
    settings: Settings,
    credential: AsyncTokenCredential | None,
    hmac_keys: SecretReader | None,
    hmac_vaults: Callable[[str], SecretReader] | None = None,
) -> ConsumerNotifier:
    """The production notifier for these settings: consumer pings plus, when a topic is set, the event.

    ``credential`` (owned and closed by the caller) issues Entra tokens for
    consumers and, without a topic key, for Event Grid; ``hmac_keys`` reads
    the HMAC key secrets named by ``hmacSecret`` when the consumer names no
    vault, ``hmac_vaults`` gives the reader of the vault a consumer names
    (``hmacVault``).
    """
    from shared.adapters.notifiers.composite import ConsumerNotifier
    from shared.adapters.notifiers.eventgrid import EventGridPublisher
    from shared.adapters.notifiers.http_ping import HttpPingNotifier

    pinger = HttpPingNotifier(
        credential=credential,
        hmac_keys=hmac_keys,
        timeout_seconds=settings.ping_timeout_seconds or 5.0,
        attempts=settings.ping_attempts,
        hmac_vaults=hmac_vaults,
    )
    publisher = None
    if settings.eventgrid_topic_endpoint:
        publisher = EventGridPublisher(
            settings.eventgrid_topic_endpoint,
            key=settings.eventgrid_topic_key,
            credential=credential,
            schema=settings.eventgrid_schema,
            **({"connection_verify": settings.eventgrid_ca_bundle} if settings.eventgrid_ca_bundle else {}),
        )
    return ConsumerNotifier(pinger, publisher)


_container: Container | None = None


def get_container() -> Container:
    """The process-wide container, built on first use."""
    global _container  # noqa: PLW0603 - the one process-wide composition root
    if _container is None:
        _container = Container()
    return _container


def set_container(container: Container | None) -> None:
    """Install a container built from explicit settings (tests, the demo)."""
    global _container  # noqa: PLW0603
    _container = container


def ca_bundle_transport(cafile: str) -> Any:
    """azure-core's aiohttp transport trusting ``cafile`` through one SSL context shared by its connections.

    Given ``connection_verify=<CA bundle>``, azure-core builds a new SSL context for every request and
    aiohttp keeps connections per context, so every vault call would open a new TLS connection (the
    handshake and the CA file load cost milliseconds of CPU per call, on the rotation's path to its pings).
    With the context on the connector, requests use it through ``ssl=True`` and share one pool. Proxy
    settings from the environment are honoured when one is set; otherwise the session does not look them
    (and ~/.netrc) up in worker threads on every call.
    """
    import ssl

    import aiohttp
    from azure.core.pipeline.transport import AioHttpTransport

    class CaBundleTransport(AioHttpTransport):  # type: ignore[misc]
        built = False

        async def open(self) -> None:
            if not self.built:
                self.built = True  # once: after close() the base class refuses to reopen, as it should
                connector = aiohttp.TCPConnector(ssl=ssl.create_default_context(cafile=cafile))
                proxy = any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy",
                                                        "ALL_PROXY", "all_proxy"))
                self.session = aiohttp.ClientSession(connector=connector, trust_env=proxy,
                                                     cookie_jar=aiohttp.DummyCookieJar(), auto_decompress=False)
            await super().open()

    return CaBundleTransport()
