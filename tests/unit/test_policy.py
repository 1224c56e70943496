"""Policy: the operator file declares, tags may only narrow within its bounds."""

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shared.config.operator_file import OperatorConfig, PostgresTarget
from shared.domain.errors import ConfigurationError, PolicyError, TagRefused
from shared.domain.model import SecretProperties
from shared.domain.policy import resolve_policy
from tests.support.rotator_context import MemorySecrets

NOW = datetime(2026, 11, 28, tzinfo=UTC)
SHIPPED = OperatorConfig.load(None, {"ROTATION_POSTGRES_HOST": "db.internal", "ROTATION_POSTGRES_DATABASE": "app",
                                     "ROTATION_REDIS_NODES": "cache.internal:6380"})


def with_patterns(*patterns: dict[str, Any]) -> OperatorConfig:
    import json

    from shared.config.operator_file import DEFAULT_FILE

    data = json.loads(DEFAULT_FILE.read_text())
    data["tagManaged"] = list(patterns)
    return OperatorConfig.from_mapping(data)


TEAM = with_patterns({"pattern": "team-*", "rotators": ["random", "jwt", "manual"]})


def test_the_shipped_operator_file_declares_the_standard_inventory() -> None:
    expected = {"jwt-signing-key": ("jwt", 30), "database-connection-string": ("postgres", 90),
                "redis-password": ("redis", 90), "session-encryption-key": ("random", 90),
                "azure-openai-api-key": ("key-slot", 90), "foundry-api-key": ("key-slot", 90),
                "api-gateway-client-secret": ("entra-client-secret", 90)}
    for name, (kind, interval) in expected.items():
        entry = SHIPPED.entry(name)
        assert entry is not None and (entry.rotator, entry.interval_days) == (kind, interval)
    for name in ("openai-api-key", "encryption-master-key"):  # no key-creation API; data re-encryption
        entry = SHIPPED.entry(name)
        assert entry is not None and entry.manual
    assert len(SHIPPED.secrets) == 9
    assert SHIPPED.tag_managed == ()  # nothing becomes managed by tags unless the operator says so


def test_jwt_new_expiry_is_now_plus_interval_plus_lead() -> None:
    policy = resolve_policy("jwt-signing-key", {}, SHIPPED, 30)
    assert policy is not None
    assert policy.new_expiry(NOW) == NOW + timedelta(days=60)


def test_names_are_looked_up_case_insensitively_as_key_vault_does() -> None:
    policy = resolve_policy("JWT-Signing-Key", {}, SHIPPED, 30)
    assert policy is not None and policy.kind == "jwt"


def test_a_downstream_secret_gets_its_target_from_the_operator_file_only() -> None:
    env = {"ROTATION_POSTGRES_HOST": "db.internal", "ROTATION_POSTGRES_DATABASE": "app"}
    config = OperatorConfig.load(None, env)
    policy = resolve_policy("database-connection-string", {}, config, 30)
    assert policy is not None and isinstance(policy.target, PostgresTarget)
    assert (policy.target.name, policy.target.host) == ("app-postgres", "db.internal")


def test_an_unset_placeholder_names_the_missing_app_setting_when_a_rotation_needs_the_target() -> None:
    """Status, plan and the sweep's listing still resolve the policy; the engine asks for the target
    (``OperatorConfig.target``) before a rotation or retirement and that names the missing setting."""
    operator = OperatorConfig.load(None, {})
    policy = resolve_policy("database-connection-string", {}, operator, 30)
    assert policy is not None and policy.target is not None and policy.target.unresolved
    with pytest.raises(ConfigurationError, match="ROTATION_POSTGRES_HOST"):
        operator.target(policy.target.name)


def test_an_unlisted_secret_is_not_managed_whatever_its_tags_say() -> None:
    tags = {"rotation-policy": "random", "rotation-interval-days": "14"}
    assert resolve_policy("partner-token", tags, SHIPPED, 30) is None


def test_a_secret_under_a_tag_managed_pattern_is_onboarded_by_tags() -> None:
    policy = resolve_policy("team-token", {"rotation-policy": "random", "rotation-interval-days": "14",
                                           "rotation-length": "48"}, TEAM, 30)
    assert policy is not None
    assert (policy.kind, policy.interval_days, policy.options["length"]) == ("random", 14, "48")
    assert policy.source == "tags"


@pytest.mark.parametrize("kind", ["postgres", "redis", "ldap"])
def test_a_tag_cannot_choose_a_rotator_with_a_downstream_or_an_unknown_one(kind: str) -> None:
    with pytest.raises(TagRefused, match="rotation-policy"):
        resolve_policy("team-db", {"rotation-policy": kind, "rotation-interval-days": "7"}, TEAM, 30)


@pytest.mark.parametrize("tag", ["rotation-nodes", "rotation-user", "rotation-roles", "rotation-owner-role",
                                 "rotation-probe", "rotation-admin-secret", "rotation-generator",
                                 "Rotation-Admin-Secret", "rotation-strategy"])
def test_a_tag_that_tries_to_declare_a_target_is_refused(tag: str) -> None:
    with pytest.raises(TagRefused, match=tag.lower()):
        resolve_policy("redis-password", {tag: "anything"}, SHIPPED, 30)
    with pytest.raises(TagRefused, match=tag.lower()):
        resolve_policy("team-token", {"rotation-policy": "random", "rotation-interval-days": "7", tag: "x"},
                       TEAM, 30)


def test_a_tag_cannot_change_the_rotator_of_a_listed_secret() -> None:
    with pytest.raises(TagRefused):
        resolve_policy("database-connection-string", {"rotation-policy": "random"}, SHIPPED, 30)
    with pytest.raises(TagRefused):
        resolve_policy("jwt-signing-key", {"rotation-policy": "manual"}, SHIPPED, 30)
    policy = resolve_policy("jwt-signing-key", {"rotation-policy": "jwt"}, SHIPPED, 30)
    assert policy is not None and policy.kind == "jwt"


def test_a_tag_may_move_the_interval_within_the_operator_limits_only() -> None:
    policy = resolve_policy("redis-password", {"rotation-interval-days": "45"}, SHIPPED, 30)
    assert policy is not None and policy.interval_days == 45 and policy.source == "operator-file+tags"
    with pytest.raises(TagRefused, match="between 7 and 365"):
        resolve_policy("redis-password", {"rotation-interval-days": "1"}, SHIPPED, 30)


def test_admin_secrets_never_become_tag_managed() -> None:
    config = with_patterns({"pattern": "*", "rotators": ["random"]})
    tags = {"rotation-policy": "random", "rotation-interval-days": "7"}
    assert resolve_policy("postgres-admin-connection-string", tags, config, 30) is None
    assert resolve_policy("anything-else", tags, config, 30) is not None


def test_a_manual_secret_generator_comes_from_the_operator_file_not_a_tag() -> None:
    with pytest.raises(TagRefused):
        resolve_policy("encryption-master-key", {"rotation-generator": "random"}, SHIPPED, 30)
    policy = resolve_policy("encryption-master-key", {}, SHIPPED, 30)
    assert policy is not None and policy.manual and policy.generator is None


def test_validity_inside_key_vaults_window_is_refused_as_a_rotation_loop() -> None:
    config = with_patterns({"pattern": "team-*", "rotators": ["random"], "validityDays": {"min": 31, "max": 90}})
    with pytest.raises(TagRefused, match="between 31 and 90"):
        resolve_policy("team-token", {"rotation-policy": "random", "rotation-interval-days": "7",
                                      "rotation-validity-days": "20"}, config, 30)
    # a lead shorter than Key Vault's window still keeps the new version outside it
    policy = resolve_policy("jwt-signing-key", {}, SHIPPED, 10)
    assert policy is not None and policy.validity_days is not None and policy.validity_days > 30


@pytest.mark.parametrize("bad", ["0", "-3", "abc", "99999"])
def test_bad_interval_is_a_clear_policy_error(bad: str) -> None:
    with pytest.raises(PolicyError):
        resolve_policy("team-token", {"rotation-policy": "random", "rotation-interval-days": bad}, TEAM, 30)


def test_record_tags_are_not_read_as_policy() -> None:
    policy = resolve_policy("session-encryption-key", {"rotated-id": "abc", "rotated-state": "retired"}, SHIPPED, 30)
    assert policy is not None and "id" not in policy.options and policy.source == "operator-file"


def test_due_rules() -> None:
    policy = resolve_policy("session-encryption-key", {}, SHIPPED, 30)
    assert policy is not None

    def props(exp: datetime | None) -> SecretProperties:
        return SecretProperties(name="s", version="v", expires_on=exp, created_on=NOW)

    assert policy.is_due(props(NOW + timedelta(days=40)), NOW, 30)[0] is False
    assert policy.is_due(props(NOW + timedelta(days=29)), NOW, 30)[0] is True
    assert policy.is_due(props(NOW - timedelta(days=1)), NOW, 30) == (True, "current version has expired")
    assert policy.is_due(props(None), NOW, 30) == (True, "managed secret has no expiry")


async def test_random_rotator_makes_standard_webhooks_keys_the_notifier_accepts() -> None:
    """encoding=whsec rotates a ping key (hmacSecret) into the form the notifier and the kits require."""
    from datetime import UTC, datetime

    from shared.adapters.notifiers.http_ping import whsec_key
    from shared.domain.errors import ConfigurationError
    from shared.rotators.base import RotationContext
    from shared.rotators.random_secret import RandomRotator, generate

    value = generate({"encoding": "whsec"})
    assert value.startswith("whsec_") and len(whsec_key(value)) == 32
    ctx = RotationContext(vault="kv", secret_name="backend-refresh-hmac-key", rotation_id="r", now=datetime.now(UTC),
                          current=None, options={"encoding": "whsec", "length": "48"}, secrets=MemorySecrets())
    new = await RandomRotator().create(ctx)
    await RandomRotator().verify(ctx, new)
    assert len(whsec_key(new.value)) == 48
    import pytest

    with pytest.raises(ConfigurationError, match="24 to 64"):
        generate({"encoding": "whsec", "length": "16"})
