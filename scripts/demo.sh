#!/usr/bin/env bash
# Run mp-resolver locally, end to end: LocalStack (SQS + SNS) and the Marketplace Metering
# emulator, the queues and topic of config/local.toml, the worker, a handful of tokens of every
# kind; prints the events and dead-letters that come out; then a buyer's sign-up through
# `mp-resolver intake` (the fulfillment URL: a form POST -> 303 to the sign-up page with a signupId
# -> the event with that signupId); then stops everything it started.
#
# Usage: scripts/demo.sh        (from any directory; needs Rust, Python 3.11 and curl)
set -euo pipefail

# shellcheck source=scripts/lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"
cd -- "$MPR_ROOT"

EMULATOR_ADDR="127.0.0.1:4599"
DEMO_DIR="$MPR_ROOT/target/demo"
mkdir -p "$DEMO_DIR"
LOCALSTACK=("$BASH" "$MPR_ROOT/scripts/localstack.sh")
started_localstack=0
emulator_pid=""
worker_pid=""
intake_pid=""
INTAKE_ADDR="127.0.0.1:8080"
INTAKE_ADMIN_ADDR="127.0.0.1:9091"

# shellcheck disable=SC2317 # invoked by the EXIT trap
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    for pid in "$intake_pid" "$worker_pid" "$emulator_pid"; do
        if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; then
            kill -TERM "$pid" 2>/dev/null || true
            wait "$pid" 2>/dev/null || true
        fi
    done
    if ((started_localstack)); then
        "${LOCALSTACK[@]}" stop || true
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if [[ $MPR_LOCALSTACK_PORT != 4566 ]]; then
    mpr_die "config/local.toml expects LocalStack on 4566; unset MPR_LOCALSTACK_PORT"
fi

mpr_info "==> Building"
cargo build --quiet --bin mp-resolver --example demo
BIN="$MPR_ROOT/target/debug/mp-resolver"
DEMO="$MPR_ROOT/target/debug/examples/demo"

mpr_info "==> LocalStack"
if "${LOCALSTACK[@]}" status >/dev/null 2>&1; then
    mpr_info "Reusing the LocalStack started by scripts/localstack.sh (left running)"
else
    started_localstack=1
    "${LOCALSTACK[@]}" start
fi

# The worker and the demo find everything through the AWS SDK's standard variables.
export AWS_ENDPOINT_URL="$MPR_LS_ENDPOINT"
export AWS_ENDPOINT_URL_MARKETPLACE_METERING="http://$EMULATOR_ADDR"
export AWS_REGION=us-east-1 AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test
unset AWS_PROFILE AWS_SESSION_TOKEN

# Polls URL (up to 10 s) until it answers 2xx; fails with LOG if PID exits first.
wait_for() {
    local url="$1" pid="$2" log="$3" what="$4"
    for _ in $(seq 1 100); do
        curl -sf "$url" >/dev/null && return 0
        kill -0 "$pid" 2>/dev/null || { cat "$log" >&2; mpr_die "$what did not start"; }
        sleep 0.1
    done
    mpr_die "$what did not answer $url within 10 s"
}

mpr_info "==> Marketplace Metering emulator on $EMULATOR_ADDR"
"$BIN" emulator --listen "$EMULATOR_ADDR" >"$DEMO_DIR/emulator.log" 2>&1 &
emulator_pid=$!
wait_for "http://$EMULATOR_ADDR/emulator/stats" "$emulator_pid" "$DEMO_DIR/emulator.log" "the emulator"

mpr_info "==> Queues and topic"
"$DEMO" setup

mpr_info "==> Worker (log: $DEMO_DIR/worker.log)"
"$BIN" run --config config/local.toml >"$DEMO_DIR/worker.log" 2>&1 &
worker_pid=$!

"$DEMO" run

mpr_info "==> A sign-up through mp-resolver intake on $INTAKE_ADDR (log: $DEMO_DIR/intake.log)"
MPR_INTAKE__LISTEN="$INTAKE_ADDR" MPR_ADMIN__LISTEN="$INTAKE_ADMIN_ADDR" \
    MPR_INTAKE__REGISTRATION_URL="https://seller.example/signup?plan=team" \
    "$BIN" intake --config config/local.toml >"$DEMO_DIR/intake.log" 2>&1 &
intake_pid=$!
wait_for "http://$INTAKE_ADMIN_ADDR/readyz" "$intake_pid" "$DEMO_DIR/intake.log" "intake"
# What AWS Marketplace's page makes the buyer's browser send to the fulfillment URL.
signup_token="$("$DEMO" signup-token)"
printf '\n$ curl -i -d x-amzn-marketplace-token=<token> -d x-amzn-marketplace-offer-type=free-trial http://%s/\n' "$INTAKE_ADDR"
answer="$(curl -s -o /dev/null -D - --data-urlencode "x-amzn-marketplace-token=$signup_token" \
    -d x-amzn-marketplace-offer-type=free-trial "http://$INTAKE_ADDR/" | tr -d '\r')"
grep -iE '^(HTTP/|location:)' <<<"$answer"
location="$(awk 'tolower($1) == "location:" { print $2 }' <<<"$answer")"
signup_id="${location##*signupId=}"
[[ -n $location && $signup_id != "$location" ]] || mpr_die "intake did not redirect with a signupId"
printf '\nThe sign-up page would now keep signupId=%s with the new account.\n' "$signup_id"
"$DEMO" await-signup "$signup_id"

printf '\nEmulator stats: %s\n' "$(curl -sf "http://$EMULATOR_ADDR/emulator/stats")"

mpr_info "==> Stopping intake (SIGTERM)"
kill -TERM "$intake_pid"
wait "$intake_pid" || true
intake_pid=""

mpr_info "==> Stopping the worker (SIGTERM)"
kill -TERM "$worker_pid"
wait "$worker_pid" && rc=0 || rc=$?
worker_pid=""
printf '\nWorker exited with %s. Its last log lines:\n' "$rc"
tail -n 12 "$DEMO_DIR/worker.log"
