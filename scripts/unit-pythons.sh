#!/usr/bin/env bash
# Run the unit suite on every Python version the app supports (README,
# "Python versions"), each in a throw-away venv .venv-py3XX filled from the
# same hash-locked requirements-dev.txt as .venv.
#
#   scripts/unit-pythons.sh [VERSION...]     default: 3.11 3.12 3.13
#
# Why this exists: .venv (and so the integration suite, ruff and mypy) runs on
# Python 3.11, while Azure may run the app on any supported version (the Bicep
# parameter pythonVersion chooses). The unit suite imports every module of the
# app, so this proves the lock installs and the app works on each version.
# A version that is not installed fails the run: a skipped version would
# look like a pass. Prints one line per version, exits non-zero if any failed.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
LOCK="requirements-dev.txt"
VERSIONS=("$@")
if [ "${#VERSIONS[@]}" -eq 0 ]; then
    VERSIONS=(3.11 3.12 3.13)
fi

log() { printf '[unit-pythons] %s\n' "$*" >&2; }

is_version() {
    "$1" -c "import sys; sys.exit(sys.version_info[:2] != tuple(map(int, '$2'.split('.'))))" >/dev/null 2>&1
}

find_python() {
    # pyenv's shims answer for every version, selected or not, so each
    # candidate is run once before it is trusted.
    local version="$1" root candidate
    root="$(pyenv root 2>/dev/null || echo "${PYENV_ROOT:-$HOME/.pyenv}")"
    for candidate in "$(command -v "python$version" 2>/dev/null || true)" "$root"/versions/"$version".*/bin/"python$version" \
        "/usr/bin/python$version" "/usr/local/bin/python$version"; do
        if [ -n "$candidate" ] && [ -x "$candidate" ] && is_version "$candidate" "$version"; then
            echo "$candidate"
            return 0
        fi
    done
    return 1
}

want="$(sha256sum "$LOCK" | cut -d' ' -f1)"
failed=()
summary=()
for version in "${VERSIONS[@]}"; do
    venv=".venv-py${version/./}"
    if ! py="$(find_python "$version")"; then
        log "Python $version: not found (python$version on PATH or pyenv)"
        failed+=("$version")
        summary+=("Python $version: NOT FOUND")
        continue
    fi
    if [ ! -x "$venv/bin/python" ] || [ "$(cat "$venv/.requirements.sha256" 2>/dev/null || true)" != "$want" ]; then
        log "Python $version: installing $LOCK into $venv (hash-checked)"
        rm -rf "$venv"
        "$py" -m venv "$venv"
        bash scripts/install-locked.sh "$venv/bin/python" "$LOCK"
        printf '%s\n' "$want" >"$venv/.requirements.sha256"
    fi
    log "Python $version: pytest tests/unit"
    if out="$("$venv/bin/python" -m pytest tests/unit -q -p no:cacheprovider 2>&1)"; then
        summary+=("Python $("$venv/bin/python" -c 'import platform; print(platform.python_version())'): $(grep -E '^[0-9]+ passed' <<<"$out" | tail -n1)")
    else
        printf '%s\n' "$out" >&2
        failed+=("$version")
        summary+=("Python $version: FAILED")
    fi
done
printf '[unit-pythons] %s\n' "${summary[@]}"
if [ "${#failed[@]}" -ne 0 ]; then
    log "failed: ${failed[*]}"
    exit 1
fi
