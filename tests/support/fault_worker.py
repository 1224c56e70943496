"""A rotation worker in a process of its own, for the real-death fault matrix.

``python -m tests.support.fault_worker '<json>'`` runs one delivery of a
rotation request with the app's real container (Key Vault emulator, Azurite
lease, PostgreSQL/Redis). Right after the step named ``stop_at`` it prints
``STOPPED <step>`` and sends itself SIGSTOP, so it halts exactly at the step
boundary, lease held. The parent then SIGKILLs it (a death) or leaves it
stopped past the lease and SIGCONTs it later (a pause). Its last line is
``RESULT <json>``: the outcome's status or the error code, never a value.
Its log records go to stderr, which the parent adds to the suite's secret-leak
scan.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import signal
import sys
from typing import Any

from shared.bootstrap import Container
from shared.config.settings import Settings
from shared.domain.errors import RotationError
from shared.domain.record import RotationRequest, Step, Trigger


def settings_to_json(settings: Settings) -> dict[str, Any]:
    return dataclasses.asdict(settings)


def settings_from_json(data: dict[str, Any]) -> Settings:
    fields = {f.name for f in dataclasses.fields(Settings)}
    values = {k: v for k, v in data.items() if k in fields}
    values["allowed_vaults"] = tuple(values.get("allowed_vaults") or ())
    return Settings(**values)


def log_to_stderr() -> None:
    """The app's records (DEBUG) and everyone else's (INFO), in the leak scan's format."""
    from tests.support.leakscan import ExtrasFormatter

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(ExtrasFormatter())
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    logging.getLogger("shared").setLevel(logging.DEBUG)


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


async def main(config: dict[str, Any]) -> int:
    stop_at = Step(config["stop_at"])
    stopped = False

    async def hook(step: Step, req: RotationRequest) -> None:
        nonlocal stopped
        if step == stop_at and not stopped:
            stopped = True
            say(f"STOPPED {step.value}")
            os.kill(os.getpid(), signal.SIGSTOP)  # halts here; SIGKILL ends it, SIGCONT resumes it

    request = RotationRequest(config["vault"], config["secret"], Trigger(config["trigger"]),
                              event_version=config.get("event_version"))
    container = Container(settings_from_json(config["settings"]), after_step=hook)
    try:
        outcome = await container.engine.run(request)
        if not stopped and stop_at in (Step.NOTIFY, Step.RETIRE):
            # Retirement waits for the rotator's overlap (1 s for JWT here): a later invocation does it.
            await asyncio.sleep(config.get("overlap_seconds", 1.1))
            outcome = await container.engine.complete_pending(request.vault, request.secret_name)
        say("RESULT " + json.dumps({"status": outcome.status, "reason": outcome.reason}))
        return 0
    except RotationError as exc:
        say("RESULT " + json.dumps({"status": "error", "code": exc.code, "reason": exc.message}))
        return 3
    finally:
        await container.aclose()


if __name__ == "__main__":
    log_to_stderr()
    sys.exit(asyncio.run(main(json.loads(sys.argv[1]))))
