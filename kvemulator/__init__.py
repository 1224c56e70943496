"""A Key Vault secrets emulator the project owns.

Tests must exercise the real ``azure-keyvault-secrets`` clients (challenge
auth, paging, retries, error mapping) rather than mocks, and developers need
a vault for ``func start`` without an Azure subscription. This package gives
both: an in-process HTTPS server speaking the Key Vault secrets REST API, with
fault injection and direct state inspection for tests.
"""

from kvemulator.credentials import AsyncStaticTokenCredential, StaticTokenCredential
from kvemulator.emulator import DEFAULT_TENANT_ID, KeyVaultEmulator, RequestRecord
from kvemulator.faults import Fault, Faults
from kvemulator.seed import SecretSpec, seed_standard, standard_inventory
from kvemulator.store import VaultError

__all__ = [
    "DEFAULT_TENANT_ID",
    "AsyncStaticTokenCredential",
    "Fault",
    "Faults",
    "KeyVaultEmulator",
    "RequestRecord",
    "SecretSpec",
    "StaticTokenCredential",
    "VaultError",
    "seed_standard",
    "standard_inventory",
]
