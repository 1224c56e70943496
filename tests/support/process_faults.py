"""Real process deaths and pauses for the fault matrix (issue 11).

One *cell* = one rotator x one step x one fault:

- ``kill``: the rotation runs in a child process (``tests.support.fault_worker``),
  which halts itself with SIGSTOP right after the step; the parent then sends
  SIGKILL. The dead worker's blob lease stays held until it lapses (15 s).
- ``pause``: the child is left stopped, past its lease, while redeliveries
  complete the rotation; then it gets SIGCONT and carries on where it stopped,
  which is when fencing must stop it from changing anything.

The parent plays Event Grid: it redelivers the same event every
``redelivery_seconds`` (10 s, Event Grid's first retry delay, by default),
starting one period after the fault, until the rotation has converged
(retired). A probe thread reads the vault's current value every
``probe_interval`` seconds during the whole cell and tries it downstream; the
sum of the sampled intervals in which it was refused is the lockout window.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from kvemulator import KeyVaultEmulator
from shared.bootstrap import Container
from shared.config.settings import Settings
from shared.domain.errors import RotationError
from shared.domain.record import RotationRequest, Trigger, intent_secret_name
from tests.support import leakscan
from tests.support.emulator import latest_of
from tests.support.fault_worker import settings_to_json

PROJECT_ROOT = Path(__file__).resolve().parents[2]
REDELIVERY_SECONDS = 10.0
MAX_REDELIVERIES = 8


def _no_problems() -> list[str]:
    return []


def _nothing() -> str:
    return ""


@dataclass
class CellSpec:
    rotator: str  # matrix row: random, jwt-raw, ..., key-slot-openai, entra (test_process_fault_matrix.ROTATORS)
    step: str
    fault: str  # kill | pause
    secret: str
    works: Callable[[str], bool]
    no_orphans: Callable[[], bool]
    # What the provider saw (slots regenerated, passwords added/removed), for provider-generated credentials.
    provider: Callable[[], list[str]] = _no_problems
    provider_calls: Callable[[], str] = _nothing  # what the provider was asked to do, for the table


@dataclass
class CellResult:
    spec: CellSpec
    reached: bool = False
    versions_written: int = 0
    intents_written: int = 0
    rotations: int = 0
    works: bool = False
    no_orphans: bool = False
    lockout_seconds: float = 0.0
    redeliveries: int = 0
    converge_seconds: float = 0.0
    child: str = ""
    notes: list[str] = field(default_factory=list)
    provider_problems: list[str] = field(default_factory=list)
    provider_calls: str = ""

    @property
    def ok(self) -> bool:
        return (self.reached and self.rotations == 1 and self.works and self.no_orphans
                and not self.provider_problems)

    def cell_text(self) -> str:
        if not self.reached:
            return "n/a"
        mark = "ok" if self.ok else "FAIL"
        return (f"{mark}: {self.versions_written}v, works={'yes' if self.works else 'NO'}, "
                f"lockout {self.lockout_seconds:.1f}s")


class _Probe:
    """Reads the served value and tries it downstream, in its own thread."""

    def __init__(self, emu: KeyVaultEmulator, secret: str, works: Callable[[str], bool], interval: float) -> None:
        self._emu, self._secret, self._works, self._interval = emu, secret, works, interval
        self.samples: list[tuple[float, bool]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            latest = self._emu.latest(self._secret)
            ok = latest is not None and self._works(str(latest["value"]))
            self.samples.append((time.monotonic(), ok))
            self._stop.wait(self._interval)

    def __enter__(self) -> _Probe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=15)

    @property
    def lockout_seconds(self) -> float:
        total = 0.0
        for (t, ok), (t_next, _) in zip(self.samples, self.samples[1:], strict=False):
            if not ok:
                total += t_next - t
        if self.samples and not self.samples[-1][1]:
            total += self._interval
        return total


def _stopped(pid: int) -> bool:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return False
    return fields[0] in ("T", "t")


def _converged(emu: KeyVaultEmulator, secret: str) -> bool:
    tags = (emu.latest(secret) or {}).get("tags") or {}
    return tags.get("rotated-state") == "retired" and "rotated-replaces" not in tags


async def run_cell(spec: CellSpec, emu: KeyVaultEmulator, settings: Settings, *,
                   redelivery_seconds: float = REDELIVERY_SECONDS, probe_interval: float = 0.2,
                   log_dir: Path | None = None) -> CellResult:
    result = CellResult(spec)
    version = str(latest_of(emu, spec.secret)["version"])
    initial_versions = len(emu.versions(spec.secret))
    request = RotationRequest(settings.default_vault or settings.allowed_vaults[0], spec.secret,
                              Trigger.NEAR_EXPIRY, event_version=version)
    config = {"settings": settings_to_json(settings), "vault": request.vault, "secret": spec.secret,
              "trigger": str(request.trigger), "event_version": version, "stop_at": spec.step}
    log_dir = log_dir or Path(tempfile.gettempdir())
    stderr_path = log_dir / f"fault-{spec.rotator}-{spec.step}-{spec.fault}.stderr"
    healthy = Container(settings)
    with _Probe(emu, spec.secret, spec.works, probe_interval) as probe, stderr_path.open("wb") as stderr:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.support.fault_worker", json.dumps(config),
            cwd=PROJECT_ROOT, stdout=asyncio.subprocess.PIPE, stderr=stderr,
            env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)},
        )
        assert proc.stdout is not None
        try:
            line = (await asyncio.wait_for(proc.stdout.readline(), 120)).decode()
            if not line.startswith("STOPPED"):
                result.child = f"never reached {spec.step}: {line.strip()[:200]}"
                await proc.wait()
                return result
            result.reached = True
            for _ in range(1000):
                if _stopped(proc.pid):
                    break
                await asyncio.sleep(0.01)
            fault_at = time.monotonic()
            if spec.fault == "kill":
                proc.kill()  # SIGKILL: no cleanup, the lease stays held until it lapses
                await proc.wait()
                result.child = "SIGKILL"
            next_delivery = fault_at + redelivery_seconds
            while result.redeliveries < MAX_REDELIVERIES:
                await asyncio.sleep(max(0.0, next_delivery - time.monotonic()))
                result.redeliveries += 1
                try:
                    await healthy.engine.run(request)  # Event Grid delivers the same event again
                except RotationError as exc:
                    result.notes.append(f"redelivery {result.redeliveries}: {exc.code}")
                if await asyncio.to_thread(_converged, emu, spec.secret):
                    break
                next_delivery += redelivery_seconds
            result.converge_seconds = time.monotonic() - fault_at
            if spec.fault == "pause":
                proc.send_signal(signal.SIGCONT)  # the frozen worker wakes up and carries on
                rest = (await asyncio.wait_for(proc.stdout.read(), 120)).decode()
                await proc.wait()
                leakscan.record("fault-worker-stdout", rest)
                last = [ln for ln in rest.splitlines() if ln.startswith("RESULT ")]
                outcome = json.loads(last[-1][7:]) if last else {"status": f"exit {proc.returncode}"}
                result.child = str(outcome.get("code") or outcome.get("status"))
                with contextlib.suppress(RotationError):
                    await healthy.engine.run(request)  # one more delivery after the resumed worker is done
            await asyncio.sleep(probe_interval * 2)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            await healthy.aclose()
            # The worker's log records and tracebacks join the suite's secret-leak scan (tests/support/leakscan).
            leakscan.record("fault-worker-stderr", stderr_path.read_text(encoding="utf-8", errors="replace"))
    result.lockout_seconds = round(probe.lockout_seconds, 1)
    result.versions_written = len(emu.versions(spec.secret)) - initial_versions
    intent = intent_secret_name(spec.secret)
    result.intents_written = len(emu.versions(intent)) if intent in emu.secret_names() else 0
    result.rotations = len({str(v["tags"]["rotated-id"]) for v in emu.versions(spec.secret)
                            if (v.get("tags") or {}).get("rotated-id")})
    latest = emu.latest(spec.secret)
    result.works = latest is not None and await asyncio.to_thread(spec.works, str(latest["value"]))
    result.no_orphans = await asyncio.to_thread(spec.no_orphans)
    result.provider_problems = await asyncio.to_thread(spec.provider)
    result.provider_calls = spec.provider_calls()
    return result
