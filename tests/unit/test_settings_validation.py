"""Settings that cannot work are refused at start-up; identifiers are checked in one place.

Key Vault raises SecretNearExpiry 30 days before expiry whatever the app
thinks, so a lead time under 30 days loops; HMAC keys must have a vault to be
read from; the sweep schedule has one default, stated the same everywhere.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from functions.timer import DEFAULT_SWEEP_SCHEDULE, SWEEP_SCHEDULE_SETTING
from shared.config.consumers import parse_consumers
from shared.config.settings import Settings
from shared.domain.errors import ConfigurationError
from shared.domain.validation import (
    KEY_VAULT_NEAR_EXPIRY_DAYS,
    check_url,
    is_secret_name,
    is_vault_name,
    is_version,
    same_name,
    same_version,
)

ROOT = Path(__file__).resolve().parents[2]
HMAC_CATALOG = {
    "consumers": {"backend": {"url": "https://backend.internal/refresh", "auth": "hmac",
                              "hmacSecret": "backend-refresh-hmac-key"}},
    "secrets": {"jwt-signing-key": ["backend"]},
}


# ------------------------------------------------------------------ lead days

@pytest.mark.parametrize("lead", ["1", "10", "29"])
def test_a_lead_inside_key_vaults_30_day_window_is_refused_at_start_up(lead: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        Settings.from_env({"ROTATION_ALLOWED_VAULTS": "kv-a", "ROTATION_LEAD_DAYS": lead})
    message = str(info.value)
    assert "ROTATION_LEAD_DAYS" in message and "at least 30" in message and "rotation loop" in message


def test_a_lead_inside_the_window_is_refused_however_settings_are_built() -> None:
    with pytest.raises(ConfigurationError, match="at least 30"):
        Settings(allowed_vaults=("kv-a",), lead_days=10)


@pytest.mark.parametrize("lead", ["", "30", "45", " 90 "])
def test_a_lead_of_30_days_or_more_is_accepted(lead: str) -> None:
    settings = Settings.from_env({"ROTATION_ALLOWED_VAULTS": "kv-a", "ROTATION_LEAD_DAYS": lead})
    assert settings.lead_days >= KEY_VAULT_NEAR_EXPIRY_DAYS == 30


def test_an_absurd_lead_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="at most"):
        Settings.from_env({"ROTATION_LEAD_DAYS": "100000"})


# ------------------------------------------------------------ HMAC key vaults

def env(vaults: str, default: str | None = None, catalog: Any = HMAC_CATALOG) -> dict[str, str]:
    out = {"ROTATION_ALLOWED_VAULTS": vaults, "ROTATION_CONSUMERS": json.dumps(catalog)}
    if default is not None:
        out["ROTATION_DEFAULT_VAULT"] = default
    return out


def with_vault(vault: Any) -> dict[str, Any]:
    catalog: dict[str, Any] = json.loads(json.dumps(HMAC_CATALOG))
    catalog["consumers"]["backend"]["hmacVault"] = vault
    return catalog


def test_several_vaults_without_a_default_need_each_hmac_key_to_name_its_vault() -> None:
    """The shape of infra/main.prod.bicepparam: every HMAC ping used to fail silently."""
    with pytest.raises(ConfigurationError) as info:
        Settings.from_env(env("kv-a,kv-b"))
    message = str(info.value)
    assert "ROTATION_CONSUMERS.consumers.backend.hmacVault is required" in message
    assert "ROTATION_DEFAULT_VAULT" in message


def test_an_hmac_key_that_names_its_vault_works_with_several_vaults() -> None:
    settings = Settings.from_env(env("kv-a,kv-b", catalog=with_vault(" KV-B ")))
    catalog = parse_consumers(settings.consumers, allowed_vaults=settings.allowed_vaults,
                              default_vault=settings.default_vault)
    assert catalog.consumers["backend"].hmac_vault == "kv-b"


@pytest.mark.parametrize(("vault", "message"), [("kv-c", "not on ROTATION_ALLOWED_VAULTS"),
                                                ("not a vault!", "must be a Key Vault name"), (7, "Key Vault name")])
def test_an_hmac_vault_off_the_allow_list_or_invalid_is_refused(vault: Any, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        Settings.from_env(env("kv-a,kv-b", catalog=with_vault(vault)))


def test_hmac_vault_is_only_allowed_with_hmac_auth() -> None:
    catalog = {"consumers": {"bridge": {"url": "https://b.internal/r", "auth": "none", "hmacVault": "kv-a"}}}
    with pytest.raises(ConfigurationError, match="only allowed when auth is 'hmac'"):
        Settings.from_env(env("kv-a", catalog=catalog))


@pytest.mark.parametrize(("vaults", "default", "expected"), [("kv-a", None, "kv-a"), ("kv-a,kv-b", "kv-b", "kv-b")])
def test_single_vault_and_default_vault_configurations_keep_working_unchanged(
        vaults: str, default: str | None, expected: str) -> None:
    settings = Settings.from_env(env(vaults, default))
    catalog = parse_consumers(settings.consumers, allowed_vaults=settings.allowed_vaults,
                              default_vault=settings.default_vault)
    assert catalog.consumers["backend"].hmac_vault == expected


def test_a_default_vault_off_the_allow_list_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="ROTATION_DEFAULT_VAULT must be one of"):
        Settings.from_env({"ROTATION_ALLOWED_VAULTS": "kv-a,kv-b", "ROTATION_DEFAULT_VAULT": "kv-c"})


@pytest.mark.parametrize("value", ["kv-a=http://127.0.0.1:8443", "kv-a=https://user:pw@host", "kv a=https://h",
                                   "kv-a=https://h#frag"])
def test_vault_url_overrides_are_checked_like_every_url(value: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        Settings.from_env({"ROTATION_ALLOWED_VAULTS": "kv-a", "ROTATION_VAULT_URLS": value})
    assert "pw" not in str(info.value)


# ------------------------------------------------------------ one validation module

@pytest.mark.parametrize("name", ["jwt-signing-key", "JWT-SIGNING-KEY", "a", "a" * 127, "0-9"])
def test_valid_secret_names(name: str) -> None:
    assert is_secret_name(name)


@pytest.mark.parametrize("name", ["jwt-signing-key\n", " jwt", "", "a" * 128, "jwt_signing", "kéy", "a/b", None, 7])
def test_invalid_secret_names_including_a_trailing_newline(name: Any) -> None:
    assert not is_secret_name(name)


def test_versions_are_32_hex_characters_in_either_case_and_nothing_else() -> None:
    assert is_version("a" * 32) and is_version("A" * 32) and is_version("0123456789abcdef" * 2)
    for bad in ("a" * 32 + "\n", "a" * 31, "g" * 32, "latest", "", None):
        assert not is_version(bad)


@pytest.mark.parametrize("vault", ["kv-a", "KV-Local", "abc", "a" + "b" * 22 + "c"])
def test_valid_vault_names(vault: str) -> None:
    assert is_vault_name(vault)


@pytest.mark.parametrize("vault", ["kv-a\n", "ab", "1kv", "kv-", "kv--a", "a" * 25, "kv.a", "kv a"])
def test_invalid_vault_names(vault: str) -> None:
    assert not is_vault_name(vault)


def test_names_and_versions_compare_case_insensitively_as_key_vault_does() -> None:
    assert same_name("JWT-Signing-Key", "jwt-signing-key") and not same_name("jwt-signing-key", "jwt-signing-keys")
    assert same_version("A" * 32, "a" * 32) and not same_version("a" * 32, None)


def test_url_checks_never_echo_the_url() -> None:
    with pytest.raises(ConfigurationError) as info:
        check_url("https://admin:hunter2@host/x", "SOME_SETTING")
    assert "hunter2" not in str(info.value) and "SOME_SETTING" in str(info.value)
    for bad in ("https://host/x\n", "https://ho st/x", "https://host/\x00"):
        with pytest.raises(ConfigurationError, match="SOME_SETTING"):
            check_url(bad, "SOME_SETTING")


def test_no_module_keeps_its_own_copy_of_the_identifier_patterns() -> None:
    for path in ("shared/config/settings.py", "shared/config/consumers.py", "shared/service/events.py",
                 "functions/http_api.py"):
        text = (ROOT / path).read_text()
        assert "{1,127}" not in text and "{32}" not in text and "{1,22}" not in text, path
        assert "urlsplit" not in text, path


# ------------------------------------------------------------ one sweep schedule

def test_the_sweep_schedule_default_is_stated_the_same_everywhere() -> None:
    schedule = DEFAULT_SWEEP_SCHEDULE
    assert len(schedule.split()) == 6  # NCRONTAB with seconds, as the Functions host wants it
    local = json.loads((ROOT / "local.settings.example.json").read_text())
    assert local["Values"][SWEEP_SCHEDULE_SETTING] == schedule
    bicep = (ROOT / "infra" / "main.bicep").read_text()
    assert re.search(rf"param sweepSchedule string = '{re.escape(schedule)}'", bicep)
    assert f"{SWEEP_SCHEDULE_SETTING}: sweepSchedule" in bicep
    for param_file in sorted((ROOT / "infra").glob("*.bicepparam")):
        for value in re.findall(r"param sweepSchedule = '([^']*)'", param_file.read_text()):
            assert value == schedule, param_file.name
    readme = (ROOT / "README.md").read_text()
    assert f"`{schedule}`: every 6 hours by default" in readme
    for doc in ("README.md", "docs/http-api.md", "docs/deploy.md", "functions/timer.py"):
        text = (ROOT / doc).read_text()
        assert "0 0 3 * * *" not in text and "03:00" not in text, doc
