"""Azure-managed credentials for tests and the demo: resources in the doubles, targets in the operator file.

Each ``setup_*`` creates the resource in :class:`azuredoubles.AzureDoubles`,
declares the matching target and secret in the test vault's operator file
(never through tags), and puts the credential in force in the vault. The
``*_works`` checks use the credential the way a consumer would: a data-plane
call, a Redis AUTH, a client-credentials token.
"""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.parse
import urllib.request
import uuid
from typing import Any

import redis

from azuredoubles import AzureDoubles, CognitiveAccount, EntraApp, RedisCache
from kvemulator import KeyVaultEmulator
from tests.support import operator_files
from tests.support.services import RedisServer, no_retry

SUBSCRIPTION = "6d0b3c1e-7f52-4a8e-9b31-0c5e2f7a9d10"
TENANT = "5f6c1a0e-3b7d-4e2a-9c41-8d2f0b6e7a13"
RESOURCE_GROUP = "rg-app"


def settings_overrides(doubles: AzureDoubles) -> dict[str, Any]:
    """Settings that point the app's ARM, Graph and login endpoints at the doubles."""
    return {"arm_endpoint": doubles.url, "graph_endpoint": doubles.url, "login_endpoint": doubles.url,
            "azure_ca_bundle": doubles.ca_path}


def setup_cognitive(emu: KeyVaultEmulator, doubles: AzureDoubles, *, secret: str = "azure-openai-api-key",
                    target: str = "azure-openai", interval_days: int = 90) -> CognitiveAccount:
    """An account whose Key1 the vault serves."""
    account = doubles.add_cognitive_account(SUBSCRIPTION, RESOURCE_GROUP, f"aoai-{uuid.uuid4().hex[:6]}")
    operator_files.declare(
        emu,
        targets={target: {"kind": "cognitive-services", "subscriptionId": SUBSCRIPTION,
                          "resourceGroup": RESOURCE_GROUP, "account": account.name, "endpoint": account.endpoint}},
        secrets={secret: {"rotator": "key-slot", "target": target, "intervalDays": interval_days}},
    )
    emu.put(secret, account.key1)
    return account


def setup_azure_redis(emu: KeyVaultEmulator, doubles: AzureDoubles, server: RedisServer, *, managed: bool = False,
                      secret: str = "redis-password", target: str = "app-azure-redis") -> RedisCache:
    """An Azure Cache for Redis (or Managed Redis database) driving ``server``; the vault serves Primary."""
    name = f"cache-{uuid.uuid4().hex[:6]}"
    node = (server.host, server.port, server.admin_user, server.admin_password)
    cache = doubles.add_redis(SUBSCRIPTION, RESOURCE_GROUP, name, node, database="default" if managed else None)
    declared: dict[str, Any] = {"kind": "azure-managed-redis" if managed else "azure-redis",
                                "subscriptionId": SUBSCRIPTION, "resourceGroup": RESOURCE_GROUP,
                                "host": server.host, "port": server.port, "tls": False}
    declared["cluster" if managed else "cache"] = name
    operator_files.declare(emu, targets={target: declared},
                           secrets={secret: {"rotator": "key-slot", "target": target, "intervalDays": 90}})
    emu.put(secret, cache.primary)
    return cache


def setup_entra(emu: KeyVaultEmulator, doubles: AzureDoubles, *, secret: str = "api-gateway-client-secret",
                target: str = "api-gateway-app", verify_timeout: int = 1) -> EntraApp:
    """An application with one hand-made password, the one the vault serves."""
    app = doubles.add_app(TENANT, str(uuid.uuid4()), str(uuid.uuid4()))
    first = app.add("created by hand", None)
    operator_files.declare(
        emu,
        targets={target: {"kind": "entra-application", "tenantId": TENANT, "applicationObjectId": app.object_id,
                          "clientId": app.app_id, "verifyTimeoutSeconds": verify_timeout}},
        secrets={secret: {"rotator": "entra-client-secret", "target": target, "intervalDays": 90}},
    )
    emu.put(secret, str(first["secretText"]))
    return app


def cognitive_works(account: CognitiveAccount, value: str) -> bool:
    """What the account's data plane would accept: one of its two live keys."""
    return value in (account.key1, account.key2)


def redis_key_works(server: RedisServer, value: str) -> bool:
    client = redis.Redis(host=server.host, port=server.port, password=value, retry=no_retry(), socket_timeout=3)
    try:
        return bool(client.ping())
    except (redis.AuthenticationError, redis.ResponseError, redis.ConnectionError):
        return False
    finally:
        client.close()


def entra_works(app: EntraApp, value: str) -> bool:
    return app.accepts(value)


def cognitive_call_works(account: CognitiveAccount, ca_path: str, value: str) -> bool:
    """What a consumer does with the key: one data-plane call over HTTPS (``GET /openai/models``)."""
    request = urllib.request.Request(f"{account.endpoint}/openai/models", headers={"api-key": value})
    return _status(request, ca_path) == 200


def entra_token_works(doubles: AzureDoubles, app: EntraApp, value: str) -> bool:
    """What the gateway does with its client secret: a client-credentials token request over HTTPS."""
    form = urllib.parse.urlencode({"grant_type": "client_credentials", "client_id": app.app_id,
                                   "client_secret": value, "scope": "api://gateway/.default"}).encode()
    request = urllib.request.Request(f"{doubles.url}/{app.tenant}/oauth2/v2.0/token", data=form, method="POST")
    return _status(request, doubles.ca_path, token=True) == 200


def _status(request: urllib.request.Request, ca_path: str, *, token: bool = False) -> int:
    context = ssl.create_default_context(cafile=ca_path)
    try:
        with urllib.request.urlopen(request, context=context, timeout=5) as response:
            body = response.read()
            if token and not json.loads(body or b"{}").get("access_token"):
                return 0
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (urllib.error.URLError, OSError, ValueError):
        return 0
