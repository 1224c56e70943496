"""The README's local-run path, as a newcomer pastes it (up to `func start`, which cannot run here).

`make local-up` (scripts/local-services.sh) starts the Key Vault emulator and
Azurite in the background, waits until both answer and says where the CA and
settings are; `make local-down` stops them. The end-to-end test runs the same
script on free ports and temporary directories.
"""

from __future__ import annotations

import http.client
import os
import re
import socket
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "local-services.sh"


def local_run_section() -> str:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = re.search(r"^## Run it locally with `func start`\n(.*?)^## ", readme, re.MULTILINE | re.DOTALL)
    assert section, "README has no local-run section"
    return section.group(1)


def code_lines(section: str) -> list[str]:
    blocks = re.findall(r"^```bash\n(.*?)^```", section, re.MULTILINE | re.DOTALL)
    lines = []
    for block in blocks:
        for line in block.replace("\\\n", " ").splitlines():
            command = line.split(" #", 1)[0].strip()
            if command:
                lines.append(command)
    return lines


def test_the_local_run_commands_reach_func_start_in_order_with_the_venv_active() -> None:
    lines = code_lines(local_run_section())
    expected = ["make local-up", "cp local.settings.example.json local.settings.json", "source .venv/bin/activate",
                "func start"]
    positions = [lines.index(command) for command in expected]
    assert positions == sorted(positions), lines


def test_the_prerequisites_name_every_tool_the_section_uses() -> None:
    section = local_run_section()
    prerequisites = re.search(r"^Prerequisites:(.*?)\n\n", section, re.MULTILINE | re.DOTALL)
    assert prerequisites
    listed = prerequisites.group(1)
    for tool in ["Azure Functions Core Tools", "Python 3.11", "Node", "make", "jq", "curl"]:
        assert tool in listed, f"prerequisites do not list {tool}"
    used = {re.split(r"[\s=]", line.split("$(", 1)[-1])[0] for line in code_lines(section)}
    assert used <= {"make", "cp", "source", "func", "curl", "jq", "version", "deactivate"}, used


def test_the_event_commands_say_they_go_to_a_second_terminal() -> None:
    section = local_run_section()
    before_event = section.split("runtime/webhooks/EventGrid", 1)[0]
    assert "second terminal" in before_event


def test_local_state_is_git_ignored_and_kept_out_of_the_deployment_package() -> None:
    gitignore = (ROOT / ".gitignore").read_text(encoding="utf-8").splitlines()
    funcignore = (ROOT / ".funcignore").read_text(encoding="utf-8").splitlines()
    for directory in [".azurite/", ".emulator/", "local.settings.json"]:
        assert directory in gitignore
        assert directory in funcignore


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def local_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    if not (ROOT / ".tools/azurite/node_modules/.bin/azurite-blob").exists() or not (ROOT / ".venv").exists():
        pytest.fail("run scripts/bootstrap.sh first (make test does)")
    env = dict(os.environ)
    env.update({
        "LOCAL_EMULATOR_DIR": str(tmp_path / "emulator"),
        "LOCAL_EMULATOR_PORT": str(free_port()),
        "LOCAL_AZURITE_DIR": str(tmp_path / "azurite"),
        "LOCAL_AZURITE_PORT": str(free_port()),
    })
    yield env
    subprocess.run(["bash", str(SCRIPT), "stop"], env=env, capture_output=True, timeout=60, check=False)


def run(env: dict[str, str], action: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(SCRIPT), action], env=env, capture_output=True, text=True, timeout=90,
                          check=False)


def test_local_up_starts_both_services_in_the_background_says_where_the_ca_is_and_local_down_stops_them(
        local_env: dict[str, str]) -> None:
    started = run(local_env, "start")
    assert started.returncode == 0, started.stderr
    emulator_dir = Path(local_env["LOCAL_EMULATOR_DIR"])
    ca = emulator_dir / "ca.pem"
    assert f"{ca}" in started.stdout and f"{emulator_dir / 'settings.json'}" in started.stdout
    assert ca.is_file() and (emulator_dir / "settings.json").is_file()

    # The emulator answers over HTTPS with the printed CA (401: the Key Vault bearer challenge).
    context = ssl.create_default_context(cafile=str(ca))
    connection = http.client.HTTPSConnection("127.0.0.1", int(local_env["LOCAL_EMULATOR_PORT"]), context=context,
                                             timeout=10)
    connection.request("GET", "/secrets?api-version=7.5")
    assert connection.getresponse().status == 401
    connection.close()
    assert listening(int(local_env["LOCAL_AZURITE_PORT"]))

    again = run(local_env, "start")
    assert again.returncode == 0 and "already running" in again.stderr

    pids = [int((Path(local_env[d]) / f).read_text()) for d, f in
            [("LOCAL_EMULATOR_DIR", "emulator.pid"), ("LOCAL_AZURITE_DIR", "azurite.pid")]]
    stopped = run(local_env, "stop")
    assert stopped.returncode == 0, stopped.stderr
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert not listening(int(local_env["LOCAL_EMULATOR_PORT"]))
    assert not listening(int(local_env["LOCAL_AZURITE_PORT"]))
