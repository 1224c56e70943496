"""The Python versions the app supports are stated once and agree everywhere.

Flex Consumption offers Python 3.10-3.13 (3.14 in preview); the app supports
3.11, 3.12 and 3.13 (3.10's support ended in October 2026). The same list must
hold in pyproject.toml, the Bicep parameter that picks the version Azure runs,
the multi-version unit run (`make unit-pythons`), the GitHub workflow and the
README.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from packaging.specifiers import SpecifierSet
from pycep import BicepParser

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
SUPPORTED = ["3.11", "3.12", "3.13"]


@cache
def parse(path: Path) -> Mapping[str, Any]:
    return BicepParser().parse(file_path=path)


def allowed_and_default(parameter: dict[str, Any]) -> tuple[list[str], str]:
    allowed = [d["argument"] for d in parameter["decorators"] if d["type"] == "allowed"]
    assert len(allowed) == 1, "pythonVersion must list its allowed values"
    return allowed[0], parameter["default"]


def test_requires_python_admits_exactly_the_supported_versions() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    spec = SpecifierSet(project["project"]["requires-python"])
    for version in SUPPORTED:
        assert f"{version}.0" in spec and f"{version}.9" in spec
    assert "3.10.12" not in spec
    assert "3.14.0" not in spec
    # Lint and types target the oldest supported version, so nothing newer slips in.
    assert project["tool"]["ruff"]["target-version"] == "py" + SUPPORTED[0].replace(".", "")
    assert project["tool"]["mypy"]["python_version"] == SUPPORTED[0]


@pytest.mark.parametrize("path", [INFRA / "main.bicep", INFRA / "modules" / "function-app.bicep"],
                         ids=["main", "function-app"])
def test_the_bicep_parameter_offers_exactly_the_supported_versions(path: Path) -> None:
    allowed, default = allowed_and_default(parse(path)["parameters"]["pythonVersion"])
    assert allowed == SUPPORTED
    assert default in SUPPORTED


def test_the_function_app_runs_the_python_version_the_parameter_chooses() -> None:
    module = parse(INFRA / "modules" / "function-app.bicep")
    sites = [r for r in module["resources"].values() if r["type"] == "Microsoft.Web/sites"]
    assert len(sites) == 1
    assert sites[0]["config"]["properties"]["functionAppConfig"]["runtime"] == {"name": "python",
                                                                                "version": "pythonVersion"}
    main = parse(INFRA / "main.bicep")
    calls = [m for m in main["modules"].values() if m["detail"]["path"] == "modules/function-app.bicep"]
    assert len(calls) == 1
    assert calls[0]["config"]["params"]["pythonVersion"] == "pythonVersion"
    assert allowed_and_default(main["parameters"]["pythonVersion"])[1] == allowed_and_default(
        module["parameters"]["pythonVersion"])[1]


def test_azd_and_the_parameter_files_set_a_supported_version() -> None:
    azd = json.loads((INFRA / "main.parameters.json").read_text(encoding="utf-8"))["parameters"]["pythonVersion"]
    match = re.fullmatch(r"\$\{ROTATION_PYTHON_VERSION=(3\.\d+)\}", azd["value"])
    assert match and match.group(1) in SUPPORTED
    for env in ("dev", "prod"):
        text = (INFRA / f"main.{env}.bicepparam").read_text(encoding="utf-8")
        value = re.search(r"^param pythonVersion = '([^']+)'$", text, re.MULTILINE)
        assert value and value.group(1) in SUPPORTED, env


def test_make_unit_pythons_runs_the_unit_suite_on_every_supported_version() -> None:
    script = (ROOT / "scripts" / "unit-pythons.sh").read_text(encoding="utf-8")
    default = re.search(r"^    VERSIONS=\(([^)]*)\)$", script, re.MULTILINE)
    assert default and default.group(1).split() == SUPPORTED
    assert "tests/unit" in script
    assert re.search(r"^unit-pythons:\n\t@bash scripts/unit-pythons\.sh$", (ROOT / "Makefile").read_text(),
                     re.MULTILINE)


def test_the_github_workflow_runs_the_unit_suite_on_every_supported_version() -> None:
    workflow = (ROOT / ".github" / "workflows" / "ci.yml").read_text(encoding="utf-8")
    job = re.search(r"^  python-versions:\n((?:    .*\n|\n)+)", workflow, re.MULTILINE)
    assert job
    assert re.findall(r"^            (3\.\d+)$", job.group(1), re.MULTILINE) == SUPPORTED
    assert "run: make unit-pythons" in job.group(1)


def test_the_readme_states_the_supported_versions() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = re.search(r"^## Python versions\n(.*?)^## ", readme, re.MULTILINE | re.DOTALL)
    assert section
    assert f"{', '.join(SUPPORTED[:-1])} and {SUPPORTED[-1]}" in section.group(1)
    assert "pythonVersion" in section.group(1) and "make unit-pythons" in section.group(1)
