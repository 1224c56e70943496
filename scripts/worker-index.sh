#!/usr/bin/env bash
# Index a Functions app with the Python worker's own loader, as the host does
# at `func start`, and print the function metadata as JSON.
#
# Why this exists: the Functions host cannot run here, yet a binding whose
# name does not match its parameter, or a parameter annotated with the wrong
# type, only fails when the host starts the worker. The worker library that
# does that indexing is published on PyPI only for Python 3.13+
# (azure-functions-runtime); the 3.11 worker ships inside the host, and
# PyPI's azure-functions-worker stops at 1.1.9 (2020), before the v2
# decorator model. So a separate venv on Python 3.13 runs the 3.13 worker
# library over our app, with the azure-functions release the app deploys on
# Python 3.13 (the library the decorators come from). Both are pinned, with
# hashes, in requirements-worker.txt (`make lock` generates it from
# requirements-worker.in and the app's requirements.txt). Exit status:
# 0 indexed cleanly, 1 the worker rejected the app, 3 no Python 3.13 on this
# machine.
#
#   scripts/worker-index.sh --setup     create/refresh .venv-worker only
#   scripts/worker-index.sh [APP_DIR]   index APP_DIR (default: the repo)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv-worker"
LOCK="$ROOT/requirements-worker.txt"

log() { printf '[worker-index] %s\n' "$*" >&2; }

is_python313() {
    "$1" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 13))' >/dev/null 2>&1
}

find_python313() {
    # pyenv's shim is on PATH even when 3.13 is not the selected version, so
    # every candidate is run once before it is trusted.
    local root candidate
    root="$(pyenv root 2>/dev/null || echo "${PYENV_ROOT:-$HOME/.pyenv}")"
    for candidate in "$(command -v python3.13 2>/dev/null || true)" "$root"/versions/3.13*/bin/python3.13 \
        /usr/bin/python3.13 /usr/local/bin/python3.13; do
        if [ -n "$candidate" ] && [ -x "$candidate" ] && is_python313 "$candidate"; then
            echo "$candidate"
            return 0
        fi
    done
    return 1
}

setup() {
    local want have py
    want="$(sha256sum "$LOCK" | cut -d' ' -f1)"
    have="$(cat "$VENV/.requirements.sha256" 2>/dev/null || true)"
    if [ -x "$VENV/bin/python" ] && [ "$want" = "$have" ]; then
        log "venv: requirements-worker.txt unchanged"
        return 0
    fi
    if ! py="$(find_python313)"; then
        log "no Python 3.13 found (python3.13 on PATH or pyenv); the worker indexing check cannot run"
        exit 3
    fi
    if [ ! -x "$VENV/bin/python" ]; then
        log "creating .venv-worker with $py"
        "$py" -m venv "$VENV"
    fi
    log "installing requirements-worker.txt (hash-checked)"
    bash "$ROOT/scripts/install-locked.sh" "$VENV/bin/python" "$LOCK"
    printf '%s\n' "$want" >"$VENV/.requirements.sha256"
}

if [ "${1:-}" = "--setup" ]; then
    setup
    exit 0
fi
setup
APP_DIR="${1:-$ROOT}"
exec "$VENV/bin/python" "$ROOT/tests/support/worker_index.py" "$APP_DIR"
