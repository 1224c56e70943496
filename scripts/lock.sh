#!/usr/bin/env bash
# Regenerate every lock file from its input (`make lock`).
#
#   scripts/lock.sh                  keep every pin that still satisfies the inputs
#   scripts/lock.sh --upgrade        move every package to its newest allowed release
#   scripts/lock.sh --upgrade-package NAME   move one package (and what it needs)
#
# People edit the inputs (requirements*.in); the outputs (requirements*.txt)
# are generated, each package pinned with == and the sha256 of every file
# PyPI has for that release, so pip installs them with --require-hashes.
# The locks are universal (uv's --universal): one file holds the right pins
# for every supported Python version (3.11-3.13) and platform, with markers
# where they differ (azure-functions is 1.x below 3.13 and 2.x from 3.13).
#
#   requirements.in          -> requirements.txt          runtime: what Azure installs
#   requirements-dev.in      -> requirements-dev.txt      runtime (same pins) + tests and tools: .venv
#   requirements-worker.in   -> requirements-worker.txt   Python 3.13 worker library: .venv-worker
#   requirements-checkov.in  -> requirements-checkov.txt  checkov: .venv-checkov
#   scripts/azurite/package.json -> package-lock.json      Azurite (npm, sha512 integrity): .tools/azurite
#
# The resolver is uv, itself pinned with hashes in requirements-dev.txt and
# installed from that pin into .venv-lock (so this works even when .venv does
# not, e.g. while merging).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV=".venv-lock"

log() { printf '[lock] %s\n' "$*" >&2; }

# The uv requirement with its hashes, taken from the dev lock.
uv_block="$(awk '/^uv==/ { on = 1 } on { print } on && !/\\$/ { exit }' requirements-dev.txt)"
if [ -z "$uv_block" ]; then
    log "requirements-dev.txt pins no uv release (requirements-dev.in must list uv==...)"
    exit 1
fi
want="$(sha256sum <<<"$uv_block" | cut -d' ' -f1)"
if [ ! -x "$VENV/bin/uv" ] || [ "$(cat "$VENV/.requirements.sha256" 2>/dev/null || true)" != "$want" ]; then
    log "installing $(head -n1 <<<"$uv_block" | cut -d' ' -f1) into $VENV (hash-checked)"
    rm -rf "$VENV"
    python3 -m venv "$VENV"
    req="$VENV/uv-requirement.txt"
    printf '%s\n' "$uv_block" >"$req"
    bash scripts/install-locked.sh "$VENV/bin/python" "$req" --no-deps
    printf '%s\n' "$want" >"$VENV/.requirements.sha256"
fi

compile() {
    local python="$1" input="$2" output="$3"
    shift 3
    log "$input -> $output"
    # UV_INDEX_URL etc. from the caller's environment would change where
    # packages come from; the lock records PyPI's files.
    env -u UV_INDEX_URL -u UV_EXTRA_INDEX_URL -u UV_DEFAULT_INDEX -u UV_INDEX -u UV_FIND_LINKS \
        "$VENV/bin/uv" pip compile --quiet --universal --python-version "$python" --generate-hashes \
        --no-config --custom-compile-command "make lock   # edit $input, not this file" "$@" "$input" -o "$output"
}

# Order matters: the dev and worker locks are constrained by requirements.txt.
compile 3.11 requirements.in requirements.txt "$@"
compile 3.11 requirements-dev.in requirements-dev.txt "$@"
compile 3.13 requirements-worker.in requirements-worker.txt "$@"
compile 3.11 requirements-checkov.in requirements-checkov.txt "$@"
log "scripts/azurite/package.json -> package-lock.json"
(cd scripts/azurite && npm install --package-lock-only --no-audit --no-fund --loglevel=error >/dev/null)
log "done; commit the inputs and the locks together"
