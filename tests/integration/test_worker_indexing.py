"""The Python worker's own indexing accepts our app and rejects a broken one.

``func start`` cannot run here; scripts/worker-index.sh runs the worker
library's loader (azure-functions-runtime on Python 3.13, in .venv-worker)
over an app directory, which is where a binding/signature mismatch would
stop the host at start.
"""

from __future__ import annotations

import json
import re
import subprocess
import textwrap
from pathlib import Path
from typing import Any

import pytest
from packaging.markers import Marker

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "worker-index.sh"
NO_PYTHON_313 = 3


def run_index(app_dir: Path) -> tuple[int, dict[str, Any]]:
    result = subprocess.run(["bash", str(SCRIPT), str(app_dir)], capture_output=True, text=True, timeout=240,
                            check=False)
    if result.returncode == NO_PYTHON_313:
        pytest.skip("no Python 3.13 on this machine: the worker indexing check cannot run")
    assert result.stdout, result.stderr
    return result.returncode, json.loads(result.stdout)


@pytest.fixture(scope="module")
def report() -> dict[str, Any]:
    code, result = run_index(ROOT)
    assert code == 0 and result["ok"], json.dumps(result.get("error"), indent=2)
    return result


@pytest.fixture(scope="module")
def indexed_app(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f["name"]: f for f in report["functions"]}


def locked_pin(lock: Path, name: str, python: str) -> str:
    """The version ``lock`` pins ``name`` to on Python ``python`` (e.g. ``3.13``), markers honoured."""
    environment = {"python_version": python, "python_full_version": python + ".0"}
    pattern = rf"^{re.escape(name)}==(\S+)(?: ; (.*?))? \\$"
    versions: list[str] = [version for version, marker in re.findall(pattern, lock.read_text(), re.MULTILINE)
                if not marker or Marker(marker).evaluate(environment)]
    assert len(versions) == 1, (name, versions)
    return versions[0]


def test_the_check_runs_the_locked_worker_on_python_3_13_with_the_sdk_the_app_deploys_there(
        report: dict[str, Any]) -> None:
    assert report["python"].startswith("3.13.")
    assert report["runtime"] == locked_pin(ROOT / "requirements-worker.txt", "azure-functions-runtime", "3.13")
    deployed = locked_pin(ROOT / "requirements.txt", "azure-functions", "3.13")
    assert report["azureFunctions"] == deployed
    assert locked_pin(ROOT / "requirements-worker.txt", "azure-functions", "3.13") == deployed


def trigger_of(function: dict[str, Any]) -> dict[str, Any]:
    triggers: list[dict[str, Any]] = [b for b in function["bindings"] if b["type"].endswith("Trigger")]
    assert len(triggers) == 1
    return triggers[0]


def test_our_app_indexes_with_exactly_the_expected_functions(indexed_app: dict[str, dict[str, Any]]) -> None:
    assert sorted(indexed_app) == ["rotate_on_event", "rotate_secret", "rotation_plan", "rotation_status",
                                   "rotation_sweep"]
    assert all(f["isAsync"] for f in indexed_app.values())
    assert all(f["scriptFile"] == "function_app.py" for f in indexed_app.values())


@pytest.mark.parametrize(("name", "route", "method"), [
    ("rotate_secret", "secrets/{name}/rotate", "POST"),
    ("rotation_status", "secrets/{name}/rotation", "GET"),
    ("rotation_plan", "secrets", "GET"),
])
def test_http_routes_need_a_function_key_and_accept_one_method(indexed_app: dict[str, dict[str, Any]], name: str,
                                                               route: str, method: str) -> None:
    function = indexed_app[name]
    trigger = trigger_of(function)
    assert trigger["type"] == "httpTrigger" and trigger["name"] == "req"
    assert trigger["route"] == route
    assert trigger["methods"] == [method]
    assert trigger["authLevel"] == "FUNCTION"
    outputs = [b for b in function["bindings"] if b["direction"] == "OUT"]
    assert outputs == [{"direction": "OUT", "type": "http", "name": "$return"}]


def test_sweep_timer_reads_its_schedule_from_an_app_setting(indexed_app: dict[str, dict[str, Any]]) -> None:
    trigger = trigger_of(indexed_app["rotation_sweep"])
    assert trigger["type"] == "timerTrigger" and trigger["name"] == "timer"
    assert trigger["schedule"] == "%ROTATION_SWEEP_SCHEDULE%"
    assert trigger["runOnStartup"] is False
    assert trigger["useMonitor"] is True


def test_event_grid_function_keeps_its_trigger(indexed_app: dict[str, dict[str, Any]]) -> None:
    trigger = trigger_of(indexed_app["rotate_on_event"])
    assert trigger == {"direction": "IN", "type": "eventGridTrigger", "name": "event"}


BROKEN_APPS = {
    "trigger arg name differs from the parameter": """
        @app.route(route="x", auth_level=func.AuthLevel.FUNCTION)
        async def handler(request: func.HttpRequest) -> func.HttpResponse:
            return func.HttpResponse("")
    """,
    "parameter annotated with the wrong binding type": """
        @app.timer_trigger(arg_name="timer", schedule="%ROTATION_SWEEP_SCHEDULE%")
        async def handler(timer: func.HttpRequest) -> None:
            return None
    """,
}


@pytest.mark.parametrize("defect", sorted(BROKEN_APPS))
def test_a_binding_the_host_would_reject_fails_the_check(tmp_path: Path, defect: str) -> None:
    source = "import azure.functions as func\n\napp = func.FunctionApp()\n" + textwrap.dedent(BROKEN_APPS[defect])
    (tmp_path / "function_app.py").write_text(source, encoding="utf-8")
    code, report = run_index(tmp_path)
    assert code == 1 and report["ok"] is False
    assert report["error"]["type"] == "FunctionLoadError"
    assert "handler" in report["error"]["message"]


def test_an_app_without_a_function_app_fails_the_check(tmp_path: Path) -> None:
    (tmp_path / "function_app.py").write_text("import azure.functions as func\n", encoding="utf-8")
    code, report = run_index(tmp_path)
    assert code == 1 and report["ok"] is False
    assert "function app" in report["error"]["message"]
