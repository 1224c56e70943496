"""The rotator registry and the port's optional parts: record, overlap, generator flag."""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from shared.config.operator_file import GENERATORS, LOCAL_ROTATORS, ROTATORS, TAG_OPTIONS, TARGET_KINDS
from shared.config.settings import Settings
from shared.domain.errors import ConfigurationError
from shared.domain.model import NewSecret
from shared.domain.policy import carried_tags, rotator_record
from shared.rotators.base import Applied, normalise_applied
from shared.rotators.registry import REGISTRY, Deps, build_rotators


def test_every_registered_kind_builds_a_rotator_implementing_the_port() -> None:
    """``build_rotators`` returns ``dict[str, Rotator]``: mypy checks each factory against the port;
    this checks at run time that every kind builds and declares its overlap and record size."""
    rotators = build_rotators(Deps(settings=Settings(), credential=lambda: pytest.fail("no credential needed")))
    assert set(rotators) == set(REGISTRY)
    for kind, rotator in rotators.items():
        assert all(callable(getattr(rotator, step)) for step in ("create", "apply", "verify", "retire")), kind
        assert rotator.retire_overlap({}) >= timedelta(0)
        assert rotator.record_tags >= 0


def test_building_the_rotators_imports_no_arm_sdk_for_cold_start() -> None:
    code = ("import sys\nfrom shared.rotators.registry import Deps, build_rotators\n"
            "from shared.config.settings import Settings\n"
            "build_rotators(Deps(settings=Settings(), credential=lambda: None))\n"
            "print(sorted(m for m in sys.modules if m.startswith(('azure.mgmt', 'msgraph'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[2])
    assert out.stdout.strip() == "[]"


def test_the_operator_vocabulary_comes_from_the_registry() -> None:
    assert set(REGISTRY) | {"manual"} == ROTATORS
    assert {"random", "jwt"} == LOCAL_ROTATORS, "only rotators without a target may be tag-managed"
    assert GENERATORS <= LOCAL_ROTATORS, "a generator for force must need no target"
    assert set(TAG_OPTIONS) == LOCAL_ROTATORS
    assert {"postgres", "redis", "cognitive-services", "azure-redis", "azure-managed-redis",
                            "entra-application"} == TARGET_KINDS


def test_jwt_declares_its_overlap_and_the_others_none() -> None:
    rotators = build_rotators(Deps(settings=Settings(jwt_max_token_lifetime_seconds=600),
                                   credential=lambda: pytest.fail("no credential needed")))
    assert rotators["jwt"].retire_overlap({}) == timedelta(minutes=10)
    assert all(r.retire_overlap({}) == timedelta(0) for k, r in rotators.items() if k != "jwt")


NEW = NewSecret(value="provider-generated-key-0123456789", content_type="text/plain")


def test_a_provider_value_and_its_record_come_back_from_apply() -> None:
    placeholder = NewSecret(value="", content_type="text/plain")
    value, record = normalise_applied(Applied(record={"slot": "Key2"}, new=NEW), placeholder, 1)
    assert value is NEW and record == {"slot": "Key2"}
    assert normalise_applied(None, NEW, 0) == (NEW, {})
    assert normalise_applied({"key-id": "abc"}, NEW, 1) == (NEW, {"key-id": "abc"})


@pytest.mark.parametrize(("result", "budget", "why"), [
    ({"slot": "Key2", "extra": "x"}, 1, "more than the 1"),
    ({"Slot": "Key2"}, 1, "record key"),
    ({"slot": "x" * 257}, 1, "at most 256"),
    ({"slot": NEW.value}, 1, "secret material"),
    ({"slot": NEW.value[:12]}, 1, "secret material"),
])
def test_a_record_that_is_too_big_badly_named_or_carries_the_value_is_refused(
        result: dict[str, str], budget: int, why: str) -> None:
    with pytest.raises(ConfigurationError, match=why):
        normalise_applied(result, NEW, budget)


def test_a_rotator_that_generates_nothing_cannot_commit_an_empty_value() -> None:
    with pytest.raises(ConfigurationError, match="no value"):
        normalise_applied(None, NewSecret(value="", content_type="text/plain"), 0)


def test_the_record_is_not_carried_to_the_next_version_and_reads_back_without_prefix() -> None:
    tags = {"team": "a", "rotator-slot": "Key2", "rotated-id": "r1", "Rotator-Key-Id": "k"}
    assert carried_tags(tags) == {"team": "a"}
    assert rotator_record(tags) == {"slot": "Key2"}
