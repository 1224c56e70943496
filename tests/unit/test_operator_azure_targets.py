"""The operator file's Azure-managed target kinds: parsed strictly, every error naming its key path."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from shared.config.operator_file import (
    AzureRedisTarget,
    CognitiveServicesTarget,
    EntraApplicationTarget,
    OperatorConfig,
)
from shared.domain.errors import ConfigurationError

SUB = "6d0b3c1e-7f52-4a8e-9b31-0c5e2f7a9d10"
GOOD: dict[str, Any] = {
    "version": 1,
    "targets": {
        "oai": {"kind": "cognitive-services", "subscriptionId": SUB, "resourceGroup": "rg-app", "account": "oai-1",
                "endpoint": "https://oai-1.openai.azure.com"},
        "cache": {"kind": "azure-redis", "subscriptionId": SUB, "resourceGroup": "rg-app", "cache": "cache-1",
                  "host": "cache-1.redis.cache.windows.net"},
        "amr": {"kind": "azure-managed-redis", "subscriptionId": SUB, "resourceGroup": "rg-app", "cluster": "amr-1",
                "host": "amr-1.westeurope.redis.azure.net"},
        "gw": {"kind": "entra-application", "tenantId": SUB, "applicationObjectId": SUB, "clientId": SUB},
    },
    "secrets": {
        "azure-openai-api-key": {"rotator": "key-slot", "target": "oai", "intervalDays": 90},
        "redis-password": {"rotator": "key-slot", "target": "cache", "intervalDays": 90},
        "amr-key": {"rotator": "key-slot", "target": "amr", "intervalDays": 90},
        "api-gateway-client-secret": {"rotator": "entra-client-secret", "target": "gw", "intervalDays": 90},
    },
}


def test_the_azure_targets_parse_with_their_defaults() -> None:
    config = OperatorConfig.from_mapping(GOOD)
    oai, cache, amr, gw = (config.target(n) for n in ("oai", "cache", "amr", "gw"))
    assert isinstance(oai, CognitiveServicesTarget) and oai.verify_path.startswith("/openai/models")
    assert isinstance(cache, AzureRedisTarget) and (cache.kind, cache.port, cache.tls) == ("azure-redis", 6380, True)
    assert isinstance(amr, AzureRedisTarget) and (amr.kind, amr.port, amr.database) == (
        "azure-managed-redis", 10000, "default")
    assert isinstance(gw, EntraApplicationTarget) and gw.verify_scope == "https://graph.microsoft.com/.default"


def test_placeholders_fill_the_azure_targets_from_app_settings() -> None:
    data = copy.deepcopy(GOOD)
    data["targets"]["oai"]["endpoint"] = "${AOAI_ENDPOINT}"
    config = OperatorConfig.from_mapping(data, env={"AOAI_ENDPOINT": "https://x.openai.azure.com"})
    target = config.target("oai")
    assert isinstance(target, CognitiveServicesTarget) and target.endpoint == "https://x.openai.azure.com"
    with pytest.raises(ConfigurationError, match="AOAI_ENDPOINT"):
        OperatorConfig.from_mapping(data).target("oai")


@pytest.mark.parametrize(("path", "value", "error"), [
    (("oai", "account"), None, r"targets\.oai\.account: is required"),
    (("oai", "subscriptionId"), "not-a-guid", r"targets\.oai\.subscriptionId"),
    (("oai", "resourceGroup"), "rg/../other", r"targets\.oai\.resourceGroup"),
    (("oai", "account"), "a/b", r"targets\.oai\.account"),
    (("oai", "endpoint"), "https://evil.example/steal?x=", r"targets\.oai\.endpoint"),
    (("oai", "endpoint"), "https://user:pw@host", r"targets\.oai\.endpoint"),
    (("oai", "verifyPath"), "//evil.example/x", None),  # a path, still on the declared host
    (("oai", "verifyPath"), "https://evil.example", r"targets\.oai\.verifyPath"),
    (("oai", "adminSecret"), "x", r"targets\.oai\.adminSecret: unknown key"),
    (("cache", "cluster"), "x", r"targets\.cache\.cluster: unknown key"),
    (("amr", "cache"), "x", r"targets\.amr\.cache: unknown key"),
    (("cache", "port"), 0, r"targets\.cache\.port"),
    (("cache", "host"), "bad host", r"targets\.cache\.host"),
    (("gw", "clientId"), "x", r"targets\.gw\.clientId"),
    (("gw", "verifyScope"), "https://graph.microsoft.com/User.Read", r"targets\.gw\.verifyScope"),
    (("gw", "verifyTimeoutSeconds"), 0, r"targets\.gw\.verifyTimeoutSeconds"),
    (("gw", "kind"), "entra", r"targets\.gw\.kind: must be one of"),
])
def test_a_bad_azure_target_is_refused_naming_the_key(path: tuple[str, str], value: Any, error: str | None) -> None:
    data = copy.deepcopy(GOOD)
    target = data["targets"][path[0]]
    if value is None:
        target.pop(path[1])
    else:
        target[path[1]] = value
    if error is None:
        OperatorConfig.from_mapping(data)
        return
    with pytest.raises(ConfigurationError, match=error):
        OperatorConfig.from_mapping(data)


def test_a_rotator_takes_only_its_target_kinds() -> None:
    data = copy.deepcopy(GOOD)
    data["secrets"]["api-gateway-client-secret"]["target"] = "cache"
    with pytest.raises(ConfigurationError, match=r"api-gateway-client-secret\.target: cache is a azure-redis"):
        OperatorConfig.from_mapping(data)
    data = copy.deepcopy(GOOD)
    data["secrets"]["redis-password"] = {"rotator": "redis", "target": "cache", "intervalDays": 90}
    with pytest.raises(ConfigurationError, match=r"redis-password\.target"):
        OperatorConfig.from_mapping(data)


def test_azure_rotators_cannot_be_tag_managed_or_a_generator() -> None:
    data = copy.deepcopy(GOOD)
    data["tagManaged"] = [{"pattern": "team-*", "rotators": ["key-slot"]}]
    with pytest.raises(ConfigurationError, match=r"tagManaged\[0\]\.rotators\[0\]"):
        OperatorConfig.from_mapping(data)
