"""The rotation engine: orchestrates the rotator port; a rotation's progress lives in its version's tags.

The engine orchestrates: it reads the vault, holds the lease, fences and calls
the rotator. What to do (rotate? is an unfinished rotation ready to progress?
may the previous credential go?) is decided by the pure functions of
:mod:`shared.service.decisions`, given the moment and the settings.

A rotation walks ``CREATE -> APPLY -> VERIFY -> COMMIT -> NOTIFY -> RETIRE``.
Before COMMIT nothing durable records progress: a crash there leaves the
vault serving the old, still-valid value, and the next delivery starts over
with a fresh value (every rotator's ``apply`` converges whatever an abandoned
attempt left downstream). From COMMIT on, the state lives in the tags of the
version the rotation wrote (``rotated-state``), so any later invocation — a
redelivered event, the HTTP route, the timer sweep — resumes it::

    (current version due) --create/apply/verify--> [nothing durable]
        --commit--> committed --notify--> notified --retire--> retired

Duplicates never rotate twice: a near-expiry event names the version that is
expiring, and once the vault serves a different version the event is done.
Concurrent deliveries are serialised by a per-secret lease, and every
decision is taken again after the lease is held, on a fresh read. An
operator's request (HTTP), which nearly always rotates, takes the lease before
its first read, so that read is the fresh one.

Fencing: a worker can freeze (GC, VM pause, SIGSTOP) past its 15 s lease while
a redelivery finishes the rotation. So right before every side effect —
the rotator's downstream writes, the vault write, notify's tag write — ``_fence``
renews the lease and re-reads the served version, and stops the worker if either
changed. A rotator reads before it writes (an admin connection, a provider's key
list), so the engine binds ``RotationContext.fence`` and the rotator awaits it
right before each write (``fences_writes``); for a rotator that does not, the
engine fences before calling ``apply``, ``retire`` or ``repair``. The renewal
and the read run at once; the side effect starts only after both answered.
Other round trips that do not depend on each other run
at once the same way (``_both``): the admin credential is read during the
fence before ``apply``, and the login proving the kept value during a fence
before retirement. After the write the served version is read again; if another
rotation slipped in between, the engine reconciles on the served value.

Durable intent: a rotator without overlap (PostgreSQL ``single``) makes the
current value stop working in ``apply``. Before that, the new value is written
to the companion secret ``<name>-rotation-intent`` (in the vault, never in
logs); whoever runs next under the lease finds it and, if the value is live
downstream, commits it instead of changing the password again. The intent is
disabled once committed.

Liveness: when an invocation finds nothing to do (the sweep included), rotators
with a ``check`` (PostgreSQL, Redis) prove the served value works downstream;
if it is refused (a race, a password changed by hand, a restored database) the
engine repairs it under the lease with the admin credential, pings consumers,
logs a WARNING and answers ``repaired``. Retirement first proves the value
being kept works, so the last working credential is never retired.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from enum import Enum
from typing import TYPE_CHECKING, Any, TypeVar

from shared.config.operator_file import OperatorConfig, PostgresTarget, RedisTarget
from shared.config.settings import Settings
from shared.domain.errors import (
    LeaseNotNeeded,
    NotManaged,
    PolicyError,
    RotationError,
    SecretNotFound,
    Superseded,
    VerificationFailed,
)
from shared.domain.model import NewSecret, SecretVersion
from shared.domain.policy import ROTATOR_RECORD_PREFIX, Policy, carried_tags, resolve_policy, rotator_record
from shared.domain.ports import (
    Consumer,
    Lease,
    Locker,
    Notifier,
    NotifyResult,
    Prepared,
    RotatedNotice,
    SecretReader,
    SecretStore,
)
from shared.domain.record import (  # noqa: F401 - re-exported: the engine's vocabulary, importable from here too
    ESSENTIAL_RECORD_TAGS,
    EVENT_CLOCK_SLACK,
    INTENT_SUFFIX,
    KV_NAME_MAX,
    MAX_TAGS,
    TAG_VALUE_MAX,
    Outcome,
    RotationRequest,
    State,
    Step,
    Tag,
    Trigger,
    intent_secret_name,
    parse_time,
    pending_state,
    utcnow,
)
from shared.rotators.base import (
    LivenessRotator,
    RotationContext,
    Rotator,
    SingleCredentialRotator,
    normalise_applied,
)
from shared.service.decisions import Decision, Readiness, RetirementRules, decide, has_work, retire_ready

if TYPE_CHECKING:
    from shared.adapters.telemetry import Telemetry

log = logging.getLogger(__name__)

StepHook = Callable[[Step, RotationRequest], Awaitable[None]]
ConsumersFor = Callable[[str, str | None], Sequence[Consumer]]
A = TypeVar("A")
B = TypeVar("B")


class _Unread(Enum):
    UNREAD = "unread"


_UNREAD = _Unread.UNREAD  # a durable intent not read yet (None: read, and there is none)


async def _both(first: Awaitable[A], second: Awaitable[B]) -> tuple[A, B]:
    """Run two independent round trips at once; both finish, then the first one's error wins.

    Neither is abandoned half-way when the other fails, so nothing of a fence is still in flight once
    the engine acts on its answer, and errors come in the order the two calls had when run in turn."""
    a, b = await asyncio.gather(first, second, return_exceptions=True)
    if isinstance(a, BaseException):
        raise a
    if isinstance(b, BaseException):
        raise b
    return a, b


class RotationEngine:
    def __init__(
        self,
        *,
        settings: Settings,
        operator: OperatorConfig,
        stores: Callable[[str], SecretStore],
        locker: Locker,
        rotators: Mapping[str, Rotator],
        notifier: Notifier | None = None,
        consumers_for: ConsumersFor | None = None,
        clock: Callable[[], datetime] = utcnow,
        after_step: StepHook | None = None,
        telemetry: Telemetry | None = None,
    ) -> None:
        self._settings = settings
        self._operator = operator
        self._stores = stores
        self._locker = locker
        self._rotators = rotators
        self._notifier = notifier
        self._consumers_for = consumers_for or (lambda name, tag: ())
        self._clock = clock
        self._after_step = after_step
        if telemetry is None:
            from shared.adapters.telemetry import NO_TELEMETRY  # not at import: cold start

            telemetry = NO_TELEMETRY
        self._telemetry = telemetry

    # ----------------------------------------------------------------- public

    async def run(self, req: RotationRequest) -> Outcome:
        """Handle one request: rotate if due, resume an unfinished rotation, or skip.

        When nothing is due, the value the vault serves is checked downstream
        (rotators with a liveness check) and repaired under the lease if refused.
        Traced as one ``rotation`` span with a child per step (shared/adapters/telemetry.py)."""
        with self._telemetry.rotation(vault=req.vault, secret=req.secret_name, trigger=str(req.trigger)):
            outcome = await self._run(req)
            self._telemetry.finished(outcome)
            return outcome

    async def _run(self, req: RotationRequest) -> Outcome:
        store = self._stores(req.vault)
        # A name no rule of the operator file could manage is refused before the vault is asked, and a
        # missing secret answers the same: a caller learns nothing about secrets the app does not manage.
        not_managed = NotManaged(f"no managed secret named {req.secret_name}")
        if not self._operator.may_be_managed(req.secret_name):
            raise not_managed
        # Key Vault names are case-insensitive: one lease per secret, however a caller spells it.
        lease_key = f"{req.vault}/{req.secret_name}".lower()
        latest: SecretVersion | None = None

        async def done_meanwhile() -> bool:
            """While queueing for the lease: has the holder made this request moot?"""
            nonlocal latest
            latest = await self._read_first(store, req, not_managed)
            fresh_policy = self._policy(req.secret_name, latest)
            needed, _ = self._decide(req, fresh_policy, latest)
            return not needed and not self._has_work(fresh_policy, latest)

        try:
            if req.trigger in (Trigger.HTTP, Trigger.EMERGENCY) and not req.dry_run:
                # An operator's request nearly always rotates: it takes the lease first, and its first read
                # is then the fresh read under the lease that every decision needs (one read, not two).
                async with self._locker.hold(lease_key, done_meanwhile) as lease:
                    current = await self._read_first(store, req, not_managed)
                    answer = await self._answer_without_lease(req, self._policy(req.secret_name, current), current)
                    if answer is not None:
                        return answer  # the lease is released unused
                    return await self._run_locked(store, req, lease, read=current)
            current = await self._read_first(store, req, not_managed)
            policy = self._policy(req.secret_name, current)
            answer = await self._answer_without_lease(req, policy, current)
            if answer is not None:
                return answer
            single = self._single_hint(store, req, policy, current)
            async with self._locker.hold(lease_key, done_meanwhile) as lease:
                return await self._run_locked(store, req, lease, single=single)
        except LeaseNotNeeded:
            assert latest is not None  # the lease is abandoned only on what done_meanwhile read
            _, why = self._decide(req, self._policy(req.secret_name, latest), latest)
            log.info("rotation skipped", extra=self._log_extra(req, None, why=why))
            return self._skipped(req, latest, why)

    async def _answer_without_lease(self, req: RotationRequest, policy: Policy,
                                    current: SecretVersion) -> Outcome | None:
        """The answer when the request needs nothing done under the lease: a dry run's plan, or a skip
        (nothing due or pending, and the served value works downstream). None: the lease is needed."""
        rotate, why = self._decide(req, policy, current)
        if req.dry_run:
            return self._plan(req, policy, current, rotate, why)
        if rotate or self._has_work(policy, current):
            return None
        live = await self._check_served(req, policy, current)
        if live == "refused":
            return None
        log.info("rotation skipped", extra=self._log_extra(req, None, why=why))
        skipped = self._skipped(req, current, why)
        skipped.liveness = live
        return skipped

    @staticmethod
    async def _read_first(store: SecretStore, req: RotationRequest, not_managed: NotManaged) -> SecretVersion:
        try:
            return await store.get(req.secret_name)
        except SecretNotFound:
            raise not_managed from None

    async def _run_locked(self, store: SecretStore, req: RotationRequest, lease: Lease, *,
                          read: SecretVersion | None = None, single: bool = False) -> Outcome:
        """Under the lease. ``read``: the secret as read after this lease was acquired. ``single``: the
        first read found a rotator without overlap, whose durable intent is then read alongside the secret."""
        intent: SecretVersion | _Unread | None = _UNREAD
        if read is not None:
            current = read
        elif single:  # decide again on a fresh read under the lease, the intent read with it
            current, intent = await _both(store.get(req.secret_name), self._read_intent(store, req))
        else:
            current = await store.get(req.secret_name)  # decide again on a fresh read, under the lease
        policy = self._policy(req.secret_name, current)
        recovered = await self._recover_intent(store, req, policy, current, lease, intent)
        if recovered is not None:
            return recovered
        resumed: Outcome | None = None
        emergency = req.trigger == Trigger.EMERGENCY
        if self._has_work(policy, current) or (emergency and pending_state(current.properties.tags)):
            # An emergency revokes what an unfinished rotation still keeps valid before it rotates.
            resumed = await self._finish(store, req, policy, current, lease, previous=None, revoke_now=emergency)
            current = await store.get(req.secret_name)
        rotate, why = self._decide(req, policy, current)
        if not rotate:
            if resumed is not None:
                resumed.reason = f"{resumed.reason}; {why}"
                return resumed
            repaired = await self._repair_locked(store, req, policy, current, lease)
            if repaired is not None:
                return repaired
            skipped = self._skipped(req, current, why)
            skipped.liveness = "ok" if self._checks_liveness(policy) else None
            return skipped
        return await self._rotate(store, req, policy, current, lease)

    async def complete_pending(self, vault: str, secret_name: str, trigger: Trigger = Trigger.SWEEP) -> Outcome:
        """Drive an unfinished rotation's notify/retire steps (timer sweep)."""
        return await self.run(RotationRequest(vault=vault, secret_name=secret_name, trigger=trigger))

    # --------------------------------------------------------------- decision

    def _kind(self, policy: Policy) -> str | None:
        """The rotator that renews this secret: its policy's, or for a manual-only secret the
        generator named by its ``rotation-generator`` tag (used only when forced)."""
        if not policy.manual:
            return policy.kind
        generator = policy.generator
        return generator if generator is not None and generator in self._rotators else None

    def _require_target(self, policy: Policy) -> None:
        """A target whose ``${SETTING}`` placeholders are unset fails here, naming them, before anything runs."""
        if policy.target is not None:
            self._operator.target(policy.target.name)

    @staticmethod
    def _secrets_read(policy: Policy) -> tuple[str, ...]:
        """The other secrets a rotation of this policy reads: its target's admin credential."""
        target = policy.target
        return (target.admin_secret,) if isinstance(target, PostgresTarget | RedisTarget) else ()

    def _retirement_rules(self, rotator: Rotator, policy: Policy, version: SecretVersion) -> RetirementRules:
        return RetirementRules(
            overlap=rotator.retire_overlap(policy.options),
            grace=timedelta(hours=self._settings.grace_period_hours),
            retire_when=self._settings.retire_when,
            consumers=tuple(self._consumers_for(version.properties.name, policy.consumers_tag)),
        )

    def _has_work(self, policy: Policy, current: SecretVersion) -> bool:
        """Whether an unfinished rotation recorded on the current version can progress now."""
        if pending_state(current.properties.tags) is None:
            return False  # the common case, decided without building the retirement rules
        rotator = self._rotators.get(self._kind(policy) or "")
        rules = self._retirement_rules(rotator, policy, current) if rotator is not None else None
        return has_work(current.properties, self._clock(), rules)

    def _policy(self, name: str, current: SecretVersion) -> Policy:
        policy = resolve_policy(name, current.properties.tags, self._operator, self._settings.lead_days)
        if policy is None:
            raise NotManaged(f"no managed secret named {name}")
        self._telemetry.annotate(rotator=self._kind(policy) or policy.kind)
        if not policy.manual and policy.kind not in self._rotators:
            raise PolicyError(f"secret {name}: no rotator registered for kind {policy.kind}")
        carried = carried_tags(current.properties.tags)
        rotator = self._rotators.get(self._kind(policy) or "")
        needed = ESSENTIAL_RECORD_TAGS + (rotator.record_tags if rotator is not None else 0)
        if len(carried) + needed > MAX_TAGS:
            raise PolicyError(
                f"secret {name} carries {len(carried)} tags; recording a rotation needs "
                f"{needed} of Key Vault's {MAX_TAGS}"
            )
        return policy

    def _decide(self, req: RotationRequest, policy: Policy, current: SecretVersion) -> Decision:
        return decide(req, policy, current.properties, self._clock(), self._settings.lead_days,
                      kind=self._kind(policy))

    # --------------------------------------------------------------- rotation

    async def _step(self, step: Step, req: RotationRequest, timings: dict[str, float], started: float) -> None:
        elapsed = time.perf_counter() - started
        timings[step.value] = round(elapsed * 1000, 2)
        self._telemetry.step(step.value, elapsed)
        if self._after_step is not None:
            await self._after_step(step, req)

    async def _fence(self, store: SecretStore, req: RotationRequest, lease: Lease, expected: str) -> None:
        """Right before a side effect: the lease is still ours and the vault still serves ``expected``.

        A worker that paused (GC, VM freeze, SIGSTOP) past its lease, while another one
        finished, fails here and changes nothing. The renewal and the read are independent and run at
        once; both answers are in and checked before the side effect starts."""
        _, latest = await _both(lease.ensure(), store.get(req.secret_name))
        if latest.properties.version != expected:
            raise Superseded(
                f"secret {req.secret_name}: the vault now serves version {latest.properties.version}, "
                f"not {expected}; this worker stops"
            )

    def _write_fence(self, store: SecretStore, req: RotationRequest, lease: Lease,
                     expected: str) -> Callable[[], Awaitable[None]]:
        """What a rotator awaits right before each downstream write (``RotationContext.fence``)."""

        async def fence() -> None:
            if self._after_step is not None:
                await self._after_step(Step.WRITE, req)  # the fault matrix pauses a worker here
            await self._fence(store, req, lease, expected)

        return fence

    def _context(self, req: RotationRequest, policy: Policy, current: SecretVersion | None, rotation_id: str,
                 now: datetime, reader: SecretReader, *, expires_on: datetime | None = None,
                 record: Mapping[str, str] | None = None, emergency: bool = False,
                 fence: Callable[[], Awaitable[None]] | None = None) -> RotationContext:
        extra: dict[str, Any] = {"fence": fence} if fence is not None else {}
        return RotationContext(
            vault=req.vault,
            secret_name=req.secret_name,
            rotation_id=rotation_id,
            now=now,
            current=current,
            options=dict(policy.options),
            secrets=reader,
            target=policy.target,
            record=dict(record or {}),
            expires_on=expires_on,
            emergency=emergency,
            **extra,
        )

    @staticmethod
    def _single_credential(rotator: Rotator, ctx: RotationContext) -> bool:
        return isinstance(rotator, SingleCredentialRotator) and rotator.single_credential(ctx)

    async def _rotate(
        self, store: SecretStore, req: RotationRequest, policy: Policy, current: SecretVersion, lease: Lease
    ) -> Outcome:
        kind = self._kind(policy)
        assert kind is not None  # _decide refused a manual secret without a generator
        rotator = self._rotators[kind]
        self._require_target(policy)
        rotation_id = uuid.uuid4().hex
        now = self._clock()
        expires_on = policy.new_expiry(now) if policy.validity_days else None
        reader = _RunReader(store)
        ctx = self._context(req, policy, current, rotation_id, now, reader, expires_on=expires_on,
                            fence=self._write_fence(store, req, lease, current.properties.version))
        timings: dict[str, float] = {}
        extra = self._log_extra(req, rotation_id)
        self._telemetry.annotate(id=rotation_id, previous_version=current.properties.version)
        log.info("rotation started", extra=extra)
        single = self._single_credential(rotator, ctx)

        t = time.perf_counter()
        new = await rotator.create(ctx)
        await self._step(Step.CREATE, req, timings, t)
        if single:
            # No overlap: once applied, only the new value works. Record it in the vault first, so
            # whoever runs next finishes the commit with the value that is live instead of re-passwording.
            t = time.perf_counter()
            await self._fence(store, req, lease, current.properties.version)
            await self._write_intent(store, req, kind, current, new, rotation_id, now)
            await self._step(Step.INTENT, req, timings, t)
        t = time.perf_counter()
        # The secrets apply reads (the target's admin credential) are read while the fence runs; a rotator
        # that fences its own writes (right after its reads) needs no fence here.
        if rotator.fences_writes:
            await reader.read_ahead(self._secrets_read(policy))
        else:
            await _both(self._fence(store, req, lease, current.properties.version),
                        reader.read_ahead(self._secrets_read(policy)))
        # A provider-generated credential (a regenerated key slot, an Entra password) comes back from apply,
        # with a small record (slot, key id) that is persisted below for retire on a later invocation.
        new, record = normalise_applied(await rotator.apply(ctx, new), new, rotator.record_tags)
        ctx = replace(ctx, record=record)
        await self._step(Step.APPLY, req, timings, t)
        t = time.perf_counter()
        await rotator.verify(ctx, new)
        await self._step(Step.VERIFY, req, timings, t)
        return await self._commit(store, req, policy, current, lease, ctx, new, kind=kind, trigger=str(req.trigger),
                                  timings=timings, single=single)

    async def _commit(
        self,
        store: SecretStore,
        req: RotationRequest,
        policy: Policy,
        current: SecretVersion,
        lease: Lease,
        ctx: RotationContext,
        new: NewSecret,
        *,
        kind: str,
        trigger: str,
        timings: dict[str, float],
        single: bool,
    ) -> Outcome:
        """Write the verified value as the new version, confirm it is the one served, then notify/retire."""
        expires_on = policy.new_expiry(ctx.now) if policy.validity_days else None
        # The pings leave right after the write: what they need (HMAC keys) is read while we fence and write.
        prepared = (self._notifier.prepare(list(self._consumers_for(req.secret_name, policy.consumers_tag)))
                    if self._notifier is not None else None)
        try:
            rotation_id, now = ctx.rotation_id, ctx.now
            extra = self._log_extra(req, rotation_id)
            t = time.perf_counter()
            # Fencing right before the write: a lease lost or a version committed by someone else at any
            # earlier moment is caught here, so a worker that lost exclusivity never commits.
            await self._fence(store, req, lease, current.properties.version)
            tags = carried_tags(current.properties.tags)
            tags.update(
                {
                    Tag.ID: rotation_id,
                    Tag.BY: kind,
                    Tag.AT: now.isoformat(timespec="seconds"),
                    Tag.FROM: current.properties.version,
                    Tag.TRIGGER: trigger,
                    Tag.STATE: State.COMMITTED,
                    **{ROTATOR_RECORD_PREFIX + key: text for key, text in ctx.record.items()},
                }
            )
            for key, text in ((Tag.REASON, req.reason), (Tag.CALLER, req.caller)):
                if text and len(tags) < MAX_TAGS:
                    tags[key] = text[:TAG_VALUE_MAX]
            props = await store.set(
                req.secret_name,
                new.value,
                content_type=new.content_type,
                tags=tags,
                not_before=now,
                expires_on=expires_on,
            )
            committed = SecretVersion(properties=props, value=new.value)
            await self._step(Step.COMMIT, req, timings, t)
            self._telemetry.annotate(version=props.version)
            log.info("rotation committed", extra={**extra, "version": props.version})

            # The pings leave now, with keys read ahead, while the read below confirms this version is
            # the one served: a consumer re-reads before it answers and names the version it read, and
            # the answers are used only once that read confirms (never for a superseded version); the
            # SecretRotated event waits for it. The acknowledgements' tag write and retirement are
            # fenced again in _finish.
            notify_started = time.perf_counter()
            confirmed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            notifying = asyncio.ensure_future(self._notify(
                req, policy, committed, current, committed.properties.tags, prepared=prepared, event_after=confirmed))
            try:
                if single:  # the intent's clearing and the read confirming the commit are independent
                    _, served = await _both(self._clear_intent(store, req), store.get(req.secret_name))
                else:
                    served = await store.get(req.secret_name)
                if served.properties.version != props.version:
                    # Another writer committed between our fence and our write: reconcile on what is
                    # served; the answers to our pings are about a superseded version and are dropped.
                    await _drop(notifying)
                    log.warning("another version was committed concurrently; reconciling on the served one",
                                extra={**extra, "version": props.version,
                                       "served_version": served.properties.version})
                    repaired = await self._repair_locked(store, req, policy, served, lease)
                    if repaired is not None:
                        return repaired
                    return self._skipped(req, served, "superseded by a concurrent rotation; the served value works")
                confirmed.set_result(None)
                notified = await notifying
            finally:
                await _drop(notifying)

            outcome = await self._finish(store, req, policy, committed, lease, previous=current, timings=timings,
                                         reader=ctx.secrets, revoke_now=req.trigger == Trigger.EMERGENCY,
                                         notified=(notified, notify_started))
            outcome.status = "rotated"
            outcome.reason = f"rotated ({outcome.reason})"
            outcome.durations_ms = timings
            log.info("rotation finished", extra={**extra, "state": outcome.state, "durations_ms": timings})
            steps = [Step.CREATE, Step.INTENT] if single else [Step.CREATE]
            outcome.steps = [*steps, Step.APPLY, Step.VERIFY, Step.COMMIT, *outcome.steps]
            return outcome
        finally:
            if prepared is not None:
                prepared.close()  # a no-op once the pings used it

    # ------------------------------------------------- durable intent (no overlap)

    async def _write_intent(self, store: SecretStore, req: RotationRequest, kind: str, current: SecretVersion,
                            new: NewSecret, rotation_id: str, now: datetime) -> None:
        await store.set(
            intent_secret_name(req.secret_name),
            new.value,
            content_type=new.content_type,
            tags={
                Tag.INTENT_FOR: req.secret_name.lower(),
                Tag.ID: rotation_id,
                Tag.BY: kind,
                Tag.AT: now.isoformat(timespec="seconds"),
                Tag.FROM: current.properties.version,
                Tag.TRIGGER: str(req.trigger),
            },
            not_before=None,
            expires_on=None,
        )

    async def _read_intent(self, store: SecretStore, req: RotationRequest) -> SecretVersion | None:
        try:
            intent = await store.get(intent_secret_name(req.secret_name))
        except SecretNotFound:  # never written, or disabled once committed
            return None
        if intent.properties.tags.get(Tag.INTENT_FOR) != req.secret_name.lower():
            return None
        return intent

    async def _clear_intent(self, store: SecretStore, req: RotationRequest) -> None:
        intent = await self._read_intent(store, req)
        if intent is not None:
            await store.update_properties(intent.name, intent.properties.version, enabled=False)

    def _without_overlap(self, store: SecretStore, req: RotationRequest, policy: Policy,
                         current: SecretVersion) -> bool:
        """Whether the secret's rotator has no overlap (the current value stops working in ``apply``)."""
        kind = self._kind(policy)
        rotator = self._rotators.get(kind or "")
        if kind is None or rotator is None or policy.manual:
            return False
        probe_ctx = self._context(req, policy, current, "intent", self._clock(), _RunReader(store))
        return self._single_credential(rotator, probe_ctx)

    def _single_hint(self, store: SecretStore, req: RotationRequest, policy: Policy, current: SecretVersion) -> bool:
        """From the first read: is a durable intent worth reading alongside the read under the lease? Only a
        hint; a target the rotator refuses is reported by the same question asked under the lease."""
        try:
            return self._without_overlap(store, req, policy, current)
        except RotationError:
            return False

    async def _recover_intent(
        self, store: SecretStore, req: RotationRequest, policy: Policy, current: SecretVersion, lease: Lease,
        intent: SecretVersion | _Unread | None,
    ) -> Outcome | None:
        """Finish a single-credential rotation whose worker died between its intent and its commit.

        If the intended value is live downstream, commit it (no second password change). If it is not
        and the served one still works, the worker died before ``apply``: drop the intent. If neither
        works, apply the intended value (what the dead worker was doing) and commit it. ``intent`` is
        the companion secret when it was already read under this lease."""
        kind = self._kind(policy)
        rotator = self._rotators.get(kind or "")
        if kind is None or rotator is None or not self._without_overlap(store, req, policy, current):
            return None
        if intent is _UNREAD:
            intent = await self._read_intent(store, req)
        if intent is None:
            return None
        tags = intent.properties.tags
        if tags.get(Tag.FROM) != current.properties.version:
            await self._fence(store, req, lease, current.properties.version)
            await store.update_properties(intent.name, intent.properties.version, enabled=False)  # stale
            return None
        if not isinstance(rotator, LivenessRotator):
            return None
        rotation_id = tags.get(Tag.ID) or uuid.uuid4().hex
        now = parse_time(tags.get(Tag.AT)) or self._clock()
        self._require_target(policy)
        expires_on = policy.new_expiry(now) if policy.validity_days else None
        ctx = self._context(req, policy, current, rotation_id, now, _RunReader(store), expires_on=expires_on,
                            fence=self._write_fence(store, req, lease, current.properties.version))
        new = NewSecret(value=intent.value, content_type=intent.properties.content_type or "text/plain")
        extra = self._log_extra(req, rotation_id)
        timings: dict[str, float] = {}
        if not await rotator.check(ctx, intent.value):
            if await rotator.check(ctx, current.value):
                log.info("abandoned rotation intent dropped: its value was never applied", extra=extra)
                await self._fence(store, req, lease, current.properties.version)
                await store.update_properties(intent.name, intent.properties.version, enabled=False)
                return None
            log.warning("neither the served nor the intended value works; applying the intended one", extra=extra)
            if not rotator.fences_writes:
                await self._fence(store, req, lease, current.properties.version)
            new, record = normalise_applied(await rotator.apply(ctx, new), new, rotator.record_tags)
            ctx = replace(ctx, record=record)
        await rotator.verify(ctx, new)
        log.warning("completing a rotation whose worker stopped after apply, with the value already live",
                    extra=extra)
        outcome = await self._commit(store, req, policy, current, lease, ctx, new, kind=kind,
                                     trigger=tags.get(Tag.TRIGGER, str(req.trigger)), timings=timings, single=True)
        outcome.reason = f"{outcome.reason}; completed an interrupted rotation from its durable intent"
        return outcome

    # ------------------------------------------------- liveness: check and repair

    def _checks_liveness(self, policy: Policy) -> bool:
        if policy.manual:
            return False
        return isinstance(self._rotators.get(policy.kind), LivenessRotator)

    def checks_liveness(self, kind: str) -> bool:
        """Whether secrets of this rotator kind get their served value checked downstream."""
        return isinstance(self._rotators.get(kind), LivenessRotator)

    async def _check_served(self, req: RotationRequest, policy: Policy, current: SecretVersion) -> str | None:
        """Outside the lease: does the served value work? ``ok``, ``refused``, ``unknown``, or None when
        the rotator has no liveness check.

        A downstream that cannot answer (or a policy the rotator refuses) is logged, not raised: a
        duplicate delivery must still be acknowledged."""
        if not self._checks_liveness(policy):
            return None
        rotator = self._rotators[policy.kind]
        assert isinstance(rotator, LivenessRotator)
        store = self._stores(req.vault)
        ctx = self._context(req, policy, current, "liveness", self._clock(), _RunReader(store))
        try:
            return "ok" if await rotator.check(ctx, current.value) else "refused"
        except RotationError as exc:
            log.warning("liveness check could not run: %s", exc.message,
                        extra=self._log_extra(req, None, error_code=exc.code))
            return "unknown"  # nothing to repair on this evidence

    async def _repair_locked(
        self, store: SecretStore, req: RotationRequest, policy: Policy, current: SecretVersion, lease: Lease
    ) -> Outcome | None:
        """Under the lease: if the served value is refused downstream, make it valid again and say so loudly.

        Returns None when the value works (or the rotator has no liveness check)."""
        if not self._checks_liveness(policy):
            return None
        rotator = self._rotators[policy.kind]
        assert isinstance(rotator, LivenessRotator)
        ctx = self._context(req, policy, current, current.properties.tags.get(Tag.ID, "repair"), self._clock(),
                            _RunReader(store), fence=self._write_fence(store, req, lease, current.properties.version))
        if await rotator.check(ctx, current.value):
            return None
        extra = self._log_extra(req, ctx.rotation_id, version=current.properties.version)
        log.warning("the value the vault serves is refused downstream; repairing it", extra=extra)
        if not rotator.fences_writes:
            await self._fence(store, req, lease, current.properties.version)
        detail = await rotator.repair(ctx, current.value)
        if not await rotator.check(ctx, current.value):
            raise VerificationFailed(f"repair of {req.secret_name} did not make the served value work")
        tags = dict(current.properties.tags)
        if Tag.REPAIRED in tags or len(tags) < MAX_TAGS:
            tags[Tag.REPAIRED] = self._clock().isoformat(timespec="seconds")
            await store.update_properties(req.secret_name, current.properties.version, tags=tags)
        result = await self._notify(req, policy, current, None, tags, trigger="repair")
        consumers_report = [
            {"consumer": c.consumer, "ok": c.ok, "status": c.status, "attempts": c.attempts, "error": c.error}
            for c in result.consumers
        ]
        log.warning("served value repaired: %s", detail, extra={**extra, "consumers": len(consumers_report)})
        outcome = self._outcome("repaired", f"the served value was refused downstream; {detail}", req, current,
                                None, tags, [], consumers_report)
        outcome.liveness = "repaired"
        return outcome

    # ------------------------------------------------- post-commit: notify, retire

    async def _finish(
        self,
        store: SecretStore,
        req: RotationRequest,
        policy: Policy,
        version: SecretVersion,
        lease: Lease,
        previous: SecretVersion | None,
        timings: dict[str, float] | None = None,
        reader: SecretReader | None = None,
        revoke_now: bool = False,
        notified: tuple[NotifyResult, float] | None = None,
    ) -> Outcome:
        """Notify and retire. ``revoke_now`` (emergency) retires without waiting for
        acknowledgements, the grace period or the token overlap. ``notified`` carries the
        pings a fresh commit already sent (and when they started), so they are recorded, not repeated."""
        timings = timings if timings is not None else {}
        tags = dict(version.properties.tags)
        rotation_id = tags.get(Tag.ID)
        extra = self._log_extra(req, rotation_id, version=version.properties.version)
        steps: list[str] = []
        consumers_report: list[dict[str, Any]] = []
        rotator = self._rotators.get(self._kind(policy) or "")
        name = req.secret_name
        if previous is None and tags.get(Tag.FROM):
            try:
                previous = await store.get(name, tags[Tag.FROM])
            except SecretNotFound:
                previous = None  # already disabled or deleted: nothing left to read

        if tags.get(Tag.STATE) == State.RETIRED and tags.get(Tag.REPLACES):
            await self._fence(store, req, lease, version.properties.version)
            await store.update_properties(name, tags[Tag.REPLACES], enabled=False)
            tags.pop(Tag.REPLACES)
            await store.update_properties(name, version.properties.version, tags=tags)
            return self._outcome("completed", "replaced version disabled", req, version, previous, tags, steps)

        if tags.get(Tag.STATE) == State.COMMITTED or (
            tags.get(Tag.STATE) == State.NOTIFIED and tags.get(Tag.PENDING)
        ):
            if notified is None:
                t = time.perf_counter()
                await self._fence(store, req, lease, version.properties.version)
                result = await self._notify(req, policy, version, previous, tags)
            else:
                result, t = notified
            consumers_report = [
                {"consumer": c.consumer, "ok": c.ok, "status": c.status, "attempts": c.attempts, "error": c.error}
                for c in result.consumers
            ]
            missing = [c.consumer for c in result.consumers if not c.ok]
            acked = len(result.consumers) - len(missing)
            self._telemetry.notified(acked, len(missing))
            tags[Tag.STATE] = State.NOTIFIED
            tags[Tag.ACKS] = f"{acked}/{len(result.consumers)}"
            if missing:
                tags[Tag.PENDING] = ",".join(missing)[:TAG_VALUE_MAX]
            else:
                tags.pop(Tag.PENDING, None)
            if rotator is None or not (revoke_now or self._retire_ready(rotator, policy, version, tags)[0]):
                # Record the acknowledgements now; when retirement follows at once, its write records both
                # (and it is fenced there). The pings of a fresh commit were fenced by the read confirming it.
                if notified is not None:
                    await self._fence(store, req, lease, version.properties.version)
                await store.update_properties(name, version.properties.version, tags=tags)
            steps.append(Step.NOTIFY)
            await self._step(Step.NOTIFY, req, timings, t)
            log.info("consumers notified", extra={**extra, "acks": tags[Tag.ACKS]})

        if tags.get(Tag.STATE) == State.NOTIFIED and rotator is not None:
            ready, why = (True, "emergency") if revoke_now else self._retire_ready(rotator, policy, version, tags)
            if not ready:
                return self._outcome("completed", why, req, version, previous, tags, steps, consumers_report)
            self._telemetry.retiring(why, tags.get(Tag.PENDING))
            t = time.perf_counter()
            ctx = self._context(req, policy, version, rotation_id or "", self._clock(), reader or _RunReader(store),
                                expires_on=version.properties.expires_on, record=rotator_record(tags),
                                emergency=revoke_now,
                                fence=self._write_fence(store, req, lease, version.properties.version))
            self._require_target(policy)
            # The fence before retirement guards the engine's own writes that follow it (the tag write, the
            # previous version disabled, a replacement); the rotator's downstream writes are fenced by
            # itself (``ctx.fence``) when it says so, else by a second fence right before the call.
            if isinstance(rotator, LivenessRotator):
                # Never retire the last working credential: the value being kept must work first. The login
                # changes nothing, so it runs alongside the fence.
                _, works = await _both(self._fence(store, req, lease, version.properties.version),
                                       rotator.check(ctx, version.value))
                if not works:
                    repaired = await self._repair_locked(store, req, policy, version, lease)
                    if repaired is not None:
                        repaired.reason += "; retirement postponed to the next invocation"
                        return repaired
                if not rotator.fences_writes:
                    await self._fence(store, req, lease, version.properties.version)
            else:
                await self._fence(store, req, lease, version.properties.version)
            result_r = await rotator.retire(ctx, previous)
            if not result_r.done:
                return self._outcome("completed", f"retirement not done: {result_r.detail}", req, version,
                                     previous, tags, steps, consumers_report)
            if result_r.disable_previous and previous is not None and previous.properties.enabled:
                await store.update_properties(name, previous.properties.version, enabled=False)
            tags[Tag.STATE] = State.RETIRED
            tags.pop(Tag.PENDING, None)
            if result_r.replacement is not None:
                # A new latest version: a worker paused since the retirement must not write a stale one.
                await self._fence(store, req, lease, version.properties.version)
                replacement_tags = {**tags, Tag.REPLACES: version.properties.version}
                props = await store.set(
                    name,
                    result_r.replacement.value,
                    content_type=result_r.replacement.content_type,
                    tags=replacement_tags,
                    not_before=version.properties.not_before,
                    expires_on=version.properties.expires_on,
                )
                await store.update_properties(name, version.properties.version, enabled=False, tags=tags)
                replacement_tags.pop(Tag.REPLACES)
                await store.update_properties(name, props.version, tags=replacement_tags)
                version = SecretVersion(properties=props, value=result_r.replacement.value)
                tags = replacement_tags
            else:
                await store.update_properties(name, version.properties.version, tags=tags)
            steps.append(Step.RETIRE)
            await self._step(Step.RETIRE, req, timings, t)
            if revoke_now:
                revoked = previous.properties.version if previous is not None else "none"
                log.warning(
                    "emergency: previous credential (version %s) revoked at once: %s", revoked, result_r.detail,
                    extra={**extra, "detail": result_r.detail},
                )
                return self._outcome("completed", f"emergency: previous credential (version {revoked}) revoked "
                                     f"at once: {result_r.detail}", req, version, previous, tags, steps,
                                     consumers_report)
            log.info("previous credential retired", extra={**extra, "detail": result_r.detail})
            return self._outcome("completed", "previous credential retired", req, version, previous, tags, steps,
                                 consumers_report)
        return self._outcome("completed", "nothing pending", req, version, previous, tags, steps, consumers_report)

    def _retire_ready(
        self, rotator: Rotator, policy: Policy, version: SecretVersion, tags: Mapping[str, str]
    ) -> Readiness:
        return retire_ready(version.properties, tags, self._clock(),
                            self._retirement_rules(rotator, policy, version))

    async def _notify(
        self,
        req: RotationRequest,
        policy: Policy,
        version: SecretVersion,
        previous: SecretVersion | None,
        tags: Mapping[str, str],
        trigger: str | None = None,
        prepared: Prepared | None = None,
        event_after: Awaitable[None] | None = None,
    ) -> NotifyResult:
        consumers = list(self._consumers_for(req.secret_name, policy.consumers_tag))
        pending = tags.get(Tag.PENDING)
        if tags.get(Tag.STATE) == State.NOTIFIED and pending:
            wanted = set(pending.split(","))
            consumers = [c for c in consumers if c.name in wanted]
        if self._notifier is None:
            return NotifyResult()
        notice = RotatedNotice(
            vault=req.vault,
            vault_url=self._settings.vault_url(req.vault),
            secret_name=req.secret_name,
            version=version.properties.version,
            previous_version=previous.properties.version if previous else tags.get(Tag.FROM),
            rotation_id=tags.get(Tag.ID, ""),
            rotated_at=parse_time(tags.get(Tag.AT)) or self._clock(),
            expires_on=version.properties.expires_on,
            trigger=trigger or tags.get(Tag.TRIGGER, str(req.trigger)),
        )
        try:
            return await self._notifier.notify(notice, consumers, prepared, event_after=event_after)
        except RotationError:
            raise
        except Exception as exc:  # a notifier bug must not undo a committed rotation
            log.exception("notifier failed", extra=self._log_extra(req, notice.rotation_id))
            raise RotationError("notification failed") from exc

    # ---------------------------------------------------------------- results

    def _outcome(
        self,
        status: str,
        reason: str,
        req: RotationRequest,
        version: SecretVersion,
        previous: SecretVersion | None,
        tags: Mapping[str, str],
        steps: list[str],
        consumers: list[dict[str, Any]] | None = None,
    ) -> Outcome:
        return Outcome(
            status=status,
            reason=reason,
            vault=req.vault,
            secret_name=req.secret_name,
            rotation_id=tags.get(Tag.ID),
            previous_version=previous.properties.version if previous else tags.get(Tag.FROM),
            version=version.properties.version,
            expires_on=version.properties.expires_on,
            state=tags.get(Tag.STATE),
            steps=list(steps),
            consumers=consumers or [],
        )

    def _skipped(self, req: RotationRequest, current: SecretVersion, why: str) -> Outcome:
        return Outcome(
            status="skipped",
            reason=why,
            vault=req.vault,
            secret_name=req.secret_name,
            version=current.properties.version,
            expires_on=current.properties.expires_on,
            state=current.properties.tags.get(Tag.STATE),
        )

    def _plan(self, req: RotationRequest, policy: Policy, current: SecretVersion, rotate: bool, why: str) -> Outcome:
        now = self._clock()
        consumers = [c.name for c in self._consumers_for(req.secret_name, policy.consumers_tag)]
        kind = self._kind(policy) or policy.kind
        expiry = policy.new_expiry(now).isoformat() if policy.validity_days else None
        plan = {
            "rotator": kind,
            "wouldRotate": rotate,
            "why": why,
            "currentVersion": current.properties.version,
            "steps": [
                f"create: generate a new {kind} value (options: {sorted(policy.options)})",
                f"apply: make it valid in the {kind} downstream while the current value stays valid",
                "verify: prove the new value works before anything is written to the vault",
                f"commit: write a new version expiring {expiry or 'never (manual-only secret)'}",
                f"notify: ping {consumers or 'no consumers'} and publish SecretRotated",
                "retire: invalidate the previous credential after acknowledgement or the grace period",
            ],
            "newExpiry": expiry,
            "consumers": consumers,
        }
        return Outcome(
            status="planned",
            reason=why,
            vault=req.vault,
            secret_name=req.secret_name,
            version=current.properties.version,
            expires_on=current.properties.expires_on,
            plan=plan,
        )

    @staticmethod
    def _log_extra(req: RotationRequest, rotation_id: str | None, **more: Any) -> dict[str, Any]:
        return {
            "rotation_id": rotation_id,
            "vault": req.vault,
            "secret": req.secret_name,
            "trigger": str(req.trigger),
            **more,
        }



class _RunReader:
    """Reads other secrets (admin credentials) once per run: apply and retire of
    one rotation see the same admin secret and do not pay for it twice."""

    def __init__(self, store: SecretReader) -> None:
        self._store = store
        self._cache: dict[tuple[str, str | None], SecretVersion] = {}

    async def get(self, name: str, version: str | None = None) -> SecretVersion:
        key = (name, version)
        if key not in self._cache:
            self._cache[key] = await self._store.get(name, version)
        return self._cache[key]

    async def read_ahead(self, names: Sequence[str]) -> None:
        """Read what a rotator is about to ask for, while something else runs. A failed read is left to
        the rotator's own, which reports it in its terms (a missing admin secret is a configuration error)."""
        for name in names:
            with contextlib.suppress(RotationError):
                await self.get(name)


async def _drop(task: asyncio.Task[Any]) -> None:
    """Cancel ``task`` if it is still running and wait for it, without raising what it raised."""
    if not task.done():
        task.cancel()
    await asyncio.wait([task])
    if not task.cancelled():
        task.exception()  # retrieved: whatever it raised is moot once dropped
