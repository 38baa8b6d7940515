#!/usr/bin/env bash
# The full reliability scenarios (tests/reliability.rs at full size: 2,000-token fault runs, 10 s
# network cuts, a 20,000-token load run), one at a time, with their reports. CI runs the same
# scenarios at a small size as part of scripts/test.sh. Takes several minutes; the figures go into
# RELIABILITY.md.
#
# Usage: scripts/reliability.sh [TEST-NAME-FILTER]
set -euo pipefail

# shellcheck source=scripts/lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"
cd -- "$MPR_ROOT"

mkdir -p target
log="$MPR_ROOT/target/reliability.log"
MPR_RELIABILITY_FULL=1 bash scripts/test.sh --test reliability -- --test-threads=1 --nocapture "$@" 2>&1 | tee "$log"
grep -E '^[A-Za-z ()-]+: (enqueued|[0-9]+ bytes|published|emulator|load:)|^load:|^two workers|^hostile' "$log" || true
echo "Full log: $log"
