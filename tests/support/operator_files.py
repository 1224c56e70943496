"""Operator files for tests: the shipped standard inventory plus what each test declares.

Every test vault (one emulator per test) gets its own ``rotation.json`` in a
temporary folder, and ``make_settings`` points ``ROTATION_CONFIG_FILE`` at it,
so the app loads its operator file the way it does in production. Harness
helpers that set up PostgreSQL roles or Redis users declare the matching
target here; a test never declares a target through secret tags.

The base file is the shipped one, with one difference: names matching ``*``
may opt in by tags with the harmless rotators, which is what most engine tests
use to make up a secret on the spot.
"""

from __future__ import annotations

import copy
import json
import tempfile
from pathlib import Path
from typing import Any

from shared.config.operator_file import DEFAULT_FILE

_DIR = Path(tempfile.mkdtemp(prefix="rotation-operator-"))
_files: dict[int, Path] = {}


def base_config() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DEFAULT_FILE.read_text(encoding="utf-8"))
    data["tagManaged"] = [{"pattern": "*", "rotators": ["random", "jwt", "manual"]}]
    data["tagLimits"] = {"intervalDays": {"min": 1, "max": 3650}, "validityDays": {"min": 31, "max": 3650}}
    return data


def operator_file(owner: object) -> str:
    """The operator file of one test vault (``owner`` is its emulator), created on first use."""
    path = _files.get(id(owner))
    if path is None:
        path = _DIR / f"rotation-{len(_files)}.json"
        path.write_text(json.dumps(base_config()), encoding="utf-8")
        _files[id(owner)] = path
    return str(path)


def read(owner: object) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(Path(operator_file(owner)).read_text(encoding="utf-8"))
    return data


def write(owner: object, data: dict[str, Any]) -> None:
    Path(operator_file(owner)).write_text(json.dumps(data), encoding="utf-8")


def declare(
    owner: object,
    *,
    secrets: dict[str, Any] | None = None,
    targets: dict[str, Any] | None = None,
    admin_secrets: list[str] | None = None,
) -> dict[str, Any]:
    """Add secrets, targets and admin secrets to a test vault's operator file."""
    data = copy.deepcopy(read(owner))
    data.setdefault("targets", {}).update(targets or {})
    data["secrets"].update(secrets or {})
    admins = data.setdefault("adminSecrets", [])
    admins.extend(a for a in admin_secrets or [] if a not in admins)
    write(owner, data)
    return data
