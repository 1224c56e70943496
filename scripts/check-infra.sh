#!/usr/bin/env bash
# Offline static analysis of the Bicep infrastructure with checkov.
#
# Usage: scripts/check-infra.sh [REPORT_JSON]
#   REPORT_JSON defaults to .venv-checkov/report.json.
#   CHECK_INFRA_DIR scans another directory instead of infra/ (the tests use
#   it to prove that a Bicep parse error fails the check).
#
# checkov lives in its own virtualenv (.venv-checkov): its dependency tree is
# large and has no business in the app's venv. The version is pinned so a new
# checkov release cannot change the verdict silently, and it is installed from
# requirements-checkov.txt, its whole tree locked with hashes (`make lock`
# generates it from requirements-checkov.in, which must pin CHECKOV_VERSION).
# The first run installs it from PyPI (under a minute), later runs take seconds.
#
# What runs: every built-in Bicep check of checkov plus the project's own
# checks in infra/checkov/ (CKV2_ROT_*). Skipped checks are suppressed next
# to the resource with `// checkov:skip=CKV_...: reason` in the Bicep files.
#
# Exit codes:
#   0  report written; no failed check and no parsing error
#   1  report written; failed checks or Bicep files checkov could not parse
#      (checkov itself exits 0 on parse errors, hence this verdict)
#   3  the virtualenv could not be created or checkov could not be installed
#   other: checkov crashed
# tests/infra/test_checkov.py runs this script and judges the report itself.
set -euo pipefail

CHECKOV_VERSION="3.2.533"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${CHECKOV_VENV:-$ROOT/.venv-checkov}"
REPORT="${1:-$VENV/report.json}"
PYTHON="${PYTHON:-python3}"
SCAN_DIR="${CHECK_INFRA_DIR:-infra}"

LOCK="$ROOT/requirements-checkov.txt"
want_lock="$(sha256sum "$LOCK" | cut -d' ' -f1)"
have_lock="$(cat "$VENV/.requirements.sha256" 2>/dev/null || true)"

if [[ ! -x "$VENV/bin/checkov" ]] || [[ "$want_lock" != "$have_lock" ]]; then
  echo "check-infra: installing requirements-checkov.txt (checkov==$CHECKOV_VERSION, hash-checked) into $VENV" >&2
  if ! "$PYTHON" -m venv "$VENV" >&2; then
    echo "check-infra: cannot create a virtualenv with $PYTHON" >&2
    exit 3
  fi
  if ! bash "$ROOT/scripts/install-locked.sh" "$VENV/bin/python" "$LOCK" >&2; then
    echo "check-infra: cannot install requirements-checkov.txt" >&2
    exit 3
  fi
  printf '%s\n' "$want_lock" >"$VENV/.requirements.sha256"
fi

mkdir -p "$(dirname "$REPORT")"
cd "$ROOT"
# --soft-fail: checkov's exit code is not the verdict; the summary below is.
# --skip-download: no calls to the vendor platform; everything is offline.
"$VENV/bin/checkov" \
  --directory "$SCAN_DIR" \
  --framework bicep \
  --external-checks-dir "$ROOT/infra/checkov" \
  --output json \
  --soft-fail \
  --skip-download \
  > "$REPORT"

"$VENV/bin/python" - "$REPORT" <<'PY'
import json
import sys

with open(sys.argv[1], encoding="utf-8") as fh:
    report = json.load(fh)
reports = report if isinstance(report, list) else [report]
failed = parsing = 0
for r in reports:
    summary = r.get("summary", {})
    print(f"check-infra: {r.get('check_type')}: {summary}", file=sys.stderr)
    failed += summary.get("failed", 0)
    parsing += summary.get("parsing_errors", 0)
    for check in r.get("results", {}).get("failed_checks", []):
        print(f"  FAILED {check['check_id']} {check['file_path']} {check['resource']}", file=sys.stderr)
    for path in r.get("results", {}).get("parsing_errors", []):
        print(f"  PARSE ERROR {path}", file=sys.stderr)
sys.exit(1 if failed or parsing or not reports else 0)
PY
