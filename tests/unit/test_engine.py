"""The rotation engine's state machine, against fakes of our own ports."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shared.config.operator_file import OperatorConfig
from shared.config.settings import Settings
from shared.domain.errors import LeaseLost, ManualOnly, NotManaged, PolicyError, Superseded
from shared.domain.ports import Consumer
from shared.domain.record import RotationRequest, Step, Tag, Trigger
from shared.rotators.jwt_key import JwtRotator
from shared.rotators.random_secret import RandomRotator
from shared.service.engine import RotationEngine
from tests.support.operator_files import base_config
from tests.unit.fakes import FakeLocker, FakeStore, RecordingNotifier

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
OPERATOR = OperatorConfig.from_mapping(base_config())


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now


class Crash(Exception):
    pass


def make_engine(store: FakeStore, *, clock: Clock | None = None, notifier: RecordingNotifier | None = None,
                consumers: list[Consumer] | None = None, crash_after: Step | None = None,
                grace_hours: float = 24.0, locker: FakeLocker | None = None) -> RotationEngine:
    settings = Settings(allowed_vaults=("kv-test",), grace_period_hours=grace_hours)

    async def after_step(step: Step, req: RotationRequest) -> None:
        if step == crash_after:
            raise Crash(step)

    return RotationEngine(
        settings=settings,
        operator=OPERATOR,
        stores=lambda vault: store,
        locker=locker or FakeLocker(),
        rotators={"random": RandomRotator(), "jwt": JwtRotator(timedelta(hours=1))},
        notifier=notifier,
        consumers_for=lambda name, tag: consumers or [],
        clock=clock or Clock(),
        after_step=after_step if crash_after else None,
    )


def event(store: FakeStore, name: str) -> RotationRequest:
    return RotationRequest("kv-test", name, Trigger.NEAR_EXPIRY,
                           event_version=store.versions[name][-1].version)


async def test_near_expiry_event_for_the_current_version_rotates_once() -> None:
    store = FakeStore()
    store.seed("session-encryption-key", "old", expires_on=NOW + timedelta(days=30))
    engine = make_engine(store)
    req = event(store, "session-encryption-key")
    outcome = await engine.run(req)
    assert outcome.status == "rotated"
    assert len(store.versions["session-encryption-key"]) == 2
    again = await engine.run(req)
    assert again.status == "skipped" and "duplicate" in again.reason
    assert len(store.versions["session-encryption-key"]) == 2


async def test_new_version_carries_expiry_not_before_content_type_and_a_record_without_the_value() -> None:
    store = FakeStore()
    store.seed("jwt-signing-key", "old", tags={"owner": "platform"}, expires_on=NOW + timedelta(days=30))
    outcome = await make_engine(store).run(event(store, "jwt-signing-key"))
    new = store.versions["jwt-signing-key"][-1]
    assert new.properties.expires_on == NOW + timedelta(days=60)
    assert new.properties.not_before == NOW
    assert new.properties.content_type and "base64url" in new.properties.content_type
    tags = new.properties.tags
    assert tags["owner"] == "platform"
    assert tags[Tag.ID] == outcome.rotation_id and tags[Tag.BY] == "jwt"
    assert tags[Tag.FROM] == store.versions["jwt-signing-key"][0].version
    assert tags[Tag.TRIGGER] == "SecretNearExpiry"
    assert all(new.value not in v for v in tags.values())


async def test_event_naming_an_older_version_is_a_replay_and_writes_nothing() -> None:
    store = FakeStore()
    first = store.seed("session-encryption-key", "v1")
    store.seed("session-encryption-key", "v2", expires_on=NOW + timedelta(days=80))
    outcome = await make_engine(store).run(
        RotationRequest("kv-test", "session-encryption-key", Trigger.NEAR_EXPIRY, event_version=first.version))
    assert outcome.status == "skipped"
    assert store.writes == 0


async def test_manual_only_secret_is_refused_without_force_and_rotated_with_it() -> None:
    store = FakeStore()
    store.seed("openai-api-key", "sk-old", tags={"rotation-policy": "manual"})
    engine = make_engine(store)
    with pytest.raises(ManualOnly):
        await engine.run(RotationRequest("kv-test", "openai-api-key", Trigger.HTTP))
    assert store.writes == 0


async def test_unmanaged_secret_is_not_touched() -> None:
    store = FakeStore()
    store.seed("random-thing", "x")
    with pytest.raises(NotManaged):
        await make_engine(store).run(RotationRequest("kv-test", "random-thing", Trigger.HTTP))
    assert store.writes == 0


@pytest.mark.parametrize("step", [Step.CREATE, Step.APPLY, Step.VERIFY, Step.COMMIT, Step.NOTIFY])
async def test_crash_after_any_step_then_redelivery_converges_on_exactly_one_new_version(step: Step) -> None:
    store = FakeStore()
    store.seed("session-encryption-key", "old", expires_on=NOW + timedelta(days=30))
    req = event(store, "session-encryption-key")
    notifier = RecordingNotifier()
    consumers = [Consumer("backend", "https://backend.example/refresh")]
    with pytest.raises(Crash):
        await make_engine(store, crash_after=step, notifier=notifier, consumers=consumers).run(req)
    outcome = await make_engine(store, notifier=notifier, consumers=consumers).run(req)
    assert len(store.versions["session-encryption-key"]) == 2
    assert outcome.status in {"rotated", "completed", "skipped"}
    latest = store.versions["session-encryption-key"][-1]
    assert latest.properties.tags[Tag.STATE] in {"notified", "retired"}
    assert notifier.notices and notifier.notices[-1].version == latest.version


async def test_lost_lease_before_commit_writes_nothing() -> None:
    store = FakeStore()
    store.seed("session-encryption-key", "old", expires_on=NOW + timedelta(days=30))
    locker = FakeLocker()
    locker.lease.lost = True
    with pytest.raises(LeaseLost):
        await make_engine(store, locker=locker).run(event(store, "session-encryption-key"))
    assert store.writes == 0


async def test_retirement_waits_for_acknowledgement_and_happens_when_all_consumers_acknowledged() -> None:
    store = FakeStore()
    store.seed("session-encryption-key", "old", expires_on=NOW + timedelta(days=30))
    consumers = [Consumer("backend", "https://b/refresh", acknowledges="service"),
                 Consumer("bridge", "https://c/refresh", acknowledges="service")]
    outcome = await make_engine(store, notifier=RecordingNotifier(ok=[True, False]), consumers=consumers).run(
        event(store, "session-encryption-key"))
    assert outcome.state == "notified"
    latest = store.versions["session-encryption-key"][-1].properties.tags
    assert latest[Tag.PENDING] == "bridge" and latest[Tag.ACKS] == "1/2"
    # The sweep pings the consumer that has not acknowledged; once it does, retirement runs.
    again = await make_engine(store, notifier=RecordingNotifier(ok=True), consumers=consumers).complete_pending(
        "kv-test", "session-encryption-key")
    assert again.state == "retired"
    assert len(store.versions["session-encryption-key"]) == 2


async def test_an_acknowledgement_from_one_instance_retires_only_after_the_consumers_cache_age() -> None:
    """A ping reaches one replica; the others may serve their cached copy for up to maxCacheSeconds."""
    store = FakeStore()
    store.seed("session-encryption-key", "old", expires_on=NOW + timedelta(days=30))
    clock = Clock()
    consumers = [Consumer("backend", "https://b/refresh", max_cache_seconds=600),
                 Consumer("bridge", "https://c/refresh", max_cache_seconds=300, acknowledges="service")]
    engine = make_engine(store, clock=clock, notifier=RecordingNotifier(ok=True), consumers=consumers)
    outcome = await engine.run(event(store, "session-encryption-key"))
    assert outcome.state == "notified" and "cache age" in outcome.reason
    clock.now = NOW + timedelta(seconds=599)
    assert (await engine.complete_pending("kv-test", "session-encryption-key")).state == "notified"
    clock.now = NOW + timedelta(seconds=600)
    assert (await engine.complete_pending("kv-test", "session-encryption-key")).state == "retired"


async def test_the_grace_period_never_retires_before_the_longest_cache_age() -> None:
    store = FakeStore()
    store.seed("session-encryption-key", "old", expires_on=NOW + timedelta(days=30))
    clock = Clock()
    consumers = [Consumer("backend", "https://b/refresh", max_cache_seconds=7200, acknowledges="service")]
    engine = make_engine(store, clock=clock, notifier=RecordingNotifier(ok=False), consumers=consumers,
                         grace_hours=1.0)
    await engine.run(event(store, "session-encryption-key"))
    clock.now = NOW + timedelta(hours=1, seconds=1)
    assert (await engine.complete_pending("kv-test", "session-encryption-key")).state == "notified"
    clock.now = NOW + timedelta(hours=2)
    assert (await engine.complete_pending("kv-test", "session-encryption-key")).state == "retired"


async def test_without_consumers_retirement_waits_for_the_grace_period() -> None:
    store = FakeStore()
    store.seed("session-encryption-key", "old", expires_on=NOW + timedelta(days=30))
    clock = Clock()
    outcome = await make_engine(store, clock=clock).run(event(store, "session-encryption-key"))
    assert outcome.state == "notified" and "grace" in outcome.reason
    clock.now = NOW + timedelta(hours=25)
    done = await make_engine(store, clock=clock).complete_pending("kv-test", "session-encryption-key")
    assert done.state == "retired"


async def test_jwt_raw_previous_key_stays_enabled_for_the_token_lifetime_then_is_disabled() -> None:
    store = FakeStore()
    store.seed("jwt-signing-key", "old", expires_on=NOW + timedelta(days=30))
    clock = Clock()
    consumers = [Consumer("bridge", "https://c/refresh")]
    notifier = RecordingNotifier(ok=True)
    await make_engine(store, clock=clock, notifier=notifier, consumers=consumers).run(event(store, "jwt-signing-key"))
    assert store.versions["jwt-signing-key"][0].properties.enabled  # acknowledged, but tokens still in flight
    clock.now = NOW + timedelta(hours=1, seconds=1)
    done = await make_engine(store, clock=clock, notifier=notifier, consumers=consumers).complete_pending(
        "kv-test", "jwt-signing-key")
    assert done.state == "retired"
    assert not store.versions["jwt-signing-key"][0].properties.enabled


async def test_a_second_rotation_waits_while_the_previous_one_is_in_its_overlap() -> None:
    store = FakeStore()
    store.seed("session-encryption-key", "old", expires_on=NOW + timedelta(days=30))
    engine = make_engine(store)
    await engine.run(RotationRequest("kv-test", "session-encryption-key", Trigger.HTTP))
    second = await engine.run(RotationRequest("kv-test", "session-encryption-key", Trigger.HTTP))
    assert second.status != "rotated"
    assert len(store.versions["session-encryption-key"]) == 2


async def test_dry_run_plans_without_writing_or_revealing_a_value() -> None:
    store = FakeStore()
    store.seed("session-encryption-key", "old-value-xyz", expires_on=NOW + timedelta(days=30))
    outcome = await make_engine(store).run(
        RotationRequest("kv-test", "session-encryption-key", Trigger.HTTP, dry_run=True))
    assert outcome.status == "planned" and outcome.plan is not None
    assert store.writes == 0
    assert "old-value-xyz" not in repr(outcome.to_dict())


async def test_too_many_tags_to_record_a_rotation_is_refused_before_anything_changes() -> None:
    store = FakeStore()
    store.seed("session-encryption-key", "old", tags={f"t{i}": "x" for i in range(12)})
    with pytest.raises(PolicyError, match="tags"):
        await make_engine(store).run(RotationRequest("kv-test", "session-encryption-key", Trigger.HTTP))
    assert store.writes == 0


# ------------------------------------------------------------------ fencing (issue 11)


@pytest.mark.parametrize("step", [Step.CREATE, Step.APPLY, Step.VERIFY])
async def test_a_worker_that_lost_its_lease_before_a_side_effect_writes_nothing(step: Step) -> None:
    store = FakeStore()
    store.seed("session-encryption-key", "old", expires_on=NOW + timedelta(days=1))
    locker = FakeLocker()

    async def lose(at: Step, req: RotationRequest) -> None:
        if at == step:
            locker.lease.lost = True  # frozen past the lease: another worker holds it now

    engine = make_engine(store, locker=locker)
    engine._after_step = lose
    with pytest.raises(LeaseLost):
        await engine.run(event(store, "session-encryption-key"))
    assert store.writes == 0


async def test_a_worker_whose_secret_was_rotated_meanwhile_stops_at_its_fence_and_writes_nothing() -> None:
    """Even when the lease still answers (a lapsed lease nobody re-acquired renews fine), a served version that
    changed under the worker stops it before the vault write."""
    store = FakeStore()
    store.seed("session-encryption-key", "old", expires_on=NOW + timedelta(days=1))

    async def someone_else_commits(at: Step, req: RotationRequest) -> None:
        if at == Step.VERIFY:
            store.seed("session-encryption-key", "committed-by-another-worker")

    engine = make_engine(store)
    engine._after_step = someone_else_commits
    with pytest.raises(Superseded):
        await engine.run(event(store, "session-encryption-key"))
    assert store.all_values("session-encryption-key") == ["old", "committed-by-another-worker"]


@pytest.mark.parametrize(
    ("days_left", "reported_days", "rotates", "reason"),
    [
        (30, 30, True, "Key Vault reported"),  # the event at the edge of Key Vault's window
        (30 + 1 / 48, 30, True, "Key Vault reported"),  # 30 minutes early: clock skew, not an extension
        (200, 30, False, "expiry was extended from"),  # PATCHed after the event was raised
        (200, None, False, "expiry was extended to"),  # no EXP in the event: the vault's state alone
        (200, 200, False, "arrived before the near-expiry window"),  # a hand-made event, far too early
        (200, 250, False, "arrived before the near-expiry window"),  # shortened since, still not due
        (25, 10, True, "Key Vault reported"),  # extended, but still inside the window
    ],
)
async def test_an_event_for_the_current_version_is_decided_on_the_vaults_current_expiry(
        days_left: float, reported_days: float | None, rotates: bool, reason: str) -> None:
    store = FakeStore()
    store.seed("session-encryption-key", "old", expires_on=NOW + timedelta(days=days_left))
    req = event(store, "session-encryption-key")
    reported = NOW + timedelta(days=reported_days) if reported_days is not None else None
    assert req.event_version is not None
    req = RotationRequest(req.vault, req.secret_name, req.trigger, event_version=req.event_version.upper(),
                          event_expires_on=reported)
    outcome = await make_engine(store).run(req)
    assert (outcome.status == "rotated") is rotates, outcome
    if not rotates:
        assert reason in outcome.reason
    assert len(store.versions["session-encryption-key"]) == (2 if rotates else 1)


async def test_a_version_committed_concurrently_right_after_ours_is_detected_and_the_served_one_is_kept() -> None:
    """The residual window between the last fence and the write: the engine reads the served version back after
    its commit while its pings are already out and, if another worker's version is served, drops their
    acknowledgements and retires nothing on the strength of its own version."""

    class RacingStore(FakeStore):
        raced = False

        async def set(self, name: str, value: str, **kwargs: Any) -> Any:
            props = await super().set(name, value, **kwargs)
            if not self.raced:
                self.raced = True
                self.seed(name, "committed-by-another-worker")
            return props

        async def get(self, name: str, version: str | None = None) -> Any:
            await asyncio.sleep(0.01)  # a real round trip: the pings leave meanwhile
            return await super().get(name, version)

    store = RacingStore()
    store.seed("session-encryption-key", "old", expires_on=NOW + timedelta(days=1))
    notifier = RecordingNotifier(ok=True)
    consumers = [Consumer("backend", "https://b/refresh", acknowledges="service")]
    outcome = await make_engine(store, notifier=notifier, consumers=consumers).run(
        event(store, "session-encryption-key"))
    assert outcome.status == "skipped" and "superseded" in outcome.reason
    versions = store.versions["session-encryption-key"]
    assert versions[-1].value == "committed-by-another-worker"
    assert all(v.properties.enabled for v in versions)  # acknowledged or not, nothing was retired
    ours = next(v for v in versions if v.value not in {"old", "committed-by-another-worker"})
    assert Tag.STATE not in ours.properties.tags or ours.properties.tags[Tag.STATE] == "committed"


# ------------------------------------------------------------------ overlapped round trips (issue 15)


class JournalStore(FakeStore):
    """A store whose reads take a moment (a round trip) and are written down in a journal shared with the locker."""

    def __init__(self, journal: list[str]) -> None:
        super().__init__()
        self.journal = journal

    async def get(self, name: str, version: str | None = None) -> Any:
        self.journal.append(f"get {name}")
        await asyncio.sleep(0.01)
        return await super().get(name, version)


class JournalLocker(FakeLocker):
    def __init__(self, journal: list[str]) -> None:
        super().__init__()
        self.journal = journal

    @contextlib.asynccontextmanager
    async def hold(self, key: str, abandon_if: Any = None) -> AsyncIterator[Any]:
        self.journal.append("acquire")
        async with super().hold(key, abandon_if) as lease:
            yield lease
        self.journal.append("release")


async def test_an_operator_request_takes_the_lease_before_its_first_read_so_that_read_decides() -> None:
    journal: list[str] = []
    store = JournalStore(journal)
    store.seed("session-encryption-key", "old", expires_on=NOW + timedelta(days=100))
    outcome = await make_engine(store, locker=JournalLocker(journal)).run(
        RotationRequest("kv-test", "session-encryption-key", Trigger.HTTP))
    assert outcome.status == "rotated"
    assert journal[:2] == ["acquire", "get session-encryption-key"]
    assert journal[-1] == "release"


async def test_an_operator_request_that_needs_nothing_releases_its_lease_and_writes_nothing() -> None:
    journal: list[str] = []
    store = JournalStore(journal)
    store.seed("session-encryption-key", "old", expires_on=NOW + timedelta(days=100))
    outcome = await make_engine(store, locker=JournalLocker(journal)).run(
        RotationRequest("kv-test", "session-encryption-key", Trigger.HTTP, expected_version="not-the-current-one"))
    assert outcome.status == "skipped" and "already rotated" in outcome.reason
    assert journal == ["acquire", "get session-encryption-key", "release"]
    assert store.writes == 0


async def test_a_duplicate_event_is_decided_on_one_read_without_touching_the_lease() -> None:
    journal: list[str] = []
    store = JournalStore(journal)
    store.seed("session-encryption-key", "old", expires_on=NOW + timedelta(days=1))
    req = event(store, "session-encryption-key")
    store.seed("session-encryption-key", "rotated-meanwhile", expires_on=NOW + timedelta(days=100))
    outcome = await make_engine(store, locker=JournalLocker(journal)).run(req)
    assert outcome.status == "skipped" and "duplicate" in outcome.reason
    assert journal == ["get session-encryption-key"]


async def test_a_fence_finding_lease_and_version_both_changed_reports_the_lease_with_nothing_left_running() -> None:
    """The renewal and the read of a fence run at once; both finish before the worker stops, and the lease's answer
    comes first, as when they ran one after the other."""
    journal: list[str] = []
    store = JournalStore(journal)
    store.seed("session-encryption-key", "old", expires_on=NOW + timedelta(days=1))
    locker = FakeLocker()

    async def frozen_past_the_lease(at: Step, req: RotationRequest) -> None:
        if at == Step.VERIFY:
            locker.lease.lost = True
            store.seed("session-encryption-key", "committed-by-another-worker")

    engine = make_engine(store, locker=locker)
    engine._after_step = frozen_past_the_lease
    with pytest.raises(LeaseLost) as raised:
        await engine.run(event(store, "session-encryption-key"))
    assert type(raised.value) is LeaseLost  # not Superseded
    assert store.writes == 0
    assert asyncio.all_tasks() == {asyncio.current_task()}
