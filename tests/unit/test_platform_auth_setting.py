"""WEBSITE_AUTH_ENABLED: the one signal that App Service Authentication is in
front of the app, read once from the environment (never from a request)."""

from __future__ import annotations

import pytest

from shared.config.settings import Settings


@pytest.mark.parametrize("raw", ["True", "true", " TRUE "])
def test_app_service_authentication_counts_as_on_only_when_the_platform_says_true(raw: str) -> None:
    assert Settings.from_env({"WEBSITE_AUTH_ENABLED": raw}).platform_auth_enabled is True


@pytest.mark.parametrize("env", [{}, {"WEBSITE_AUTH_ENABLED": ""}, {"WEBSITE_AUTH_ENABLED": "False"},
                                 {"WEBSITE_AUTH_ENABLED": "1"}, {"WEBSITE_AUTH_ENABLED": "yes"},
                                 {"WEBSITE_AUTH_ENABLED": "truee"}])
def test_anything_but_true_leaves_the_principal_headers_untrusted(env: dict[str, str]) -> None:
    assert Settings.from_env(env).platform_auth_enabled is False


def test_the_required_role_is_read_independently_of_authentication() -> None:
    """The misconfiguration (role without authentication) must stay visible to
    the HTTP routes, which refuse it; settings do not hide it."""
    s = Settings.from_env({"ROTATION_REQUIRED_ROLE": "Rotation.Operator"})
    assert s.required_role == "Rotation.Operator" and s.platform_auth_enabled is False
