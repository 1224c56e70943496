"""The operator file is checked as a whole; every error names the key path at fault."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from shared.config.operator_file import DEFAULT_FILE, OperatorConfig, PostgresTarget, RedisTarget
from shared.domain.errors import ConfigurationError

BASE: dict[str, Any] = {
    "version": 1,
    "adminSecrets": ["pg-admin", "redis-admin"],
    "targets": {
        "db": {"kind": "postgres", "host": "db.internal", "database": "app", "adminSecret": "pg-admin",
               "roles": ["app_blue", "app_green"], "ownerRole": "app_owner"},
        "cache": {"kind": "redis", "nodes": ["cache-1:6380", "cache-2:6380"], "user": "svc",
                  "adminSecret": "redis-admin"},
    },
    "secrets": {
        "db-conn": {"rotator": "postgres", "target": "db", "intervalDays": 90},
        "cache-pw": {"rotator": "redis", "target": "cache", "intervalDays": 30},
    },
}


def changed(path: list[str], value: Any) -> dict[str, Any]:
    data = copy.deepcopy(BASE)
    node = data
    for key in path[:-1]:
        node = node[key]
    if value is KeyError:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return data


def test_a_valid_file_yields_typed_targets() -> None:
    config = OperatorConfig.from_mapping(BASE)
    db, cache = config.target("db"), config.target("cache")
    assert isinstance(db, PostgresTarget) and (db.port, db.strategy, db.probe) == (5432, "alternating", "SELECT 1")
    assert isinstance(cache, RedisTarget) and cache.nodes == (("cache-1", 6380), ("cache-2", 6380))


def test_the_shipped_file_is_valid() -> None:
    OperatorConfig.from_mapping(json.loads(DEFAULT_FILE.read_text()))


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (["targets", "db", "port"], "5432x", "targets.db.port"),
        (["targets", "db", "hostt"], "x", "targets.db.hostt: unknown key"),
        (["targets", "db", "adminSecret"], "other-secret", "targets.db.adminSecret: other-secret is not listed"),
        (["targets", "db", "roles"], ["app_blue", "app_blue"], "targets.db.roles: names the same role twice"),
        (["targets", "db", "roles"], ["app_blue", "Robert'); DROP"], "targets.db.roles[1]"),
        (["targets", "db", "ownerRole"], KeyError, "targets.db.ownerRole: is required"),
        (["targets", "db", "probe"], "SELECT 1; COPY x TO PROGRAM 'id'", "targets.db.probe: must be a single"),
        (["targets", "cache", "nodes"], ["cache-1"], "targets.cache.nodes[0]"),
        (["targets", "cache", "kind"], "ldap", "targets.cache.kind"),
        (["secrets", "db-conn", "target"], "cache", "is a redis target, not postgres"),
        (["secrets", "db-conn", "target"], "nowhere", "nowhere is not declared"),
        (["secrets", "db-conn", "intervalDays"], 0, "secrets.db-conn.intervalDays"),
        (["secrets", "db-conn", "validityDays"], 30, "rotation loop"),
        (["secrets", "pg-admin"], {"rotator": "random", "intervalDays": 30}, "is an admin secret"),
        (["secrets", "x"], {"rotator": "manual", "generator": "postgres"}, "secrets.x.generator"),
        (["tagManaged"], [{"pattern": "team-*", "rotators": ["postgres"]}], "tagManaged[0].rotators[0]"),
        (["version"], 2, "version: must be 1"),
        (["extra"], {}, "(top).extra: unknown key"),
    ],
)
def test_a_bad_file_is_refused_naming_the_key(path: list[str], value: Any, message: str) -> None:
    with pytest.raises(ConfigurationError) as err:
        OperatorConfig.from_mapping(changed(path, value))
    assert message in err.value.message


def test_placeholders_are_filled_from_app_settings_and_only_as_whole_values() -> None:
    data = changed(["targets", "db", "host"], "${DB_HOST}")
    filled = OperatorConfig.from_mapping(data, env={"DB_HOST": "db.prod"}).target("db")
    assert isinstance(filled, PostgresTarget) and filled.host == "db.prod"
    with pytest.raises(ConfigurationError, match="DB_HOST"):
        OperatorConfig.from_mapping(data, env={}).target("db")
    defaulted = changed(["targets", "db", "port"], "${DB_PORT:-6432}")
    default_port = OperatorConfig.from_mapping(defaulted).target("db")
    assert isinstance(default_port, PostgresTarget) and default_port.port == 6432
    set_port = OperatorConfig.from_mapping(defaulted, env={"DB_PORT": "7000"}).target("db")
    assert isinstance(set_port, PostgresTarget) and set_port.port == 7000
    with pytest.raises(ConfigurationError, match="whole value"):
        OperatorConfig.from_mapping(changed(["targets", "db", "host"], "db-${X}.internal"))


def test_an_unreadable_or_malformed_file_is_a_clear_start_up_error(tmp_path: Any) -> None:
    with pytest.raises(ConfigurationError, match="cannot be read"):
        OperatorConfig.load(tmp_path / "missing.json", {})
    bad = tmp_path / "rotation.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigurationError, match="not valid JSON"):
        OperatorConfig.load(bad, {})
