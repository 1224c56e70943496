"""Timer trigger: the daily safety-net sweep.

Events are the fast path; this catches what they miss (a lost delivery, a
secret created without an expiry) and drives unfinished rotations to their
end once consumers acknowledged or the grace period passed. The schedule is
the app setting ``ROTATION_SWEEP_SCHEDULE`` (NCRONTAB, six fields, UTC),
resolved by the host, so changing it needs no deployment. Its one default,
:data:`DEFAULT_SWEEP_SCHEDULE` (every 6 hours), is what the Bicep parameter,
``local.settings.example.json`` and the README state; a test keeps them equal.
``use_monitor`` makes the host record the last run in storage, so a run
missed while the app was down is made up once it is back.

A sweep with per-secret failures still completes normally: the failures are
in its one summary line (logged at WARNING) and its ``rotation.sweep`` span,
each failed rotation counts in ``rotation.runs`` (the rotation-failed alert),
and the next scheduled run tries them again. A completed run counts in
``rotation.sweep.runs``, whose absence for 26 hours raises an alert.
"""

from __future__ import annotations

import logging

import azure.functions as func

from shared.bootstrap import get_container
from shared.service.sweep import SweepDeps, SweepSummary, sweep

log = logging.getLogger(__name__)

bp = func.Blueprint()

SWEEP_SCHEDULE_SETTING = "ROTATION_SWEEP_SCHEDULE"
DEFAULT_SWEEP_SCHEDULE = "0 0 */6 * * *"  # every 6 hours, on the hour (UTC)


async def handle_sweep(deps: SweepDeps, *, past_due: bool = False) -> SweepSummary:
    if past_due:
        log.info("rotation sweep is running late (past due)")
    return await sweep(deps)


@bp.function_name("rotation_sweep")
@bp.timer_trigger(
    arg_name="timer",
    schedule="%ROTATION_SWEEP_SCHEDULE%",
    run_on_startup=False,
    use_monitor=True,
)
async def rotation_sweep(timer: func.TimerRequest) -> None:
    container = get_container()
    try:
        await handle_sweep(container, past_due=timer.past_due)
    finally:
        await container.flush_telemetry()
