"""ROTATION_CONSUMERS parsing and tag resolution (shared.config.consumers)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from shared.config.consumers import parse_consumers, resolve_consumers
from shared.domain.errors import ConfigurationError
from shared.domain.ports import Consumer

CONFIG: dict[str, Any] = {
    "consumers": {
        "bridge": {
            "url": "https://bridge.internal/internal/secrets/refresh",
            "auth": "entra",
            "audience": "api://bridge",
        },
        "backend": {
            "url": "https://backend.internal/internal/secrets/refresh",
            "auth": "hmac",
            "hmacSecret": "backend-refresh-hmac-key",
        },
        "audit": {"url": "http://127.0.0.1:8080/refresh", "auth": "none"},
    },
    "secrets": {"jwt-signing-key": ["bridge", "backend"]},
}


def config(**changes: Any) -> dict[str, Any]:
    raw = copy.deepcopy(CONFIG)
    for name, entry in changes.items():
        if entry is None:
            raw["consumers"].pop(name, None)
        else:
            raw["consumers"][name] = entry
    return raw


def names(consumers: list[Consumer]) -> list[str]:
    return [c.name for c in consumers]


def test_configured_consumers_with_their_auth() -> None:
    bridge, backend = resolve_consumers(CONFIG, "jwt-signing-key", None)
    assert bridge == Consumer(
        name="bridge",
        url="https://bridge.internal/internal/secrets/refresh",
        auth="entra",
        audience="api://bridge",
    )
    assert backend.auth == "hmac"
    assert backend.hmac_secret == "backend-refresh-hmac-key"
    assert backend.audience is None


def test_secret_names_are_case_insensitive() -> None:
    assert names(resolve_consumers(CONFIG, "JWT-Signing-Key", None)) == ["bridge", "backend"]


def test_unlisted_secret_has_no_consumers() -> None:
    assert resolve_consumers(CONFIG, "other-secret", None) == []


def test_empty_or_missing_setting_means_no_consumers() -> None:
    assert resolve_consumers({}, "jwt-signing-key", None) == []
    assert resolve_consumers(None, "jwt-signing-key", None) == []


def test_tag_replaces_the_configured_list() -> None:
    assert names(resolve_consumers(CONFIG, "jwt-signing-key", "audit, Bridge")) == ["audit", "bridge"]


def test_tag_adds_to_the_configured_list_with_plus() -> None:
    assert names(resolve_consumers(CONFIG, "jwt-signing-key", "+audit,+bridge")) == ["bridge", "backend", "audit"]


def test_tag_gives_consumers_to_an_unlisted_secret() -> None:
    assert names(resolve_consumers(CONFIG, "other-secret", "backend")) == ["backend"]


@pytest.mark.parametrize("value", ["", "  ", "none", "-"])
def test_tag_can_opt_out(value: str) -> None:
    assert resolve_consumers(CONFIG, "jwt-signing-key", value) == []


def test_tag_duplicates_are_dropped() -> None:
    assert names(resolve_consumers(CONFIG, "x", "bridge,BRIDGE,backend")) == ["bridge", "backend"]


@pytest.mark.parametrize(
    ("tag", "message"),
    [
        ("bridge,nobody", "unknown consumer 'nobody'"),
        ("bridge,+audit", "mixes"),
        ("bridge,,backend", "empty entry"),
        ("bridge,not a name!", "not a consumer name"),
    ],
)
def test_bad_tags_are_configuration_errors(tag: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        resolve_consumers(CONFIG, "jwt-signing-key", tag)


@pytest.mark.parametrize(
    "url",
    [
        "https://bridge.internal/refresh",
        "https://10.0.0.4:8443/refresh?x=1",
        "http://127.0.0.1:9000/refresh",
        "http://localhost/refresh",
        "http://[::1]:9000/refresh",
    ],
)
def test_accepted_urls(url: str) -> None:
    catalog = parse_consumers(config(audit={"url": url, "auth": "none"}))
    assert catalog.consumers["audit"].url == url


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://bridge.internal/refresh", "must use https"),
        ("http://127.0.0.2/refresh", "must use https"),
        ("ftp://bridge.internal/refresh", "must use https"),
        ("bridge.internal/refresh", "no host"),
        ("https:///refresh", "no host"),
        ("https://user:pw@bridge.internal/refresh", "user info"),
        ("https://bridge.internal/refresh#frag", "fragment"),
        ("https://bridge.internal:99999/refresh", "not a valid URL"),
        ("", "url is required"),
    ],
)
def test_rejected_urls(url: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message) as info:
        parse_consumers(config(audit={"url": url, "auth": "none"}))
    assert "ROTATION_CONSUMERS.consumers.audit" in str(info.value)
    if "pw" in url:
        assert "pw" not in str(info.value)


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"url": "https://a.internal/r"}, "auth must be one of"),
        ({"url": "https://a.internal/r", "auth": "basic"}, "auth must be one of"),
        ({"url": "https://a.internal/r", "auth": 3}, "auth must be one of"),
        ({"url": "https://a.internal/r", "auth": "entra"}, "audience is required"),
        ({"url": "https://a.internal/r", "auth": "entra", "audience": " "}, "audience is required"),
        ({"url": "https://a.internal/r", "auth": "hmac"}, "hmacSecret must name"),
        ({"url": "https://a.internal/r", "auth": "hmac", "hmacSecret": "bad_name!"}, "hmacSecret must name"),
        ({"url": "https://a.internal/r", "auth": "none", "audience": "api://x"}, "only allowed when auth is 'entra'"),
        ({"url": "https://a.internal/r", "auth": "entra", "audience": "api://x", "hmacSecret": "k"}, "only allowed"),
        ("https://a.internal/r", "must be an object"),
    ],
)
def test_bad_consumer_entries(entry: Any, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        parse_consumers(config(audit=entry))


def test_auth_kind_is_case_insensitive() -> None:
    catalog = parse_consumers(config(audit={"url": "https://a.internal/r", "auth": " NONE "}))
    assert catalog.consumers["audit"].auth == "none"


def test_unknown_fields_are_refused_without_echoing_values() -> None:
    entry = {"url": "https://a.internal/r", "auth": "hmac", "hmacSecret": "k", "hmacKey": "sup3r-s3cret-value"}
    with pytest.raises(ConfigurationError, match="unknown fields") as info:
        parse_consumers(config(audit=entry))
    assert "hmacKey" in str(info.value)
    assert "sup3r-s3cret-value" not in str(info.value)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ([], "must be a JSON object"),
        ({"consumer": {}}, "unknown top-level keys"),
        ({"consumers": []}, "consumers must be an object"),
        ({"consumers": {"bad name": {"url": "https://a/r", "auth": "none"}}}, "has a name that is not"),
        ({"secrets": []}, "secrets must be an object"),
        ({"secrets": {"jwt-signing-key": "bridge"}}, "must be a list"),
        ({"secrets": {"jwt-signing-key": ["ghost"]}}, "lists 'ghost' that is not in"),
        ({"secrets": {"jwt-signing-key": [1]}}, "lists an entry that is not in"),
        ({"secrets": {"not_a_secret!": []}}, "not a Key Vault secret name"),
        ({"secrets": {"a": [], "A": []}}, "twice"),
        (
            {
                "consumers": {
                    "x": {"url": "https://a/r", "auth": "none"},
                    "X": {"url": "https://a/r", "auth": "none"},
                }
            },
            "twice",
        ),
    ],
)
def test_bad_setting_shapes(raw: Any, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        parse_consumers(raw)


def test_validation_covers_entries_unrelated_to_the_secret() -> None:
    """A broken entry fails every resolution, so the mistake cannot hide until that secret rotates."""
    raw = config(audit={"url": "http://remote.example/r", "auth": "none"})
    with pytest.raises(ConfigurationError):
        resolve_consumers(raw, "jwt-signing-key", None)


def test_settings_from_env_feed_the_resolver() -> None:
    import json

    from shared.config.settings import Settings

    settings = Settings.from_env({"ROTATION_CONSUMERS": json.dumps(CONFIG)})
    assert names(resolve_consumers(settings.consumers, "jwt-signing-key", "+audit")) == ["bridge", "backend", "audit"]


def test_replica_fields_default_to_a_one_hour_cache_acknowledged_per_instance() -> None:
    bridge, _ = resolve_consumers(CONFIG, "jwt-signing-key", None)
    assert (bridge.max_cache_seconds, bridge.acknowledges) == (3600, "instance")
    raw = config(bridge={"url": "https://b/r", "auth": "none", "maxCacheSeconds": 120, "acknowledges": "Service"})
    bridge, _ = resolve_consumers(raw, "jwt-signing-key", None)
    assert (bridge.max_cache_seconds, bridge.acknowledges) == (120, "service")


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("maxCacheSeconds", -1, "maxCacheSeconds must be a whole number from 0 to 86400"),
        ("maxCacheSeconds", 86401, "maxCacheSeconds must be a whole number from 0 to 86400"),
        ("maxCacheSeconds", "60", "maxCacheSeconds must be a whole number from 0 to 86400"),
        ("maxCacheSeconds", True, "maxCacheSeconds must be a whole number from 0 to 86400"),
        ("acknowledges", "all", "acknowledges must be one of ['instance', 'service']"),
    ],
)
def test_bad_replica_fields_are_configuration_errors(field: str, value: Any, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_consumers(config(audit={"url": "https://a/r", "auth": "none", field: value}))
