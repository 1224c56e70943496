"""The rotation engine: an explicit state machine over the rotator port.

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
decision is taken again after the lease is held, on a fresh read.

Fencing: a worker can freeze (GC, VM pause, SIGSTOP) past its 15 s lease while
a redelivery finishes the rotation. So right before every side effect —
``apply``, the vault write, notify's tag write, retirement — ``_fence`` renews
the lease and re-reads the served version, and stops the worker if either
changed. After the write the served version is read again; if another
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
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from shared.errors import (
    LeaseNotNeeded,
    ManualOnly,
    NotManaged,
    OverlapActive,
    PolicyError,
    RotationError,
    SecretNotFound,
    Superseded,
    VerificationFailed,
)
from shared.model import NewSecret, SecretVersion
from shared.operator_config import OperatorConfig
from shared.policy import ROTATOR_RECORD_PREFIX, Policy, carried_tags, resolve_policy, rotator_record
from shared.ports import (
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
from shared.record import (  # noqa: F401 - re-exported: the engine's vocabulary, importable from here too
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
from shared.settings import Settings
from shared.validation import same_version

if TYPE_CHECKING:
    from shared.telemetry import Telemetry

log = logging.getLogger(__name__)

StepHook = Callable[[Step, RotationRequest], Awaitable[None]]
ConsumersFor = Callable[[str, str | None], Sequence[Consumer]]


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
            from shared.telemetry import NO_TELEMETRY  # not at import: cold start

            telemetry = NO_TELEMETRY
        self._telemetry = telemetry

    # ----------------------------------------------------------------- public

    async def run(self, req: RotationRequest) -> Outcome:
        """Handle one request: rotate if due, resume an unfinished rotation, or skip.

        When nothing is due, the value the vault serves is checked downstream
        (rotators with a liveness check) and repaired under the lease if refused.
        Traced as one ``rotation`` span with a child per step (shared/telemetry.py)."""
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
        try:
            current = await store.get(req.secret_name)
        except SecretNotFound:
            raise not_managed from None
        policy = self._policy(req.secret_name, current)
        rotate, why = self._decide(req, policy, current)
        if req.dry_run:
            return self._plan(req, policy, current, rotate, why)
        if not rotate and not self._has_work(policy, current):
            live = await self._check_served(req, policy, current)
            if live != "refused":
                log.info("rotation skipped", extra=self._log_extra(req, None, why=why))
                skipped = self._skipped(req, current, why)
                skipped.liveness = live
                return skipped
        latest = current

        async def done_meanwhile() -> bool:
            """While queueing for the lease: has the holder made this request moot?"""
            nonlocal latest
            latest = await store.get(req.secret_name)
            fresh_policy = self._policy(req.secret_name, latest)
            needed, _ = self._decide(req, fresh_policy, latest)
            return not needed and not self._has_work(fresh_policy, latest)

        try:
            # Key Vault names are case-insensitive: one lease per secret, however a caller spells it.
            lease_key = f"{req.vault}/{req.secret_name}".lower()
            async with self._locker.hold(lease_key, done_meanwhile) as lease:
                return await self._run_locked(store, req, lease)
        except LeaseNotNeeded:
            _, why = self._decide(req, self._policy(req.secret_name, latest), latest)
            log.info("rotation skipped", extra=self._log_extra(req, None, why=why))
            return self._skipped(req, latest, why)

    async def _run_locked(self, store: SecretStore, req: RotationRequest, lease: Lease) -> Outcome:
        current = await store.get(req.secret_name)  # decide again on a fresh read, under the lease
        policy = self._policy(req.secret_name, current)
        recovered = await self._recover_intent(store, req, policy, current, lease)
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

    def _has_work(self, policy: Policy, current: SecretVersion) -> bool:
        """Whether an unfinished rotation recorded on the current version can progress now."""
        tags = current.properties.tags
        state = pending_state(tags)
        if state is None:
            return False
        if state in (State.COMMITTED, State.RETIRED) or tags.get(Tag.PENDING):
            return True
        rotator = self._rotators.get(self._kind(policy) or "")
        return rotator is not None and self._retire_ready(rotator, policy, current, tags)[0]

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

    def _decide(self, req: RotationRequest, policy: Policy, current: SecretVersion) -> tuple[bool, str]:
        props = current.properties
        emergency = req.trigger == Trigger.EMERGENCY
        if policy.manual and not (req.force or emergency):
            raise ManualOnly(f"secret {req.secret_name} is rotated by hand only; use force to rotate it")
        if policy.manual and self._kind(policy) is None:
            raise ManualOnly(
                f"secret {req.secret_name} is rotated by hand only and the operator file names no generator "
                "for it; rotate it at its provider and write the new version"
            )
        is_event = req.trigger in (Trigger.NEAR_EXPIRY, Trigger.EXPIRED)
        if is_event and req.event_version and not same_version(req.event_version, props.version):
            return False, (
                f"duplicate: the event names version {req.event_version}, "
                f"the vault already serves {props.version}"
            )
        if req.expected_version and not same_version(req.expected_version, props.version):
            return False, f"already rotated: the vault serves {props.version}, not {req.expected_version}"
        if pending_state(props.tags) is not None and not emergency:
            if req.force:
                raise OverlapActive(
                    f"secret {req.secret_name}: the previous rotation is still in its overlap, and consumers may "
                    "still hold the previous credential; force would invalidate it. Wait for its retirement "
                    "(see the status route), or use emergency to revoke it at once (leak response)"
                )
            return False, "the previous rotation is still in its overlap (retirement pending)"
        if emergency:
            return True, "emergency"
        if req.force:
            return True, "forced"
        if req.trigger == Trigger.HTTP:
            return True, "requested"
        if req.trigger in (Trigger.NEAR_EXPIRY, Trigger.EXPIRED) and req.event_version:
            not_due = self._extended(req, props.expires_on)
            if not_due is not None:
                return False, not_due
            return True, f"Key Vault reported {req.trigger} for the current version"
        return policy.is_due(props, self._clock(), self._settings.lead_days)

    def _extended(self, req: RotationRequest, expires_on: datetime | None) -> str | None:
        """Why an event for the current version no longer calls for a rotation, or None if it does.

        Decided on the vault's current state: an expiry PATCHed later after Key Vault raised the
        event takes the version out of the near-expiry window, and the event is then moot. An
        hour of slack absorbs clock skew between Key Vault and this app.
        """
        if expires_on is None:
            return None  # expiry removed: a managed secret without expiry is due
        due_at = expires_on - timedelta(days=self._settings.lead_days)
        if due_at - EVENT_CLOCK_SLACK <= self._clock():
            return None
        reported = req.event_expires_on
        if reported is not None and expires_on <= reported + timedelta(seconds=1):
            return (
                f"not due: the current version expires {expires_on.isoformat()}, the event (for expiry "
                f"{reported.isoformat()}) arrived before the near-expiry window (due {due_at.isoformat()})"
            )
        was = f" from {reported.isoformat()}" if reported is not None else ""
        return f"expiry was extended{was} to {expires_on.isoformat()}: not due until {due_at.isoformat()}"

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
        finished, fails here and changes nothing."""
        await lease.ensure()
        latest = await store.get(req.secret_name)
        if latest.properties.version != expected:
            raise Superseded(
                f"secret {req.secret_name}: the vault now serves version {latest.properties.version}, "
                f"not {expected}; this worker stops"
            )

    def _context(self, req: RotationRequest, policy: Policy, current: SecretVersion | None, rotation_id: str,
                 now: datetime, reader: SecretReader, *, expires_on: datetime | None = None,
                 record: Mapping[str, str] | None = None, emergency: bool = False) -> RotationContext:
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
        ctx = self._context(req, policy, current, rotation_id, now, _RunReader(store), expires_on=expires_on)
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
        await self._fence(store, req, lease, current.properties.version)
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
                if single:
                    await self._clear_intent(store, req)
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

    async def _recover_intent(
        self, store: SecretStore, req: RotationRequest, policy: Policy, current: SecretVersion, lease: Lease
    ) -> Outcome | None:
        """Finish a single-credential rotation whose worker died between its intent and its commit.

        If the intended value is live downstream, commit it (no second password change). If it is not
        and the served one still works, the worker died before ``apply``: drop the intent. If neither
        works, apply the intended value (what the dead worker was doing) and commit it."""
        kind = self._kind(policy)
        rotator = self._rotators.get(kind or "")
        if kind is None or rotator is None or policy.manual:
            return None
        probe_ctx = self._context(req, policy, current, "intent", self._clock(), _RunReader(store))
        if not self._single_credential(rotator, probe_ctx):
            return None
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
        ctx = self._context(req, policy, current, rotation_id, now, _RunReader(store), expires_on=expires_on)
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
                            _RunReader(store))
        if await rotator.check(ctx, current.value):
            return None
        extra = self._log_extra(req, ctx.rotation_id, version=current.properties.version)
        log.warning("the value the vault serves is refused downstream; repairing it", extra=extra)
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
                await self._fence(store, req, lease, version.properties.version)  # before the tag write
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
                # Record the acknowledgements now; when retirement follows at once, its write records both.
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
                                emergency=revoke_now)
            self._require_target(policy)
            await self._fence(store, req, lease, version.properties.version)
            if isinstance(rotator, LivenessRotator) and not await rotator.check(ctx, version.value):
                # Never retire the last working credential: the value being kept must work first.
                repaired = await self._repair_locked(store, req, policy, version, lease)
                if repaired is not None:
                    repaired.reason += "; retirement postponed to the next invocation"
                    return repaired
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
                await lease.ensure()
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
    ) -> tuple[bool, str]:
        now = self._clock()
        rotated_at = parse_time(tags.get(Tag.AT)) or version.properties.created_on or now
        overlap = rotator.retire_overlap(policy.options)
        grace = timedelta(hours=self._settings.grace_period_hours)
        if now < rotated_at + overlap:
            return False, f"retirement waits for the overlap until {(rotated_at + overlap).isoformat()}"
        n_acked, _, n_total = tags.get(Tag.ACKS, "0/0").partition("/")
        # With no consumer configured nobody can acknowledge: only the grace period retires.
        everyone_acked = n_total.isdigit() and int(n_total) > 0 and n_acked == n_total and not tags.get(Tag.PENDING)
        # Replica safety: a ping reaches one instance. Until each consumer's
        # maximum cache age has passed, some instance may still use the old
        # value, unless its acknowledgement covered every instance.
        consumers = list(self._consumers_for(version.properties.name, policy.consumers_tag))
        cache_all = timedelta(seconds=max((c.max_cache_seconds for c in consumers), default=0))
        cache_unconfirmed = timedelta(
            seconds=max((c.max_cache_seconds for c in consumers if c.acknowledges != "service"), default=0)
        )
        if self._settings.retire_when == "acknowledged_or_grace" and everyone_acked:
            if now >= rotated_at + cache_unconfirmed:
                return True, "every consumer acknowledged"
            until = (rotated_at + cache_unconfirmed).isoformat()
            return False, f"acknowledged per instance; retirement waits for the consumers' cache age until {until}"
        deadline = rotated_at + max(grace, overlap, cache_all)
        if now >= deadline:
            return True, "grace period ended"
        return False, f"retirement waits for acknowledgements or the grace period until {deadline.isoformat()}"

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


async def _drop(task: asyncio.Task[Any]) -> None:
    """Cancel ``task`` if it is still running and wait for it, without raising what it raised."""
    if not task.done():
        task.cancel()
    await asyncio.wait([task])
    if not task.cancelled():
        task.exception()  # retrieved: whatever it raised is moot once dropped
