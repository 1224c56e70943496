#!/usr/bin/env bash
# Prepare a fresh Debian 12 machine for this project's test-suite.
#
# Why this exists: machines are handed out new, so anything the tests need
# (PostgreSQL and Redis binaries, Node + Azurite, the Python venv) must be
# installed by the project's own files, never by hand. Every step checks
# first, so re-running it is cheap and changes nothing. It starts nothing:
# the tests start their own throw-away servers (tests/support/services.py).
set -euo pipefail

# Azurite 3.36+ declares node >= 21; Debian 12 ships node 18, so stay on the
# newest release that still runs there.
AZURITE_VERSION="3.35.0"

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

log() { printf '[bootstrap] %s\n' "$*"; }

APT_UPDATED=0
apt_install() {
    # apt-cache/apt-get need a fresh package list once per run on a new machine.
    if [ "$APT_UPDATED" -eq 0 ]; then
        log "apt-get update"
        DEBIAN_FRONTEND=noninteractive apt-get update -qq
        APT_UPDATED=1
    fi
    log "apt-get install $*"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

have_initdb() {
    command -v initdb >/dev/null 2>&1 && return 0
    compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null
}

# --- PostgreSQL binaries (initdb / pg_ctl / postgres) ------------------------
if have_initdb; then
    log "postgresql: present"
else
    apt_install postgresql
    # The Debian package starts a cluster of its own; the tests never use it.
fi

# --- Redis -------------------------------------------------------------------
if command -v redis-server >/dev/null 2>&1; then
    log "redis-server: present"
else
    apt_install redis-server
fi

# --- Node.js + npm (for Azurite) ----------------------------------------------
if command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; then
    log "node $(node --version), npm $(npm --version): present"
else
    apt_install nodejs npm
fi

# --- Azurite (blob emulator), project-local ----------------------------------
AZ_DIR="$ROOT/.tools/azurite"
AZ_PKG="$AZ_DIR/node_modules/azurite/package.json"
installed_azurite=""
if [ -f "$AZ_PKG" ]; then
    installed_azurite="$(node -p "require(process.argv[1]).version" "$AZ_PKG" 2>/dev/null || true)"
fi
if [ "$installed_azurite" = "$AZURITE_VERSION" ] && [ -x "$AZ_DIR/node_modules/.bin/azurite-blob" ]; then
    log "azurite $AZURITE_VERSION: present"
else
    log "azurite: installing $AZURITE_VERSION into .tools/azurite (had: ${installed_azurite:-none})"
    mkdir -p "$AZ_DIR"
    npm install --prefix "$AZ_DIR" --no-audit --no-fund --loglevel=error \
        "azurite@$AZURITE_VERSION" >/dev/null
fi

# --- kits/node (the TypeScript consumer kit): npm ci from its lock file --------
# tests/kits/test_node_kit.py runs its `npm test` (tsc + node --test).
KIT_DIR="$ROOT/kits/node"
KIT_STAMP="$KIT_DIR/node_modules/.package-lock.sha256"
want_kit="$(sha256sum "$KIT_DIR/package-lock.json" | cut -d' ' -f1)"
if [ -f "$KIT_STAMP" ] && [ "$(cat "$KIT_STAMP")" = "$want_kit" ]; then
    log "kits/node: dependencies present"
else
    log "kits/node: npm ci"
    (cd "$KIT_DIR" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
    printf '%s\n' "$want_kit" >"$KIT_STAMP"
fi

# --- Python venv ---------------------------------------------------------------
PY="python3.11"
if ! command -v "$PY" >/dev/null 2>&1; then
    apt_install python3.11 python3.11-venv
fi
if [ ! -x .venv/bin/python ]; then
    log "creating .venv with $PY"
    if ! "$PY" -m venv .venv 2>/dev/null; then
        # Debian's python3.11 lacks ensurepip until python3.11-venv is in.
        rm -rf .venv
        apt_install python3.11-venv
        "$PY" -m venv .venv
    fi
fi
STAMP=".venv/.requirements.sha256"
# requirements-dev.txt pulls in requirements.txt with -r, so hash both.
want_hash="$(cat requirements-dev.txt requirements.txt | sha256sum | cut -d' ' -f1)"
have_hash="$(cat "$STAMP" 2>/dev/null || true)"
if [ "$want_hash" = "$have_hash" ]; then
    log "venv: requirements unchanged"
else
    log "venv: installing requirements-dev.txt"
    .venv/bin/python -m pip install -q --disable-pip-version-check -r requirements-dev.txt
    printf '%s\n' "$want_hash" >"$STAMP"
fi

# --- Functions worker indexing check (.venv-worker, Python 3.13) ------------
# tests/integration/test_worker_indexing.py runs the Python worker's own
# function indexing over function_app.py; that worker library exists on PyPI
# only for Python 3.13, so it lives in a venv of its own. Exit 3 means this
# machine has no Python 3.13: the test then skips and says so.
worker_rc=0
bash scripts/worker-index.sh --setup || worker_rc=$?
if [ "$worker_rc" -eq 3 ]; then
    log "worker index venv: skipped (no Python 3.13)"
elif [ "$worker_rc" -ne 0 ]; then
    exit "$worker_rc"
fi

log "done"
