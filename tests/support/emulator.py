"""Reading the Key Vault emulator's state directly, as tests and benchmarks check it."""

from __future__ import annotations

from typing import Any

from kvemulator import KeyVaultEmulator


def latest_of(emu: KeyVaultEmulator, name: str) -> dict[str, Any]:
    """The latest version (value, tags, attributes) of a secret the caller knows exists.

    ``KeyVaultEmulator.latest`` answers None for an unknown secret; a test that has
    just written or rotated the secret wants a clear failure instead."""
    version = emu.latest(name)
    assert version is not None, f"secret {name} does not exist in the emulator"
    return version
