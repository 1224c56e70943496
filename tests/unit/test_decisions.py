"""The engine's pure decisions (shared/service/decisions.py): a fixed ``now``, no I/O, no engine."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shared.domain.errors import ManualOnly, OverlapActive
from shared.domain.model import SecretProperties
from shared.domain.policy import Policy
from shared.domain.ports import Consumer
from shared.domain.record import RotationRequest, State, Tag, Trigger
from shared.service.decisions import Decision, Readiness, RetirementRules, decide, extended, has_work, retire_ready

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
LEAD_DAYS = 30
MANAGED = Policy(secret_name="s", kind="random", interval_days=30, validity_days=60)
MANUAL = Policy(secret_name="s", kind="manual", interval_days=None, validity_days=None, generator="random")


def props(*, days_left: float | None = 100, tags: dict[str, str] | None = None, version: str = "v1",
          created_on: datetime | None = None) -> SecretProperties:
    expires_on = NOW + timedelta(days=days_left) if days_left is not None else None
    return SecretProperties(name="s", version=version, expires_on=expires_on, created_on=created_on,
                            tags=tags or {})


def request(trigger: Trigger = Trigger.SWEEP, **more: Any) -> RotationRequest:
    return RotationRequest("kv-test", "s", trigger, **more)


def decided(req: RotationRequest, current: SecretProperties, policy: Policy = MANAGED,
            kind: str | None = "random") -> Decision:
    return decide(req, policy, current, NOW, LEAD_DAYS, kind=kind)


# ------------------------------------------------------------------ decide


def test_a_manual_only_secret_asked_without_force_is_refused() -> None:
    with pytest.raises(ManualOnly, match="use force"):
        decided(request(Trigger.HTTP), props(), MANUAL)


def test_a_forced_manual_only_secret_without_a_registered_generator_is_refused_naming_the_provider_route() -> None:
    with pytest.raises(ManualOnly, match="names no generator"):
        decided(request(Trigger.HTTP, force=True), props(), MANUAL, kind=None)


def test_a_forced_manual_only_secret_with_its_generator_rotates() -> None:
    assert decided(request(Trigger.HTTP, force=True), props(), MANUAL) == Decision(True, "forced")


def test_an_event_naming_another_version_is_a_duplicate() -> None:
    rotate, why = decided(request(Trigger.NEAR_EXPIRY, event_version="v0"), props(days_left=20))
    assert not rotate and why.startswith("duplicate") and "serves v1" in why


def test_an_event_naming_the_current_version_in_other_case_is_not_a_duplicate() -> None:
    rotate, why = decided(request(Trigger.NEAR_EXPIRY, event_version="V1"), props(days_left=20))
    assert rotate and why == "Key Vault reported SecretNearExpiry for the current version"


def test_an_expected_version_that_is_no_longer_served_skips() -> None:
    rotate, why = decided(request(Trigger.HTTP, expected_version="v0"), props())
    assert not rotate and why == "already rotated: the vault serves v1, not v0"


def test_a_rotation_still_in_its_overlap_is_not_rotated_again() -> None:
    current = props(tags={Tag.STATE: State.NOTIFIED})
    assert decided(request(Trigger.HTTP), current) == Decision(
        False, "the previous rotation is still in its overlap (retirement pending)")


def test_force_during_the_overlap_is_refused_because_it_would_invalidate_a_credential_in_use() -> None:
    with pytest.raises(OverlapActive, match="emergency"):
        decided(request(Trigger.HTTP, force=True), props(tags={Tag.STATE: State.COMMITTED}))


def test_an_emergency_rotates_even_during_the_overlap() -> None:
    current = props(tags={Tag.STATE: State.NOTIFIED})
    assert decided(request(Trigger.EMERGENCY), current) == Decision(True, "emergency")


def test_a_retired_rotation_does_not_hold_the_next_one_back() -> None:
    assert decided(request(Trigger.HTTP), props(tags={Tag.STATE: State.RETIRED})) == Decision(True, "requested")


def test_an_http_request_rotates_whatever_the_expiry() -> None:
    assert decided(request(Trigger.HTTP), props(days_left=3000)) == Decision(True, "requested")


@pytest.mark.parametrize(
    ("days_left", "rotates", "why"),
    [
        (None, True, "managed secret has no expiry"),
        (-1, True, "current version has expired"),
        (LEAD_DAYS - 1, True, "current version is inside the near-expiry window"),
        (LEAD_DAYS + 1, False, "not due until 2026-11-29T12:00:00+00:00"),
    ],
)
def test_the_sweep_rotates_what_its_policy_finds_due(days_left: float | None, rotates: bool, why: str) -> None:
    assert decided(request(), props(days_left=days_left)) == Decision(rotates, why)


def test_the_sweep_never_rotates_a_manual_only_secret_it_is_allowed_to_see() -> None:
    with pytest.raises(ManualOnly):
        decided(request(), props(days_left=-1), MANUAL)


def test_an_event_for_a_version_whose_expiry_was_extended_since_is_moot() -> None:
    req = request(Trigger.NEAR_EXPIRY, event_version="v1", event_expires_on=NOW + timedelta(days=30))
    rotate, why = decided(req, props(days_left=200))
    assert not rotate and why.startswith("expiry was extended from")


def test_the_decision_moves_with_now_and_the_lead_days_given() -> None:
    current = props(days_left=40)
    assert not decide(request(), MANAGED, current, NOW, 30, kind="random").rotate
    assert decide(request(), MANAGED, current, NOW + timedelta(days=11), 30, kind="random").rotate
    assert decide(request(), MANAGED, current, NOW, 45, kind="random").rotate


# ------------------------------------------------------------------ extended


def test_an_event_for_a_version_without_expiry_is_never_moot() -> None:
    assert extended(request(Trigger.NEAR_EXPIRY), None, NOW, LEAD_DAYS) is None


def test_an_event_half_an_hour_early_is_clock_skew_not_an_extension() -> None:
    expires_on = NOW + timedelta(days=LEAD_DAYS, minutes=30)
    assert extended(request(Trigger.NEAR_EXPIRY), expires_on, NOW, LEAD_DAYS) is None


def test_an_event_raised_before_the_window_for_an_unchanged_expiry_is_not_due() -> None:
    expires_on = NOW + timedelta(days=200)
    why = extended(request(Trigger.NEAR_EXPIRY, event_expires_on=expires_on), expires_on, NOW, LEAD_DAYS)
    assert why is not None and "arrived before the near-expiry window" in why


def test_without_the_events_expiry_the_vaults_alone_tells_the_extension() -> None:
    why = extended(request(Trigger.NEAR_EXPIRY), NOW + timedelta(days=200), NOW, LEAD_DAYS)
    assert why is not None and why.startswith("expiry was extended to")


# ------------------------------------------------------------------ retire_ready

SERVICE = Consumer("svc", "https://svc.example/rotated", max_cache_seconds=600, acknowledges="service")
INSTANCE = Consumer("app", "https://app.example/rotated", max_cache_seconds=600, acknowledges="instance")


def rules(*consumers: Consumer, overlap: timedelta = timedelta(0), grace_hours: float = 24,
          retire_when: str = "acknowledged_or_grace") -> RetirementRules:
    return RetirementRules(overlap=overlap, grace=timedelta(hours=grace_hours), retire_when=retire_when,
                           consumers=consumers)


def record(*, acks: str | None = None, pending: str | None = None, at: datetime = NOW) -> dict[str, str]:
    tags = {Tag.STATE: str(State.NOTIFIED), Tag.AT: at.isoformat(timespec="seconds")}
    if acks is not None:
        tags[Tag.ACKS] = acks
    if pending is not None:
        tags[Tag.PENDING] = pending
    return tags


def test_retirement_waits_for_the_rotators_own_overlap_even_when_everyone_acknowledged() -> None:
    ready = retire_ready(props(), record(acks="1/1"), NOW, rules(SERVICE, overlap=timedelta(hours=1)))
    assert ready == Readiness(False, "retirement waits for the overlap until 2026-11-28T13:00:00+00:00")


def test_a_service_wide_acknowledgement_from_every_consumer_retires_at_once() -> None:
    assert retire_ready(props(), record(acks="1/1"), NOW, rules(SERVICE)) == Readiness(
        True, "every consumer acknowledged")


def test_a_per_instance_acknowledgement_waits_for_the_consumers_cache_age() -> None:
    tags = record(acks="2/2")
    ready, why = retire_ready(props(), tags, NOW, rules(SERVICE, INSTANCE))
    assert not ready and "cache age until 2026-11-28T12:10:00+00:00" in why
    assert retire_ready(props(), tags, NOW + timedelta(minutes=10), rules(SERVICE, INSTANCE)).ready


def test_a_missing_acknowledgement_waits_for_the_grace_period() -> None:
    tags = record(acks="1/2", pending="app")
    ready, why = retire_ready(props(), tags, NOW + timedelta(hours=23), rules(SERVICE, INSTANCE))
    assert not ready and "grace period until 2026-11-29T12:00:00+00:00" in why
    assert retire_ready(props(), tags, NOW + timedelta(hours=24), rules(SERVICE, INSTANCE)) == Readiness(
        True, "grace period ended")


def test_without_consumers_nobody_can_acknowledge_and_only_the_grace_period_retires() -> None:
    tags = record(acks="0/0")
    assert not retire_ready(props(), tags, NOW + timedelta(hours=1), rules()).ready
    assert retire_ready(props(), tags, NOW + timedelta(hours=24), rules()).ready


def test_retire_when_grace_ignores_acknowledgements() -> None:
    tags = record(acks="1/1")
    assert not retire_ready(props(), tags, NOW, rules(SERVICE, retire_when="grace")).ready
    assert retire_ready(props(), tags, NOW + timedelta(hours=24), rules(SERVICE, retire_when="grace")).ready


def test_the_grace_period_is_never_shorter_than_a_consumers_cache_age() -> None:
    slow = Consumer("slow", "https://slow.example/rotated", max_cache_seconds=48 * 3600)
    tags = record(acks="0/1", pending="slow")
    assert not retire_ready(props(), tags, NOW + timedelta(hours=24), rules(slow)).ready
    assert retire_ready(props(), tags, NOW + timedelta(hours=48), rules(slow)).ready


def test_without_a_recorded_rotation_time_the_versions_creation_counts() -> None:
    tags = {Tag.STATE: str(State.NOTIFIED), Tag.ACKS: "0/0"}
    created = NOW - timedelta(hours=25)
    assert retire_ready(props(created_on=created), tags, NOW, rules()).ready
    assert not retire_ready(props(created_on=None), tags, NOW, rules()).ready  # now itself: nothing has passed


# ------------------------------------------------------------------ has_work


def test_a_version_without_an_unfinished_rotation_has_no_work() -> None:
    assert not has_work(props(), NOW, rules())
    assert not has_work(props(tags={Tag.STATE: State.RETIRED}), NOW, rules())


def test_a_committed_rotation_has_work_to_notify() -> None:
    assert has_work(props(tags={Tag.STATE: State.COMMITTED}), NOW, rules())


def test_a_retired_rotation_whose_replaced_version_is_still_enabled_has_work() -> None:
    assert has_work(props(tags={Tag.STATE: State.RETIRED, Tag.REPLACES: "v0"}), NOW, None)


def test_consumers_still_to_ping_are_work() -> None:
    assert has_work(props(tags=record(acks="0/1", pending="app")), NOW, rules(INSTANCE))


def test_a_notified_rotation_has_work_only_once_its_retirement_is_ready() -> None:
    version = props(tags=record(acks="0/0"))
    assert not has_work(version, NOW, rules())
    assert has_work(version, NOW + timedelta(hours=24), rules())


def test_without_a_rotator_a_notified_rotation_has_nothing_that_could_progress() -> None:
    assert not has_work(props(tags=record(acks="0/0")), NOW + timedelta(days=365), None)
