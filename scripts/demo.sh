#!/usr/bin/env bash
# Run mp-resolver locally, end to end: LocalStack (SQS + SNS) and the Marketplace Metering
# emulator, the queues and topic of config/local.toml, the worker, a handful of tokens of every
# kind; prints the events and dead-letters that come out; then a buyer's sign-up through
# `mp-resolver intake` (the fulfillment URL: a form POST -> 303 to the sign-up page with a signupId
# -> the event with that signupId); then a subscription's life: AWS Marketplace's agreement and
# license events put on EventBridge reach the lifecycle queue through a rule and come out on the
# same topic with the access to give and the customer's entitlements (from the emulator's
# GetEntitlements), and `mp-resolver customers show` prints the subscription the registry keeps;
# then a customer's usage for the last hour, sent to the usage queue (each event twice), metered
# once per dimension with BatchMeterUsage, and the records the emulator accepted; then stops
# everything it started.
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
export AWS_ENDPOINT_URL_MARKETPLACE_ENTITLEMENT_SERVICE="http://$EMULATOR_ADDR"
export AWS_REGION=us-east-1 AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test
unset AWS_PROFILE AWS_SESSION_TOKEN
# The embedded store (the default kind), fresh for every run: the demo's tokens are the same each
# time, and a store that remembers them would (rightly) publish nothing new. The worker, intake and
# the operator commands below share this one file.
export MPR_STORE__KIND=embedded MPR_STORE__PATH="$DEMO_DIR/state.db"
rm -f -- "$MPR_STORE__PATH"

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

mpr_info "==> Marketplace Metering and Entitlement emulator on $EMULATOR_ADDR"
"$BIN" emulator --listen "$EMULATOR_ADDR" >"$DEMO_DIR/emulator.log" 2>&1 &
emulator_pid=$!
wait_for "http://$EMULATOR_ADDR/emulator/stats" "$emulator_pid" "$DEMO_DIR/emulator.log" "the emulator"

mpr_info "==> Queues and topic"
"$DEMO" setup

mpr_info "==> Worker (log: $DEMO_DIR/worker.log; store: $MPR_STORE__PATH)"
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

mpr_info "==> A subscription's life: Marketplace events on EventBridge -> lifecycle queue -> topic"
# The AWS CLI from the LocalStack venv; --endpoint-url because the v1 CLI's SQS commands ignore
# AWS_ENDPOINT_URL.
AWS=("$MPR_VENV/bin/aws" --endpoint-url "$MPR_LS_ENDPOINT" --region "$AWS_REGION" --output text)
lifecycle_url="$("${AWS[@]}" sqs get-queue-url --queue-name mpr-lifecycle --query QueueUrl)"
lifecycle_arn="$("${AWS[@]}" sqs get-queue-attributes --queue-url "$lifecycle_url" \
    --attribute-names QueueArn --query Attributes.QueueArn)"
# What deploy/cloudformation/messaging.yaml creates: a rule on the default bus for Marketplace's
# agreement source, with the lifecycle queue as its target.
"${AWS[@]}" events put-rule --name mpr-marketplace-agreements \
    --event-pattern '{"source": ["aws.agreement-marketplace"]}' >/dev/null
"${AWS[@]}" events put-targets --rule mpr-marketplace-agreements \
    --targets "Id=lifecycle-queue,Arn=$lifecycle_arn" >/dev/null
customer=999900001111
# AWS's own examples print license ARNs without the leading "arn:"; the worker normalises them.
license="aws:license-manager::$customer:license:l-demolifecycle01"
agreement=agmt-demolifecycle0000000000001
# Puts one Marketplace event (detail type, detail JSON) on the default bus, then waits for the
# lifecycle event the worker publishes for it. Each event is a minute after the one before (the
# registry orders a subscription's events by their EventBridge `time`, which has whole seconds).
event_time=$(($(date +%s) - 600))
marketplace_event() {
    local entries
    event_time=$((event_time + 60))
    entries="$("$MPR_VENV/bin/python" -c 'import json, sys
print(json.dumps([{"Source": "aws.agreement-marketplace", "DetailType": sys.argv[1], "Detail": sys.argv[2],
                   "Time": int(sys.argv[3])}]))' "$1" "$2" "$event_time")"
    printf '\n$ aws events put-events  # %s\n' "$1"
    "${AWS[@]}" events put-events --entries "$entries" >/dev/null
    "$DEMO" await-lifecycle 1
}
# The customer's contract, as GetEntitlements will answer it: 25 seats for a year.
curl -sf "http://$EMULATOR_ADDR/emulator/entitlements" -d "{\"productCode\": \"prod-demo\",
    \"customerAWSAccountId\": \"$customer\", \"licenseArn\": \"arn:$license\",
    \"entitlements\": [{\"Dimension\": \"seats\", \"Value\": {\"IntegerValue\": 25},
    \"ExpirationDate\": $(($(date +%s) + 365 * 86400))}]}" >/dev/null
marketplace_event "Purchase Agreement Created - Manufacturer" \
    "{\"agreement\": {\"id\": \"$agreement\", \"intent\": \"NEW\", \"status\": \"ACTIVE\"},
      \"product\": {\"code\": \"prod-demo\"}, \"acceptor\": {\"accountId\": \"$customer\"},
      \"offer\": {\"id\": \"offer-demo\"}}"
marketplace_event "License Updated - Manufacturer" \
    "{\"agreement\": {\"id\": \"$agreement\"}, \"product\": {\"code\": \"prod-demo\"},
      \"license\": {\"arn\": \"$license\"}, \"acceptor\": {\"accountId\": \"$customer\"}}"
# The buyer cancels: the contract's entitlements are gone.
curl -sf "http://$EMULATOR_ADDR/emulator/entitlements" -d "{\"productCode\": \"prod-demo\",
    \"customerAWSAccountId\": \"$customer\", \"licenseArn\": \"arn:$license\", \"entitlements\": []}" >/dev/null
marketplace_event "Purchase Agreement Ended - Manufacturer" \
    "{\"agreement\": {\"id\": \"$agreement\", \"intent\": \"NEW\", \"status\": \"CANCELLED\"},
      \"product\": {\"code\": \"prod-demo\"}, \"acceptor\": {\"accountId\": \"$customer\"}}"
marketplace_event "License Deprovisioned - Manufacturer" \
    "{\"agreement\": {\"id\": \"$agreement\"}, \"product\": {\"code\": \"prod-demo\"},
      \"license\": {\"arn\": \"$license\"}, \"acceptor\": {\"accountId\": \"$customer\"}}"
"${AWS[@]}" events remove-targets --rule mpr-marketplace-agreements --ids lifecycle-queue >/dev/null
"${AWS[@]}" events delete-rule --name mpr-marketplace-agreements >/dev/null

mpr_info "==> The customer registry: one truth per subscription (the worker keeps running)"
# The operator command opens the worker's embedded store file beside it (redb multi-process mode).
printf '
$ mp-resolver customers show arn:%s
' "$license"
"$BIN" customers show "arn:$license" --config config/local.toml
printf '
$ mp-resolver customers list
'
"$BIN" customers list --config config/local.toml

mpr_info "==> Metering usage: the last hour, once per dimension, with BatchMeterUsage"
"$DEMO" usage
printf '\n$ curl http://%s/emulator/metering   # the records the emulator accepted\n' "$EMULATOR_ADDR"
curl -sf "http://$EMULATOR_ADDR/emulator/metering" | "$MPR_VENV/bin/python" -c 'import json, sys
import datetime
utc = lambda t: datetime.datetime.fromtimestamp(t, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
for r in json.load(sys.stdin):
    print("RECORD      hour=%s timestamp=%s dimension=%-10s quantity=%-4s license=%s meteringRecordId=%s" % (
        utc(r["hour"]), utc(r["timestamp"]), r["dimension"], r["quantity"], r.get("licenseArn"),
        r["meteringRecordId"]))'

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
