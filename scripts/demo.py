"""`make demo`: the main job on embedded defaults, end to end, in seconds.

Starts the project's Key Vault emulator seeded with the standard inventory
(``jwt-signing-key`` near expiry) and Azurite for the rotation lease, delivers
a ``Microsoft.KeyVault.SecretNearExpiry`` event to the Event Grid function
exactly as the Functions worker would, and prints what was rotated. No value
is ever printed.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid
from datetime import UTC, datetime

import azure.functions as func

from functions.event_grid import rotate_on_event
from kvemulator import KeyVaultEmulator, seed_standard
from shared.container import Container, set_container
from shared.policy import resolve_policy
from shared.settings import Settings
from tests.support.services import Azurite

VAULT = "kv-demo"


def _fmt(ts: object) -> str:
    if isinstance(ts, int | float):
        return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M")
    return "-"


def _idle_state(name: str, tags: dict[str, str] | None) -> str:
    policy = resolve_policy(name, tags or {}, 30)
    return "manual only" if policy is not None and policy.manual else "not due"


async def _deliver(emu: KeyVaultEmulator, versions: dict[str, str]) -> None:
    name = "jwt-signing-key"
    version = versions[name]
    event = func.EventGridEvent(
        id=str(uuid.uuid4()),
        data={"Id": f"https://{VAULT}.vault.azure.net/secrets/{name}/{version}", "VaultName": VAULT,
              "ObjectType": "Secret", "ObjectName": name, "Version": version, "NBF": None, "EXP": None},
        topic=f"/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg-demo/providers/"
              f"Microsoft.KeyVault/vaults/{VAULT}",
        subject=name,
        event_type="Microsoft.KeyVault.SecretNearExpiry",
        event_time=datetime.now(UTC),
        data_version="1",
    )
    print(f"delivering Microsoft.KeyVault.SecretNearExpiry for {name} (version {version[:8]}...)")
    await rotate_on_event(event)


def main() -> int:
    started = time.perf_counter()
    with KeyVaultEmulator(vault_name=VAULT) as emu, Azurite() as azurite:
        versions = seed_standard(emu, near_expiry=("jwt-signing-key",))
        print(f"emulator {emu.url} seeded with {len(versions)} secrets; Azurite on {azurite.blob_endpoint}")
        settings = Settings(
            allowed_vaults=(VAULT,),
            default_vault=VAULT,
            vault_url_overrides={VAULT: emu.url},
            vault_ca_bundle=emu.ca_path,
            vault_verify_challenge_resource=False,
            vault_credential="emulator",
            storage_connection_string=azurite.connection_string,
            # ROTATION_TELEMETRY=console make demo: the rotation's spans and metrics on stdout.
            telemetry=os.environ.get("ROTATION_TELEMETRY", "off").strip().lower() or "off",
        )
        container = Container(settings)
        set_container(container)

        async def run() -> None:
            try:
                await _deliver(emu, versions)
            finally:
                await container.aclose()

        asyncio.run(run())
        rows = []
        for name in sorted(versions):
            all_versions = emu.versions(name)
            latest = all_versions[-1]
            rotated = len(all_versions) > 1
            rows.append((
                name,
                versions[name][:12],
                str(latest["version"])[:12] if rotated else "-",
                _fmt(latest["attributes"].get("exp")) if rotated else "-",
                (latest.get("tags") or {}).get("rotated-state", "-")
                if rotated
                else _idle_state(name, latest.get("tags")),
            ))
    header = ("secret", "old version", "new version", "new expiry (UTC)", "state")
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    print()
    for row in [header, *rows]:
        print("  ".join(str(cell).ljust(w) for cell, w in zip(row, widths, strict=True)))
    print(f"\ndone in {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
