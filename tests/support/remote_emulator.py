"""The Key Vault emulator in a process of its own, for runs that measure latency (``make e2e-consumers``).

In the test process the emulator's threads share one interpreter lock with
the rotation engine and the test's own tasks, so a vault request can wait for
whatever the engine computes (a convoy no Key Vault has). Here it is served
from a child process (``multiprocessing`` manager); the test seeds and reads
it through the same small surface the in-process emulator offers.
"""

from __future__ import annotations

import multiprocessing
from multiprocessing.managers import BaseManager
from typing import Any

from kvemulator import KeyVaultEmulator


class _Served(KeyVaultEmulator):
    """What the child serves: the emulator plus answers that would be properties or large lists here."""

    def serve(self) -> None:
        self.start()  # (start returns the emulator, which cannot cross the process boundary)

    def where(self) -> tuple[str, str]:
        return self.url, self.ca_path

    def latest_versions(self, names: list[str]) -> dict[str, str | None]:
        return {name: (latest or {}).get("version") for name in names for latest in [self.latest(name)]}

    def last_put_started(self, name: str) -> float:
        record = self.last_request("PUT", f"/secrets/{name}", status=200)
        assert record is not None, f"no PUT of {name}"
        return record.started


class _Manager(BaseManager):
    pass


_Manager.register("Emulator", _Served, exposed=(
    "serve", "stop", "put", "latest", "latest_versions", "versions", "secret_names", "where", "last_put_started"))


class RemoteEmulator:
    """A :class:`KeyVaultEmulator` running in a child process; the methods the e2e run uses."""

    def __init__(self, *, vault_name: str) -> None:
        self._manager = _Manager(ctx=multiprocessing.get_context("spawn"))
        self._manager.start()
        self._emu: Any = self._manager.Emulator(vault_name=vault_name)  # type: ignore[attr-defined]
        self._emu.serve()
        self.url, self.ca_path = self._emu.where()

    def put(self, name: str, value: str, **kwargs: Any) -> dict[str, Any]:
        result: dict[str, Any] = self._emu.put(name, value, **kwargs)
        return result

    def latest(self, name: str) -> dict[str, Any] | None:
        result: dict[str, Any] | None = self._emu.latest(name)
        return result

    def versions(self, name: str, **kwargs: Any) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._emu.versions(name, **kwargs)
        return result

    def secret_names(self) -> list[str]:
        result: list[str] = self._emu.secret_names()
        return result

    def latest_versions(self, names: list[str]) -> dict[str, str | None]:
        """The latest version of each secret (None for one that does not exist)."""
        result: dict[str, str | None] = self._emu.latest_versions(names)
        return result

    def last_put_started(self, name: str) -> float:
        """When the emulator started handling the last PUT of ``name`` (epoch seconds)."""
        started: float = self._emu.last_put_started(name)
        return started

    def stop(self) -> None:
        try:
            self._emu.stop()
        finally:
            self._manager.shutdown()
