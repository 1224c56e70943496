"""Policy: defaults for the standard inventory, onboarding by tags, timing rules."""

from datetime import UTC, datetime, timedelta

import pytest

from shared.errors import PolicyError
from shared.model import SecretProperties
from shared.policy import STANDARD_INVENTORY, resolve_policy

NOW = datetime(2026, 11, 28, tzinfo=UTC)


def test_standard_inventory_defaults_match_the_design() -> None:
    assert resolve_policy("jwt-signing-key", {}, 30).kind == "jwt"  # type: ignore[union-attr]
    assert resolve_policy("jwt-signing-key", {}, 30).interval_days == 30  # type: ignore[union-attr]
    assert resolve_policy("database-connection-string", {}, 30).interval_days == 90  # type: ignore[union-attr]
    assert resolve_policy("redis-password", {}, 30).kind == "redis"  # type: ignore[union-attr]
    assert resolve_policy("session-encryption-key", {}, 30).kind == "random"  # type: ignore[union-attr]
    for name in ("openai-api-key", "azure-openai-api-key", "foundry-api-key", "api-gateway-client-secret",
                 "encryption-master-key"):
        policy = resolve_policy(name, {}, 30)
        assert policy is not None and policy.manual
    assert len(STANDARD_INVENTORY) == 9


def test_jwt_new_expiry_is_now_plus_interval_plus_lead() -> None:
    policy = resolve_policy("jwt-signing-key", {}, 30)
    assert policy is not None
    assert policy.new_expiry(NOW) == NOW + timedelta(days=60)


def test_unknown_secret_without_tags_is_not_managed() -> None:
    assert resolve_policy("some-other-secret", {"owner": "team-a"}, 30) is None


def test_a_new_secret_is_onboarded_by_tags() -> None:
    policy = resolve_policy("partner-token", {"rotation-policy": "random", "rotation-interval-days": "14",
                                              "rotation-length": "48"}, 30)
    assert policy is not None
    assert (policy.kind, policy.interval_days, policy.options["length"]) == ("random", 14, "48")
    assert policy.source == "tags"


def test_a_default_is_overridden_by_tags() -> None:
    policy = resolve_policy("redis-password", {"rotation-interval-days": "45"}, 30)
    assert policy is not None and policy.interval_days == 45 and policy.source == "default+tags"


def test_tag_can_make_a_default_secret_manual() -> None:
    policy = resolve_policy("jwt-signing-key", {"rotation-policy": "manual"}, 30)
    assert policy is not None and policy.manual


def test_validity_inside_the_lead_window_is_refused_as_a_rotation_loop() -> None:
    with pytest.raises(PolicyError, match="rotation loop"):
        resolve_policy("partner-token", {"rotation-policy": "random", "rotation-interval-days": "7",
                                         "rotation-validity-days": "20"}, 30)


@pytest.mark.parametrize("bad", ["0", "-3", "abc", "99999"])
def test_bad_interval_is_a_clear_policy_error(bad: str) -> None:
    with pytest.raises(PolicyError):
        resolve_policy("partner-token", {"rotation-policy": "random", "rotation-interval-days": bad}, 30)


def test_unknown_kind_is_refused() -> None:
    with pytest.raises(PolicyError, match="unknown rotation policy"):
        resolve_policy("x", {"rotation-policy": "ldap", "rotation-interval-days": "7"}, 30)


def test_record_tags_are_not_read_as_policy() -> None:
    policy = resolve_policy("session-encryption-key", {"rotated-id": "abc", "rotated-state": "retired"}, 30)
    assert policy is not None and "id" not in policy.options and policy.source == "default"


def test_due_rules() -> None:
    policy = resolve_policy("session-encryption-key", {}, 30)
    assert policy is not None
    def props(exp: datetime | None) -> SecretProperties:
        return SecretProperties(name="s", version="v", expires_on=exp, created_on=NOW)
    assert policy.is_due(props(NOW + timedelta(days=40)), NOW, 30)[0] is False
    assert policy.is_due(props(NOW + timedelta(days=29)), NOW, 30)[0] is True
    assert policy.is_due(props(NOW - timedelta(days=1)), NOW, 30) == (True, "current version has expired")
    assert policy.is_due(props(None), NOW, 30) == (True, "managed secret has no expiry")
