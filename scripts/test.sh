#!/usr/bin/env bash
# Run the test suite: `cargo test --all-targets` (or the targets named in the arguments), with a LocalStack (SQS + SNS) for the
# integration tests. Extra arguments go to cargo, e.g. `scripts/test.sh --lib` or
# `scripts/test.sh -- --nocapture`.
#
# If MPR_TEST_LOCALSTACK_ENDPOINT is set, that LocalStack is used as is. Otherwise one is started
# with scripts/localstack.sh on 127.0.0.1:${MPR_LOCALSTACK_PORT:-4566} and stopped on exit (a
# LocalStack already started by `scripts/localstack.sh start` is reused and left running).
set -euo pipefail

# shellcheck source=scripts/lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"

cd -- "$MPR_ROOT"
LOCALSTACK=("$BASH" "$MPR_ROOT/scripts/localstack.sh")
started=0

# shellcheck disable=SC2317 # invoked by the EXIT trap
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if ((started)); then
        if ((rc != 0)) && [[ -n ${CI:-} ]]; then
            mpr_ls_log_tail 100
        fi
        "${LOCALSTACK[@]}" stop || true
    fi
    exit "$rc"
}

if [[ -n ${MPR_TEST_LOCALSTACK_ENDPOINT:-} ]]; then
    mpr_info "Using LocalStack at $MPR_TEST_LOCALSTACK_ENDPOINT (MPR_TEST_LOCALSTACK_ENDPOINT)"
else
    trap cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    if "${LOCALSTACK[@]}" status >/dev/null 2>&1; then
        mpr_info "Reusing the LocalStack started by scripts/localstack.sh at $MPR_LS_ENDPOINT (left running)"
    else
        started=1
        "${LOCALSTACK[@]}" start
    fi
    export MPR_TEST_LOCALSTACK_ENDPOINT="$MPR_LS_ENDPOINT"
fi

# All targets unless the arguments pick some (--lib, --test NAME, ...).
targets=(--all-targets)
for arg in "$@"; do
    case "$arg" in
        --) break ;;
        --lib | --bins | --bin | --bin=* | --tests | --test | --test=* | --examples | --example | --example=* | --doc | --benches | --bench | --bench=*) targets=() ;;
    esac
done

# The browser test (in the default all-targets run, or named) needs Chromium.
if ((${#targets[@]})) || [[ " $* " == *" browser "* || " $* " == *" --test=browser "* ]]; then
    mpr_ensure_chromium
fi

rc=0
cargo test "${targets[@]}" "$@" || rc=$?
if ((rc != 0)) && ((started)); then
    mpr_info "Tests failed; LocalStack log: $MPR_LS_LOG"
fi
exit "$rc"
