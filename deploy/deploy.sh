#!/usr/bin/env bash
# Deploy mp-resolver: the messaging stack, then the service stack wired to its outputs.
#
# Usage:
#   deploy/deploy.sh --image URI --vpc VPC_ID --subnets SUBNET,SUBNET [options]   first deploy
#   deploy/deploy.sh --image URI                                                 roll a new image
#   deploy/deploy.sh --messaging-only [options]                                  queues and topic only
#
# Options:
#   --prefix NAME        resource name prefix; stacks are NAME-messaging and NAME-service (default: mpr)
#   --image URI          container image (deploy/Dockerfile), pushed to a registry the tasks can pull
#   --vpc VPC_ID         VPC of the tasks (first deploy only; later runs keep the previous value)
#   --subnets A,B        subnets of the tasks (first deploy only; likewise)
#   --messaging K=V      extra messaging.yaml parameter, repeatable (e.g. TopicType=fifo)
#   --service K=V        extra service.yaml parameter, repeatable (e.g. MaxTasks=8, AlarmTopicArn=arn:...)
#   --messaging-only     deploy the messaging stack only and print its outputs
#
# Uses the `aws` CLI on PATH with its usual configuration (AWS_PROFILE, AWS_REGION, ...;
# AWS_ENDPOINT_URL too, which is how scripts/deploy-check.sh points it at LocalStack). Parameters
# not given keep their previous values on an existing stack. See docs/deploy.md.
set -euo pipefail

HERE="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)"
TEMPLATES="$HERE/cloudformation"

die() {
    printf 'deploy.sh: %s\n' "$*" >&2
    exit 1
}
usage() {
    sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}" >&2
}

prefix=mpr
image=""
vpc=""
subnets=""
messaging_only=0
messaging_params=()
service_params=()
while (($#)); do
    case "$1" in
        --prefix) prefix="${2:?--prefix needs a value}"; shift 2 ;;
        --image) image="${2:?--image needs a value}"; shift 2 ;;
        --vpc) vpc="${2:?--vpc needs a value}"; shift 2 ;;
        --subnets) subnets="${2:?--subnets needs a value}"; shift 2 ;;
        --messaging) messaging_params+=("${2:?--messaging needs K=V}"); shift 2 ;;
        --service) service_params+=("${2:?--service needs K=V}"); shift 2 ;;
        --messaging-only) messaging_only=1; shift ;;
        -h | --help) usage; exit 0 ;;
        *) usage; die "unknown argument: $1" ;;
    esac
done
for kv in ${messaging_params[@]+"${messaging_params[@]}"} ${service_params[@]+"${service_params[@]}"}; do
    [[ $kv == *=* ]] || die "parameter '$kv' is not KEY=VALUE"
done
[[ $prefix =~ ^[A-Za-z0-9_-]{1,60}$ ]] || die "--prefix must be 1-60 letters, digits, - or _"
command -v aws >/dev/null 2>&1 || die "the aws CLI is not on PATH"

messaging_stack="$prefix-messaging"
service_stack="$prefix-service"

stack_exists() {
    aws cloudformation describe-stacks --stack-name "$1" >/dev/null 2>&1
}

# Prints "KEY<TAB>VALUE" lines, one per stack output.
stack_outputs() {
    aws cloudformation describe-stacks --stack-name "$1" \
        --query 'Stacks[0].Outputs[].[OutputKey,OutputValue]' --output text
}

cfn_deploy() {
    local stack="$1" template="$2"
    shift 2
    printf '==> %s (%s)\n' "$stack" "${template##*/}" >&2
    aws cloudformation deploy \
        --stack-name "$stack" \
        --template-file "$template" \
        --capabilities CAPABILITY_IAM \
        --no-fail-on-empty-changeset \
        --parameter-overrides "$@" >&2
}

# Fail before touching anything when the first deploy of the service lacks what it needs.
if ((!messaging_only)) && ! stack_exists "$service_stack"; then
    [[ -n $image ]] || die "first deploy of $service_stack: --image is required"
    [[ -n $vpc && -n $subnets ]] || die "first deploy of $service_stack: --vpc and --subnets are required"
fi

# --- messaging -------------------------------------------------------------------------------------
cfn_deploy "$messaging_stack" "$TEMPLATES/messaging.yaml" \
    "Prefix=$prefix" ${messaging_params[@]+"${messaging_params[@]}"}

# (No associative arrays: macOS ships bash 3.2.)
outputs="$(stack_outputs "$messaging_stack")"
out() {
    awk -F '\t' -v k="$1" '$1 == k { print $2; exit }' <<<"$outputs"
}
for key in QueueUrl QueueArn DlqUrl DlqArn TopicArn VisibilityTimeoutSeconds; do
    [[ -n "$(out "$key")" ]] || die "stack $messaging_stack has no output $key"
done

if ((messaging_only)); then
    sort <<<"$outputs"
    exit 0
fi

# --- service ---------------------------------------------------------------------------------------
params=(
    "QueueUrl=$(out QueueUrl)"
    "QueueArn=$(out QueueArn)"
    "DlqUrl=$(out DlqUrl)"
    "DlqArn=$(out DlqArn)"
    "TopicArn=$(out TopicArn)"
    "KmsKeyArn=$(out KmsKeyArn)"
    "VisibilityTimeoutSeconds=$(out VisibilityTimeoutSeconds)"
    "LifecycleQueueUrl=$(out LifecycleQueueUrl)"
    "LifecycleQueueArn=$(out LifecycleQueueArn)"
    "LifecycleDlqUrl=$(out LifecycleDlqUrl)"
    "LifecycleDlqArn=$(out LifecycleDlqArn)"
)
[[ -n $image ]] && params+=("ImageUri=$image")
[[ -n $vpc ]] && params+=("VpcId=$vpc")
[[ -n $subnets ]] && params+=("SubnetIds=$subnets")

cfn_deploy "$service_stack" "$TEMPLATES/service.yaml" \
    "${params[@]}" ${service_params[@]+"${service_params[@]}"}

printf '\n==> Deployed. Front ends send tokens to %s and need the policy %s;\n' \
    "$(out QueueUrl)" "$(out SenderPolicyArn)"
printf '    subscribe your systems to %s. Service outputs:\n' "$(out TopicArn)"
stack_outputs "$service_stack" | sed 's/^/    /'
