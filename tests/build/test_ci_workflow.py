"""The GitHub Actions workflow users run on their side (it cannot run here).

What it must do: `make test`, compile and lint the Bicep with the real Bicep
CLI, and run the Functions worker indexing check, on every pull request, with
a read-only token and actions pinned to commit SHAs. The file is checked as
text (no YAML library in the dev lock), by its job blocks.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
WORKFLOW = ROOT / ".github" / "workflows" / "ci.yml"


def jobs() -> dict[str, str]:
    text = WORKFLOW.read_text(encoding="utf-8")
    body = text.split("\njobs:\n", 1)[1]
    found = dict(re.findall(r"^  ([a-z-]+):\n((?:    .*\n|\n)+)", body, re.MULTILINE))
    assert found, "no jobs"
    return found


def test_the_workflow_runs_on_pull_requests_with_a_read_only_token() -> None:
    text = WORKFLOW.read_text(encoding="utf-8")
    assert "\t" not in text, "YAML forbids tabs"
    assert re.search(r"^on:\n  pull_request:\n", text, re.MULTILINE)
    assert re.search(r"^permissions:\n  contents: read\n", text, re.MULTILINE)


def test_every_action_is_pinned_to_a_commit_sha_and_checkout_keeps_no_token() -> None:
    text = WORKFLOW.read_text(encoding="utf-8")
    uses = re.findall(r"^\s+- uses: (\S+)(.*)$", text, re.MULTILINE)
    assert uses
    for action, comment in uses:
        assert re.fullmatch(r"[\w.-]+/[\w.-]+@[0-9a-f]{40}", action), f"{action} is not pinned to a commit"
        assert re.fullmatch(r" # v\d+(\.\d+)*", comment), f"{action}: say which release the SHA is"
    for job, body in jobs().items():
        if "actions/checkout@" in body:
            assert "persist-credentials: false" in body, job


def test_the_workflow_runs_make_test() -> None:
    assert re.search(r"^        run: make test$", jobs()["test"], re.MULTILINE)


def test_the_workflow_compiles_and_lints_every_bicep_file_with_the_bicep_cli() -> None:
    bicep = jobs()["bicep"]
    assert "az bicep install" in bicep
    assert "az bicep build --file" in bicep and "az bicep build-params --file" in bicep
    assert "az bicep lint --file" in bicep
    assert "find infra -name '*.bicep'" in bicep


def test_the_workflow_runs_the_worker_indexing_check_on_python_3_13() -> None:
    worker = jobs()["worker-index"]
    assert 'python-version: "3.13"' in worker
    assert "run: bash scripts/worker-index.sh" in worker


def test_the_readme_links_the_workflow() -> None:
    assert "(.github/workflows/ci.yml)" in (ROOT / "README.md").read_text(encoding="utf-8")
