#!/usr/bin/env bash
# Run LocalStack (SQS, SNS, EventBridge, STS, IAM) for the integration tests, without Docker: in host mode, from a
# Python venv, listening on 127.0.0.1 only.
#
# Usage: scripts/localstack.sh ensure|start|stop|status
#   ensure  create/update the venv (pinned by scripts/localstack-constraints.txt) and build the
#           service catalog cache; quick when already done
#   start   ensure, start LocalStack in the background, wait until healthy
#   stop    stop the LocalStack started by `start` (by the PID in its pid file)
#   status  exit 0: ours, healthy; 1: ours, not healthy; 2: another LocalStack answers on the
#           port; 3: not running
#
# Settings: see scripts/lib.sh (MPR_VENV, MPR_LOCALSTACK_PORT, MPR_STATE_DIR, MPR_PYTHON,
# MPR_LOCALSTACK_TIMEOUT), and MPR_LOCALSTACK_SERVICES (LocalStack's SERVICES, default
# sqs,sns,events,sts,iam: the lifecycle tests put events on EventBridge and assume a role;
# scripts/deploy-check.sh adds cloudformation).
set -euo pipefail

# shellcheck source=scripts/lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"

CONSTRAINTS="$MPR_ROOT/scripts/localstack-constraints.txt"
# service_identity: needed by twisted at import, not pulled in by localstack-core.
# awscli: handy for poking at LocalStack by hand (see README).
PACKAGES=('localstack-core[runtime]==4.13.1' 'service_identity' 'awscli')
STAMP="$MPR_VENV/.mpr-install-stamp"
CATALOG_DIR="$MPR_LS_FS_ROOT/usr/lib/localstack"

usage() {
    sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}" >&2
}

# ---------------------------------------------------------------------------------------------
# ensure

sha256_stdin() {
    if command -v sha256sum >/dev/null 2>&1; then
        sha256sum | cut -d' ' -f1
    else
        shasum -a 256 | cut -d' ' -f1
    fi
}

# What the stamp file must contain for the venv to count as up to date.
install_fingerprint() {
    {
        cat -- "$CONSTRAINTS"
        printf '%s\n' "${PACKAGES[@]}"
    } | sha256_stdin
}

pick_python() {
    local py
    if [[ -n ${MPR_PYTHON:-} ]]; then
        py="$MPR_PYTHON"
    elif command -v python3.11 >/dev/null 2>&1 && python3.11 -c '' >/dev/null 2>&1; then
        py=python3.11
    else
        py=python3
    fi
    command -v "$py" >/dev/null 2>&1 || mpr_die "Python not found ('$py'); install Python 3.11 or set MPR_PYTHON"
    if ! "$py" -c 'import sys; sys.exit(0 if sys.version_info[:2] >= (3, 10) else 1)'; then
        mpr_die "$py is $("$py" -V 2>&1); LocalStack needs Python >= 3.10 (3.11 recommended); set MPR_PYTHON"
    fi
    if ! "$py" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else 1)'; then
        mpr_info "warning: $py is $("$py" -V 2>&1); scripts/localstack-constraints.txt was frozen on Python 3.11"
    fi
    printf '%s\n' "$py"
}

venv_up_to_date() {
    [[ -f $STAMP && "$(cat -- "$STAMP")" == "$(install_fingerprint)" ]] &&
        "$MPR_VENV/bin/python" -c '' >/dev/null 2>&1
}

catalog_present() {
    compgen -G "$CATALOG_DIR/service-catalog-*.dill" >/dev/null
}

install_venv() {
    local py
    if [[ -f $MPR_VENV/pyvenv.cfg ]] && "$MPR_VENV/bin/python" -c '' >/dev/null 2>&1; then
        mpr_info "Updating LocalStack venv $MPR_VENV ..."
    else
        if [[ -e $MPR_VENV && ! -f $MPR_VENV/pyvenv.cfg && -n "$(ls -A -- "$MPR_VENV" 2>/dev/null)" ]]; then
            mpr_die "$MPR_VENV exists and is not a Python venv; remove it or set MPR_VENV elsewhere"
        fi
        py="$(pick_python)"
        mpr_info "Creating LocalStack venv $MPR_VENV with $("$py" -V 2>&1) (takes a few minutes) ..."
        # --clear: a venv whose python no longer runs (e.g. the base Python was upgraded) is rebuilt.
        "$py" -m venv --clear "$MPR_VENV" ||
            mpr_die "could not create a venv with $py (on Debian/Ubuntu: apt-get install python3-venv)"
    fi
    rm -f -- "$STAMP"
    "$MPR_VENV/bin/python" -m pip install --disable-pip-version-check --progress-bar off \
        -c "$CONSTRAINTS" "${PACKAGES[@]}"
    # The catalog cache is tied to the installed versions; rebuild it.
    rm -f -- "$CATALOG_DIR"/service-catalog-*.dill
    install_fingerprint >"$STAMP"
}

build_catalog() {
    mpr_info "Building LocalStack service catalog cache in $CATALOG_DIR ..."
    mkdir -p -- "$CATALOG_DIR"
    (cd -- "$MPR_STATE_DIR" &&
        FILESYSTEM_ROOT="$MPR_LS_FS_ROOT" OVERRIDE_IN_DOCKER=0 "$MPR_VENV/bin/python" -m localstack.aws.spec >/dev/null)
    catalog_present || mpr_die "building the service catalog cache did not produce $CATALOG_DIR/service-catalog-*.dill"
}

cmd_ensure() {
    [[ -f $CONSTRAINTS ]] || mpr_die "missing $CONSTRAINTS"
    if venv_up_to_date && catalog_present; then
        return 0
    fi
    mkdir -p -- "$MPR_STATE_DIR" "$(dirname -- "$MPR_VENV")"
    # Serialise concurrent installs (where flock(1) exists).
    if command -v flock >/dev/null 2>&1; then
        exec 9>"$MPR_VENV.lock"
        flock 9
    fi
    venv_up_to_date || install_venv
    catalog_present || build_catalog
    if command -v flock >/dev/null 2>&1; then
        exec 9>&-
    fi
}

# ---------------------------------------------------------------------------------------------
# process helpers

# True when PID is alive (and not a zombie).
pid_alive() {
    local stat
    stat="$(ps -o stat= -p "$1" 2>/dev/null)" || return 1
    [[ -n $stat && $stat != Z* ]]
}

# True when PID is alive and is a LocalStack runtime.
pid_is_localstack() {
    pid_alive "$1" && [[ "$(ps -o args= -p "$1" 2>/dev/null)" == *localstack.runtime.main* ]]
}

# Prints the PID from the pid file if that process is alive and is LocalStack.
our_pid() {
    local pid
    [[ -f $MPR_LS_PID_FILE ]] || return 1
    pid="$(cat -- "$MPR_LS_PID_FILE" 2>/dev/null)" || return 1
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    pid_is_localstack "$pid" || return 1
    printf '%s\n' "$pid"
}

curl_health() {
    curl -sf --noproxy '*' --connect-timeout 2 --max-time 5 "$MPR_LS_ENDPOINT/_localstack/health"
}

# True when the health endpoint answers and SQS and SNS are up.
healthy() {
    local body
    body="$(curl_health 2>/dev/null)" || return 1
    [[ $body =~ \"sqs\":\ *\"(running|available)\" && $body =~ \"sns\":\ *\"(running|available)\" ]]
}

port_open() {
    (exec 3<>"/dev/tcp/127.0.0.1/$MPR_LOCALSTACK_PORT") 2>/dev/null
}

# Stop PID: TERM, wait up to 10 s, then KILL.
stop_pid() {
    local pid="$1" i
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
        pid_alive "$pid" || return 0
        sleep 0.1
    done
    mpr_info "LocalStack (pid $pid) did not stop within 10 s; sending KILL"
    kill -KILL "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
        pid_alive "$pid" || return 0
        sleep 0.1
    done
    mpr_info "warning: LocalStack (pid $pid) is still alive after KILL"
    return 1
}

# Wait until healthy. Returns 1 on timeout, 2 if the process exits.
wait_healthy() {
    local pid="$1" deadline=$((SECONDS + MPR_LOCALSTACK_TIMEOUT))
    while ((SECONDS < deadline)); do
        pid_alive "$pid" || return 2
        healthy && return 0
        sleep 0.5
    done
    healthy
}

# ---------------------------------------------------------------------------------------------
# commands

launch() {
    mkdir -p -- "$MPR_LS_FS_ROOT"
    : >"$MPR_LS_LOG"
    local -a detach=()
    # Own session: not tied to the caller's terminal. (The background subshell is not a
    # process-group leader, so setsid execs in place and $! stays the LocalStack PID.)
    if command -v setsid >/dev/null 2>&1; then
        detach=(setsid)
    fi
    (
        cd -- "$MPR_STATE_DIR"
        # GATEWAY_SERVER=hypercorn: the default (twisted) server ignores the host part of
        # GATEWAY_LISTEN and binds 0.0.0.0; hypercorn binds 127.0.0.1 only.
        # LOCALSTACK_HOST: host:port in the URLs LocalStack hands out (e.g. SQS QueueUrl); the
        # default, localhost.localstack.cloud, needs public DNS to resolve.
        export GATEWAY_SERVER=hypercorn \
            GATEWAY_LISTEN="127.0.0.1:$MPR_LOCALSTACK_PORT" \
            SERVICES="${MPR_LOCALSTACK_SERVICES:-sqs,sns,events,sts,iam}" \
            SQS_ENDPOINT_STRATEGY=path \
            OVERRIDE_IN_DOCKER=0 \
            DOCKER_BRIDGE_IP=127.0.0.1 \
            DNS_ADDRESS=0 \
            SKIP_SSL_CERT_DOWNLOAD=1 \
            DISABLE_EVENTS=1 \
            EAGER_SERVICE_LOADING=1 \
            FILESYSTEM_ROOT="$MPR_LS_FS_ROOT" \
            API_ENDPOINT=http://127.0.0.1:9/v1 \
            LOCALSTACK_HOST="127.0.0.1:$MPR_LOCALSTACK_PORT"
        exec ${detach[@]+"${detach[@]}"} "$MPR_VENV/bin/python" -m localstack.runtime.main </dev/null >>"$MPR_LS_LOG" 2>&1
    ) &
    LAUNCHED_PID=$!
    printf '%s\n' "$LAUNCHED_PID" >"$MPR_LS_PID_FILE"
}

cmd_start() {
    local pid rc
    mkdir -p -- "$MPR_STATE_DIR"
    if pid="$(our_pid)"; then
        if ! healthy; then
            mpr_info "LocalStack (pid $pid) is running but not healthy yet; waiting ..."
            rc=0
            wait_healthy "$pid" || rc=$?
            if ((rc != 0)); then
                mpr_ls_log_tail 60
                mpr_die "LocalStack (pid $pid) is running but not healthy; try: $0 stop"
            fi
        fi
        mpr_info "LocalStack already running (pid $pid)"
        echo "LocalStack ready at $MPR_LS_ENDPOINT"
        return 0
    fi
    rm -f -- "$MPR_LS_PID_FILE"
    if curl_health >/dev/null 2>&1; then
        mpr_die "a LocalStack not started by this script already answers at $MPR_LS_ENDPOINT; \
stop it, pick another port with MPR_LOCALSTACK_PORT, or point the tests at it with \
MPR_TEST_LOCALSTACK_ENDPOINT=$MPR_LS_ENDPOINT"
    fi
    if port_open; then
        mpr_die "port $MPR_LOCALSTACK_PORT on 127.0.0.1 is already in use; pick another with MPR_LOCALSTACK_PORT"
    fi

    cmd_ensure

    launch
    pid="$LAUNCHED_PID"
    # Interrupted while waiting: don't leave a half-started LocalStack behind.
    trap 'stop_pid "$LAUNCHED_PID"; rm -f -- "$MPR_LS_PID_FILE"; exit 130' INT
    trap 'stop_pid "$LAUNCHED_PID"; rm -f -- "$MPR_LS_PID_FILE"; exit 143' TERM
    mpr_info "Starting LocalStack (pid $pid) on 127.0.0.1:$MPR_LOCALSTACK_PORT, log: $MPR_LS_LOG"
    rc=0
    wait_healthy "$pid" || rc=$?
    if ((rc != 0)); then
        if ((rc == 2)); then
            mpr_info "LocalStack exited during startup"
        else
            mpr_info "LocalStack did not become healthy within $MPR_LOCALSTACK_TIMEOUT s"
        fi
        mpr_ls_log_tail 60
        stop_pid "$pid" || true
        rm -f -- "$MPR_LS_PID_FILE"
        exit 1
    fi
    trap - INT TERM
    echo "LocalStack ready at $MPR_LS_ENDPOINT"
}

cmd_stop() {
    local pid
    if [[ ! -f $MPR_LS_PID_FILE ]]; then
        mpr_info "LocalStack is not running (no $MPR_LS_PID_FILE)"
        return 0
    fi
    if pid="$(our_pid)"; then
        mpr_info "Stopping LocalStack (pid $pid) ..."
        stop_pid "$pid" || exit 1
        mpr_info "LocalStack stopped"
    else
        mpr_info "LocalStack is not running (stale pid file removed)"
    fi
    rm -f -- "$MPR_LS_PID_FILE"
}

cmd_status() {
    local pid body
    if pid="$(our_pid)"; then
        if healthy; then
            echo "LocalStack running (pid $pid) at $MPR_LS_ENDPOINT, healthy"
            if body="$(curl_health 2>/dev/null)"; then echo "$body"; fi
            return 0
        fi
        echo "LocalStack running (pid $pid) but not healthy at $MPR_LS_ENDPOINT; log: $MPR_LS_LOG"
        return 1
    fi
    if body="$(curl_health 2>/dev/null)"; then
        echo "A LocalStack not started by this script answers at $MPR_LS_ENDPOINT"
        echo "$body"
        return 2
    fi
    echo "LocalStack is not running (port $MPR_LOCALSTACK_PORT)"
    return 3
}

case "${1:-}" in
    ensure)
        cmd_ensure
        mpr_info "LocalStack venv ready: $MPR_VENV"
        ;;
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    -h | --help | help) usage ;;
    *)
        usage
        exit 2
        ;;
esac
