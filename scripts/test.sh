#!/usr/bin/env bash
# Run the test suite: `cargo test --all-targets` (or the targets named in the arguments), with a
# LocalStack (SQS, SNS, EventBridge, STS, IAM) and a moto server (DynamoDB, for the shared store)
# for the integration tests. Extra arguments go to cargo, e.g. `scripts/test.sh --lib` or
# `scripts/test.sh -- --nocapture`.
#
# If MPR_TEST_LOCALSTACK_ENDPOINT is set, that LocalStack is used as is. Otherwise one is started
# with scripts/localstack.sh on 127.0.0.1:${MPR_LOCALSTACK_PORT:-4566} and stopped on exit (a
# LocalStack already started by `scripts/localstack.sh start` is reused and left running).
#
# Likewise DynamoDB: if MPR_TEST_DYNAMODB_ENDPOINT is set, that endpoint is used as is. Otherwise
# moto_server is started with scripts/moto.sh on 127.0.0.1:${MPR_MOTO_PORT:-4568} (venv
# .moto-venv/, installed on first use) and stopped on exit by its pid (one already started by
# `scripts/moto.sh start` is reused and left running). The tests get
# MPR_TEST_DYNAMODB_ENDPOINT=http://127.0.0.1:PORT either way.
set -euo pipefail

# shellcheck source=scripts/lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"

cd -- "$MPR_ROOT"
LOCALSTACK=("$BASH" "$MPR_ROOT/scripts/localstack.sh")
MOTO=("$BASH" "$MPR_ROOT/scripts/moto.sh")
started=0
moto_started=0

# shellcheck disable=SC2317 # invoked by the EXIT trap
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if ((moto_started)); then
        if ((rc != 0)) && [[ -n ${CI:-} ]]; then
            mpr_moto_log_tail 60
        fi
        "${MOTO[@]}" stop || true
    fi
    if ((started)); then
        if ((rc != 0)) && [[ -n ${CI:-} ]]; then
            mpr_ls_log_tail 100
        fi
        "${LOCALSTACK[@]}" stop || true
    fi
    exit "$rc"
}

trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if [[ -n ${MPR_TEST_LOCALSTACK_ENDPOINT:-} ]]; then
    mpr_info "Using LocalStack at $MPR_TEST_LOCALSTACK_ENDPOINT (MPR_TEST_LOCALSTACK_ENDPOINT)"
else
    if "${LOCALSTACK[@]}" status >/dev/null 2>&1; then
        mpr_info "Reusing the LocalStack started by scripts/localstack.sh at $MPR_LS_ENDPOINT (left running)"
    else
        started=1
        "${LOCALSTACK[@]}" start
    fi
    export MPR_TEST_LOCALSTACK_ENDPOINT="$MPR_LS_ENDPOINT"
fi

if [[ -n ${MPR_TEST_DYNAMODB_ENDPOINT:-} ]]; then
    mpr_info "Using DynamoDB at $MPR_TEST_DYNAMODB_ENDPOINT (MPR_TEST_DYNAMODB_ENDPOINT)"
else
    if "${MOTO[@]}" status >/dev/null 2>&1; then
        mpr_info "Reusing the moto_server started by scripts/moto.sh at $MPR_MOTO_ENDPOINT (left running)"
    else
        moto_started=1
        "${MOTO[@]}" start
    fi
    export MPR_TEST_DYNAMODB_ENDPOINT="$MPR_MOTO_ENDPOINT"
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
if ((rc != 0)) && ((moto_started)); then
    mpr_info "Tests failed; moto log: $MPR_MOTO_LOG"
fi
exit "$rc"
