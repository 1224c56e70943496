"""`make demo`: the standard inventory rotated end to end, in seconds.

Starts the project's Key Vault emulator seeded with the standard inventory,
a PostgreSQL (SCRAM passwords) and a Redis (ACL passwords) of its own, and
Azurite for the rotation lease. The app runs with the *shipped* operator file
(``rotation.json``), its ``${...}`` placeholders filled with the local
servers' addresses exactly as app settings fill them in Azure (and TLS off
for the local Redis). The four rotating secrets are near expiry; a
``Microsoft.KeyVault.SecretNearExpiry`` event is delivered for each to the
Event Grid function exactly as the Functions worker would, and the table shows
what was rotated and that each new value works. No value is ever printed.

The Azure-managed credentials rotate too, against the local doubles of ARM,
Microsoft Graph and Entra's token endpoint (azuredoubles/), driven by the real
ARM SDKs: ``azure-openai-api-key`` and ``foundry-api-key`` (a key slot
regenerated, proven on the account's data plane) and
``api-gateway-client-secret`` (an Entra password added, proven with a
client-credentials token).
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import ssl
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

import azure.functions as func
import psycopg
import redis
from psycopg import sql

from azuredoubles import AzureDoubles, CognitiveAccount, EntraApp
from functions.event_grid import rotate_on_event
from kvemulator import KeyVaultEmulator, seed_standard
from kvemulator.seed import SecretSpec, standard_inventory
from shared.bootstrap import Container, set_container
from shared.config.operator_file import DEFAULT_FILE, OperatorConfig
from shared.config.settings import Settings
from shared.domain.policy import resolve_policy
from tests.support.services import Azurite, PostgresServer, RedisServer, redis_command

VAULT = "kv-demo"
ROTATING = ("jwt-signing-key", "database-connection-string", "redis-password", "session-encryption-key",
            "azure-openai-api-key", "foundry-api-key", "api-gateway-client-secret")
SUBSCRIPTION = "6d0b3c1e-7f52-4a8e-9b31-0c5e2f7a9d10"
TENANT = "5f6c1a0e-3b7d-4e2a-9c41-8d2f0b6e7a13"


def _fixed(value: str) -> Callable[[], str]:
    """Seeds the value the local server was set up with, not a fresh random one."""
    return lambda: value


def _fmt(ts: object) -> str:
    if isinstance(ts, int | float):
        return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M")
    return "-"


def _idle_state(name: str, tags: dict[str, str] | None, operator: OperatorConfig) -> str:
    policy = resolve_policy(name, tags or {}, operator, 30)
    return "manual only" if policy is not None and policy.manual else "not due"


def _downstream(pg: PostgresServer, rs: RedisServer) -> dict[str, str]:
    """The roles and the ACL user the shipped rotation.json names, with a first password each."""
    pg_password, redis_password = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    with psycopg.connect(pg.admin_dsn, autocommit=True) as conn:
        conn.execute("CREATE ROLE app_owner NOLOGIN")
        for role in ("app_blue", "app_green"):
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN INHERIT IN ROLE app_owner").format(sql.Identifier(role)))
            conn.execute(sql.SQL("ALTER ROLE {} SET role = app_owner").format(sql.Identifier(role)))
        conn.execute(sql.SQL("ALTER ROLE app_blue PASSWORD {}").format(sql.Literal(pg_password)))
    client = rs.client()
    redis_command(client, "ACL", "SETUSER", "app", "on", f">{redis_password}", "~*", "&*", "+@all")
    client.close()
    return {
        "database-connection-string": pg.dsn("app_blue", pg_password),
        "redis-password": redis_password,
        "postgres-admin-connection-string": pg.admin_dsn,
        "redis-admin-connection-string": f"redis://{rs.admin_user}:{rs.admin_password}@{rs.host}:{rs.port}/0",
    }


def _azure(doubles: AzureDoubles) -> tuple[dict[str, str], dict[str, str], dict[str, CognitiveAccount], EntraApp]:
    """An Azure OpenAI and a Foundry account, the gateway's Entra application; their app settings."""
    accounts = {name: doubles.add_cognitive_account(SUBSCRIPTION, "rg-demo", name) for name in ("aoai-demo",
                                                                                               "foundry-demo")}
    app = doubles.add_app(TENANT, str(uuid.uuid4()), str(uuid.uuid4()))
    first = app.add("created by hand", None)
    values = {"azure-openai-api-key": accounts["aoai-demo"].key1, "foundry-api-key": accounts["foundry-demo"].key1,
              "api-gateway-client-secret": str(first["secretText"])}
    env: dict[str, str] = {"ROTATION_GATEWAY_TENANT_ID": TENANT, "ROTATION_GATEWAY_APP_OBJECT_ID": app.object_id,
                           "ROTATION_GATEWAY_CLIENT_ID": app.app_id}
    for prefix, account in (("AZURE_OPENAI", accounts["aoai-demo"]), ("FOUNDRY", accounts["foundry-demo"])):
        env |= {f"ROTATION_{prefix}_SUBSCRIPTION_ID": SUBSCRIPTION, f"ROTATION_{prefix}_RESOURCE_GROUP": "rg-demo",
                f"ROTATION_{prefix}_ACCOUNT": account.name, f"ROTATION_{prefix}_ENDPOINT": account.endpoint}
    return values, env, {"azure-openai-api-key": accounts["aoai-demo"],
                         "foundry-api-key": accounts["foundry-demo"]}, app


def _https(doubles: AzureDoubles, url: str, *, headers: dict[str, str], data: bytes | None = None) -> int:
    context = ssl.create_default_context(cafile=doubles.ca_path)
    request = urllib.request.Request(url, data=data, headers=headers)  # noqa: S310 - https to the local double
    try:
        with urllib.request.urlopen(request, context=context, timeout=5) as response:  # noqa: S310
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def _azure_works(name: str, value: str, doubles: AzureDoubles, accounts: dict[str, CognitiveAccount],
                 app: EntraApp) -> str:
    if name in accounts:
        status = _https(doubles, f"{accounts[name].endpoint}/openai/models?api-version=2024-10-21",
                        headers={"api-key": value})
        return "models listed" if status == 200 else "REFUSED"
    form = urllib.parse.urlencode({"grant_type": "client_credentials", "client_id": app.app_id,
                                   "client_secret": value, "scope": "https://graph.microsoft.com/.default"}).encode()
    status = _https(doubles, f"{doubles.url}/{TENANT}/oauth2/v2.0/token", data=form,
                    headers={"Content-Type": "application/x-www-form-urlencoded"})
    return "token issued" if status == 200 else "REFUSED"


def _works(name: str, value: str, rs: RedisServer) -> str:
    if name == "database-connection-string":
        try:
            psycopg.connect(value, connect_timeout=3).close()
        except psycopg.OperationalError:
            return "REFUSED"
        return "logs in"
    if name == "redis-password":
        client = redis.Redis(host=rs.host, port=rs.port, username="app", password=value, socket_timeout=3)
        try:
            client.ping()
        except redis.RedisError:
            return "REFUSED"
        finally:
            client.close()
        return "AUTH ok"
    return "-"


async def _deliver(emu: KeyVaultEmulator, versions: dict[str, str], name: str) -> None:
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
    with (KeyVaultEmulator(vault_name=VAULT) as emu, Azurite() as azurite, PostgresServer() as pg,
          RedisServer() as rs, AzureDoubles() as doubles):
        values = _downstream(pg, rs)
        azure_values, azure_env, accounts, gateway = _azure(doubles)
        values |= azure_values
        inventory = [
            SecretSpec(spec.name, _fixed(values[spec.name]), spec.expires_in_days, spec.content_type, spec.tags)
            if spec.name in values else spec
            for spec in standard_inventory()
        ]
        versions = seed_standard(emu, near_expiry=ROTATING, inventory=inventory)
        for admin in ("postgres-admin-connection-string", "redis-admin-connection-string"):
            emu.put(admin, values[admin])
        print(f"emulator {emu.url} seeded with {len(versions)} secrets; Azurite on {azurite.blob_endpoint}; "
              f"PostgreSQL on {pg.port}, Redis on {rs.port}; ARM/Graph/Entra doubles on {doubles.url}")
        shipped = json.loads(DEFAULT_FILE.read_text(encoding="utf-8"))
        shipped["targets"]["app-redis"]["tls"] = False  # the local Redis has no TLS; Azure's does
        operator = OperatorConfig.from_mapping(shipped, source="rotation.json", env={
            "ROTATION_POSTGRES_HOST": pg.host,
            "ROTATION_POSTGRES_DATABASE": "postgres",
            "ROTATION_POSTGRES_PORT": str(pg.port),
            "ROTATION_REDIS_NODES": f"{rs.host}:{rs.port}",
            **azure_env,
        })
        settings = Settings(
            allowed_vaults=(VAULT,),
            default_vault=VAULT,
            vault_url_overrides={VAULT: emu.url},
            vault_ca_bundle=emu.ca_path,
            vault_verify_challenge_resource=False,
            vault_credential="emulator",
            storage_connection_string=azurite.connection_string,
            arm_endpoint=doubles.url,
            graph_endpoint=doubles.url,
            login_endpoint=doubles.url,
            azure_ca_bundle=doubles.ca_path,
            # ROTATION_TELEMETRY=console make demo: the rotation's spans and metrics on stdout.
            telemetry=os.environ.get("ROTATION_TELEMETRY", "off").strip().lower() or "off",
        )
        container = Container(settings, operator=operator)
        set_container(container)

        async def run() -> None:
            try:
                for name in ROTATING:
                    await _deliver(emu, versions, name)
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
                else _idle_state(name, latest.get("tags"), operator),
                (_azure_works(name, str(latest["value"]), doubles, accounts, gateway) if name in azure_values
                 else _works(name, str(latest["value"]), rs)) if rotated else "-",
            ))
    header = ("secret", "old version", "new version", "new expiry (UTC)", "state", "new value")
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    print()
    for row in [header, *rows]:
        print("  ".join(str(cell).ljust(w) for cell, w in zip(row, widths, strict=True)))
    print(f"\ndone in {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
