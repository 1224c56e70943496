#!/usr/bin/env bash
# make e2e-consumers: the bridge and the backend, 3 replicas each behind nginx,
# under load while the four secrets rotate (tests/e2e/test_consumers_e2e.py).
# Installs Debian's nginx-light if missing (the tests start their own instance
# in a private prefix; the package's service is never used).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
if ! command -v nginx >/dev/null 2>&1 && [ ! -x /usr/sbin/nginx ]; then
    echo "[e2e] apt-get install nginx-light"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nginx-light >/dev/null
fi
# The bridge replicas run the compiled example (kits/node builds it with the kit).
(cd kits/node && npm run --silent build)
log="$(mktemp)"
set +e
E2E_CONSUMERS=1 .venv/bin/python -m pytest tests/e2e/test_consumers_e2e.py -q -s -p no:cacheprovider \
    -o addopts="" 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
set -e
# The summary lines, the fan-out run last.
grep -E '^e2e-consumers \(no-fanout\)' "$log" || true
grep -E '^e2e-consumers \(fanout\)' "$log" | sed -E 's/^e2e-consumers \(fanout\)/e2e-consumers/' || true
rm -f "$log"
exit "$rc"
