#!/usr/bin/env bash
# Deploy mp-resolver: the messaging stack, then the service stack wired to its outputs, and with
# --intake the fulfillment URL stack (deploy/cloudformation/intake.yaml) as well.
#
# Usage:
#   deploy/deploy.sh --image URI --vpc VPC_ID --subnets SUBNET,SUBNET [options]   first deploy
#   deploy/deploy.sh --image URI                                                 roll a new image
#   deploy/deploy.sh --messaging-only [options]                                  queues, topic and store only
#   deploy/deploy.sh --image URI --vpc VPC_ID --subnets A,B --intake \
#       --intake-param RegistrationUrl=https://example.com/signup \
#       --intake-param CertificateArn=arn:aws:acm:... \
#       --intake-param LoadBalancerSubnetIds=subnet-pub-a,subnet-pub-b             with the fulfillment URL
#
# Options:
#   --prefix NAME        resource name prefix; stacks are NAME-messaging and NAME-service (default: mpr)
#   --image URI          container image (deploy/Dockerfile), pushed to a registry the tasks can pull
#   --vpc VPC_ID         VPC of the tasks (first deploy only; later runs keep the previous value)
#   --subnets A,B        subnets of the tasks (first deploy only; likewise)
#   --messaging K=V      extra messaging.yaml parameter, repeatable (e.g. TopicType=fifo, or
#                        StoreTableName=NAME to use an existing store table instead of creating one)
#   --service K=V        extra service.yaml parameter, repeatable (e.g. MaxTasks=8, AlarmTopicArn=arn:...)
#   --messaging-only     deploy the messaging stack only and print its outputs
#   --intake             also deploy NAME-intake: the ALB and `mp-resolver intake` tasks behind the
#                        product's fulfillment URL, sending to the messaging stack's token queue, in
#                        the service stack's cluster; its tasks use --subnets unless TaskSubnetIds is given
#   --intake-param K=V   extra intake.yaml parameter, repeatable (RegistrationUrl, CertificateArn and
#                        LoadBalancerSubnetIds are required on its first deploy)
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
with_intake=0
intake_params=()
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
        --intake) with_intake=1; shift ;;
        --intake-param) intake_params+=("${2:?--intake-param needs K=V}"); shift 2 ;;
        -h | --help) usage; exit 0 ;;
        *) usage; die "unknown argument: $1" ;;
    esac
done
for kv in ${messaging_params[@]+"${messaging_params[@]}"} ${service_params[@]+"${service_params[@]}"} \
    ${intake_params[@]+"${intake_params[@]}"}; do
    [[ $kv == *=* ]] || die "parameter '$kv' is not KEY=VALUE"
done
[[ $prefix =~ ^[A-Za-z0-9_-]{1,60}$ ]] || die "--prefix must be 1-60 letters, digits, - or _"
command -v aws >/dev/null 2>&1 || die "the aws CLI is not on PATH"

messaging_stack="$prefix-messaging"
service_stack="$prefix-service"
intake_stack="$prefix-intake"

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
has_intake_param() {
    local kv
    for kv in ${intake_params[@]+"${intake_params[@]}"}; do [[ $kv == "$1="* ]] && return 0; done
    return 1
}
if ((with_intake && !messaging_only)) && ! stack_exists "$intake_stack"; then
    [[ -n $image && -n $vpc ]] || die "first deploy of $intake_stack: --image and --vpc are required"
    for key in RegistrationUrl CertificateArn LoadBalancerSubnetIds; do
        has_intake_param "$key" || die "first deploy of $intake_stack: --intake-param $key=... is required"
    done
    [[ -n $subnets ]] || has_intake_param TaskSubnetIds ||
        die "first deploy of $intake_stack: --subnets or --intake-param TaskSubnetIds=... is required"
fi

# --- messaging -------------------------------------------------------------------------------------
cfn_deploy "$messaging_stack" "$TEMPLATES/messaging.yaml" \
    "Prefix=$prefix" ${messaging_params[@]+"${messaging_params[@]}"}

# (No associative arrays: macOS ships bash 3.2.)
outputs="$(stack_outputs "$messaging_stack")"
out() {
    awk -F '\t' -v k="$1" '$1 == k { print $2; exit }' <<<"$outputs"
}
for key in QueueUrl QueueArn DlqUrl DlqArn TopicArn VisibilityTimeoutSeconds StoreTableName StoreTableArn; do
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
    "UsageQueueUrl=$(out UsageQueueUrl)"
    "UsageQueueArn=$(out UsageQueueArn)"
    "UsageDlqUrl=$(out UsageDlqUrl)"
    "UsageDlqArn=$(out UsageDlqArn)"
    "StoreTableName=$(out StoreTableName)"
    "StoreTableArn=$(out StoreTableArn)"
)
[[ -n $image ]] && params+=("ImageUri=$image")
[[ -n $vpc ]] && params+=("VpcId=$vpc")
[[ -n $subnets ]] && params+=("SubnetIds=$subnets")

cfn_deploy "$service_stack" "$TEMPLATES/service.yaml" \
    "${params[@]}" ${service_params[@]+"${service_params[@]}"}

printf '\n==> Deployed. Front ends send tokens to %s, your application sends usage to %s,\n' \
    "$(out QueueUrl)" "$(out UsageQueueUrl)"
printf '    both with the policy %s; the store is the table %s;\n' "$(out SenderPolicyArn)" "$(out StoreTableName)"
printf '    subscribe your systems to %s. Service outputs:\n' "$(out TopicArn)"
stack_outputs "$service_stack" | sed 's/^/    /'

# --- intake (the fulfillment URL) --------------------------------------------------------------------
if ((with_intake)); then
    service_outputs="$(stack_outputs "$service_stack")"
    cluster="$(awk -F '\t' '$1 == "ClusterName" { print $2; exit }' <<<"$service_outputs")"
    iparams=(
        "QueueUrl=$(out QueueUrl)"
        "QueueArn=$(out QueueArn)"
        "KmsKeyArn=$(out KmsKeyArn)"
        "StoreTableName=$(out StoreTableName)"
        "StoreTableArn=$(out StoreTableArn)"
    )
    [[ -n $cluster ]] && iparams+=("ClusterName=$cluster")
    [[ -n $image ]] && iparams+=("ImageUri=$image")
    [[ -n $vpc ]] && iparams+=("VpcId=$vpc")
    [[ -n $subnets ]] && ! has_intake_param TaskSubnetIds && iparams+=("TaskSubnetIds=$subnets")
    cfn_deploy "$intake_stack" "$TEMPLATES/intake.yaml" \
        "${iparams[@]}" ${intake_params[@]+"${intake_params[@]}"}
    printf '\n==> Fulfillment URL stack deployed. Point your host name at the load balancer, then set\n' >&2
    printf '    the product fulfillment URL to https://YOUR-HOST<FulfillmentPath> (docs/deploy.md). Outputs:\n' >&2
    stack_outputs "$intake_stack" | sed 's/^/    /'
fi
