#!/usr/bin/env bash
# Run moto's server as the DynamoDB the store tests use ([store] kind = "dynamodb"), without
# Docker: from a Python venv, listening on 127.0.0.1 only. (LocalStack's DynamoDB needs a Java
# download these machines cannot make.)
#
# Usage: scripts/moto.sh ensure|start|stop|status
#   ensure  create/update the venv (moto[server,dynamodb]==5.2.5, pinned by
#           scripts/moto-constraints.txt); quick when already done
#   start   ensure, start moto_server in the background, wait until DynamoDB answers ListTables
#   stop    stop the moto_server started by `start` (by the PID in its pid file)
#   status  exit 0: ours, answering; 1: ours, not answering; 2: something else answers
#           DynamoDB on the port; 3: not running
#
# Settings: see scripts/lib.sh (MPR_MOTO_VENV, MPR_MOTO_PORT, MPR_MOTO_STATE_DIR, MPR_MOTO_TIMEOUT,
# MPR_PYTHON). Endpoint: http://127.0.0.1:${MPR_MOTO_PORT:-4568}; point the SDK at it with
# AWS_ENDPOINT_URL_DYNAMODB (the tests get it as MPR_TEST_DYNAMODB_ENDPOINT from scripts/test.sh).
set -euo pipefail

# shellcheck source=scripts/lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"

CONSTRAINTS="$MPR_ROOT/scripts/moto-constraints.txt"
PACKAGES=('moto[server,dynamodb]==5.2.5')
STAMP="$MPR_MOTO_VENV/.mpr-install-stamp"

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
    if ! "$py" -c 'import sys; sys.exit(0 if sys.version_info[:2] >= (3, 9) else 1)'; then
        mpr_die "$py is $("$py" -V 2>&1); moto needs Python >= 3.9 (3.11 recommended); set MPR_PYTHON"
    fi
    if ! "$py" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else 1)'; then
        mpr_info "warning: $py is $("$py" -V 2>&1); scripts/moto-constraints.txt was frozen on Python 3.11"
    fi
    printf '%s\n' "$py"
}

venv_up_to_date() {
    [[ -f $STAMP && "$(cat -- "$STAMP")" == "$(install_fingerprint)" ]] &&
        "$MPR_MOTO_VENV/bin/python" -c '' >/dev/null 2>&1 &&
        [[ -x $MPR_MOTO_VENV/bin/moto_server ]]
}

install_venv() {
    local py
    if [[ -f $MPR_MOTO_VENV/pyvenv.cfg ]] && "$MPR_MOTO_VENV/bin/python" -c '' >/dev/null 2>&1; then
        mpr_info "Updating moto venv $MPR_MOTO_VENV ..."
    else
        if [[ -e $MPR_MOTO_VENV && ! -f $MPR_MOTO_VENV/pyvenv.cfg && -n "$(ls -A -- "$MPR_MOTO_VENV" 2>/dev/null)" ]]; then
            mpr_die "$MPR_MOTO_VENV exists and is not a Python venv; remove it or set MPR_MOTO_VENV elsewhere"
        fi
        py="$(pick_python)"
        mpr_info "Creating moto venv $MPR_MOTO_VENV with $("$py" -V 2>&1) ..."
        # --clear: a venv whose python no longer runs (e.g. the base Python was upgraded) is rebuilt.
        "$py" -m venv --clear "$MPR_MOTO_VENV" ||
            mpr_die "could not create a venv with $py (on Debian/Ubuntu: apt-get install python3-venv)"
    fi
    rm -f -- "$STAMP"
    "$MPR_MOTO_VENV/bin/python" -m pip install --disable-pip-version-check --progress-bar off \
        -c "$CONSTRAINTS" "${PACKAGES[@]}"
    install_fingerprint >"$STAMP"
}

cmd_ensure() {
    [[ -f $CONSTRAINTS ]] || mpr_die "missing $CONSTRAINTS"
    if venv_up_to_date; then
        return 0
    fi
    mkdir -p -- "$(dirname -- "$MPR_MOTO_VENV")"
    # Serialise concurrent installs (where flock(1) exists).
    if command -v flock >/dev/null 2>&1; then
        exec 9>"$MPR_MOTO_VENV.lock"
        flock 9
    fi
    venv_up_to_date || install_venv
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

# True when PID is alive and is a moto_server.
pid_is_moto() {
    pid_alive "$1" && [[ "$(ps -o args= -p "$1" 2>/dev/null)" == *moto_server* ]]
}

# Prints the PID from the pid file if that process is alive and is moto_server.
our_pid() {
    local pid
    [[ -f $MPR_MOTO_PID_FILE ]] || return 1
    pid="$(cat -- "$MPR_MOTO_PID_FILE" 2>/dev/null)" || return 1
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    pid_is_moto "$pid" || return 1
    printf '%s\n' "$pid"
}

# True when DynamoDB answers ListTables on the port.
healthy() {
    local body
    body="$(mpr_moto_list_tables "$MPR_MOTO_ENDPOINT" 2>/dev/null)" || return 1
    [[ $body == *TableNames* ]]
}

port_open() {
    (exec 3<>"/dev/tcp/127.0.0.1/$MPR_MOTO_PORT") 2>/dev/null
}

# Stop PID: TERM, wait up to 10 s, then KILL.
stop_pid() {
    local pid="$1" i
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
        pid_alive "$pid" || return 0
        sleep 0.1
    done
    mpr_info "moto_server (pid $pid) did not stop within 10 s; sending KILL"
    kill -KILL "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
        pid_alive "$pid" || return 0
        sleep 0.1
    done
    mpr_info "warning: moto_server (pid $pid) is still alive after KILL"
    return 1
}

# Wait until healthy. Returns 1 on timeout, 2 if the process exits.
wait_healthy() {
    local pid="$1" deadline=$((SECONDS + MPR_MOTO_TIMEOUT))
    while ((SECONDS < deadline)); do
        pid_alive "$pid" || return 2
        healthy && return 0
        sleep 0.2
    done
    healthy
}

# ---------------------------------------------------------------------------------------------
# commands

launch() {
    mkdir -p -- "$MPR_MOTO_STATE_DIR"
    : >"$MPR_MOTO_LOG"
    local -a detach=()
    # Own session: not tied to the caller's terminal. (The background subshell is not a
    # process-group leader, so setsid execs in place and $! stays the moto_server PID.)
    if command -v setsid >/dev/null 2>&1; then
        detach=(setsid)
    fi
    (
        cd -- "$MPR_MOTO_STATE_DIR"
        # No credentials or region from the caller's environment leak into moto's own calls.
        export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_DEFAULT_REGION=us-east-1
        unset AWS_PROFILE AWS_SESSION_TOKEN
        # One request at a time: moto's DynamoDB is not thread-safe (moto_server_serial.py).
        exec ${detach[@]+"${detach[@]}"} "$MPR_MOTO_VENV/bin/python" "$MPR_ROOT/scripts/moto_server_serial.py" \
            127.0.0.1 "$MPR_MOTO_PORT" </dev/null >>"$MPR_MOTO_LOG" 2>&1
    ) &
    LAUNCHED_PID=$!
    printf '%s\n' "$LAUNCHED_PID" >"$MPR_MOTO_PID_FILE"
}

cmd_start() {
    local pid rc
    mkdir -p -- "$MPR_MOTO_STATE_DIR"
    if pid="$(our_pid)"; then
        if ! healthy; then
            mpr_info "moto_server (pid $pid) is running but not answering yet; waiting ..."
            rc=0
            wait_healthy "$pid" || rc=$?
            if ((rc != 0)); then
                mpr_moto_log_tail 60
                mpr_die "moto_server (pid $pid) is running but not answering; try: $0 stop"
            fi
        fi
        mpr_info "moto_server already running (pid $pid)"
        echo "moto (DynamoDB) ready at $MPR_MOTO_ENDPOINT"
        return 0
    fi
    rm -f -- "$MPR_MOTO_PID_FILE"
    if healthy; then
        mpr_die "a DynamoDB not started by this script already answers at $MPR_MOTO_ENDPOINT; \
stop it, pick another port with MPR_MOTO_PORT, or point the tests at it with \
MPR_TEST_DYNAMODB_ENDPOINT=$MPR_MOTO_ENDPOINT"
    fi
    if port_open; then
        mpr_die "port $MPR_MOTO_PORT on 127.0.0.1 is already in use; pick another with MPR_MOTO_PORT"
    fi

    cmd_ensure

    launch
    pid="$LAUNCHED_PID"
    # Interrupted while waiting: don't leave a half-started moto_server behind.
    trap 'stop_pid "$LAUNCHED_PID"; rm -f -- "$MPR_MOTO_PID_FILE"; exit 130' INT
    trap 'stop_pid "$LAUNCHED_PID"; rm -f -- "$MPR_MOTO_PID_FILE"; exit 143' TERM
    mpr_info "Starting moto_server (pid $pid) on 127.0.0.1:$MPR_MOTO_PORT, log: $MPR_MOTO_LOG"
    rc=0
    wait_healthy "$pid" || rc=$?
    if ((rc != 0)); then
        if ((rc == 2)); then
            mpr_info "moto_server exited during startup"
        else
            mpr_info "moto_server did not answer within $MPR_MOTO_TIMEOUT s"
        fi
        mpr_moto_log_tail 60
        stop_pid "$pid" || true
        rm -f -- "$MPR_MOTO_PID_FILE"
        exit 1
    fi
    trap - INT TERM
    echo "moto (DynamoDB) ready at $MPR_MOTO_ENDPOINT"
}

cmd_stop() {
    local pid
    if [[ ! -f $MPR_MOTO_PID_FILE ]]; then
        mpr_info "moto_server is not running (no $MPR_MOTO_PID_FILE)"
        return 0
    fi
    if pid="$(our_pid)"; then
        mpr_info "Stopping moto_server (pid $pid) ..."
        stop_pid "$pid" || exit 1
        mpr_info "moto_server stopped"
    else
        mpr_info "moto_server is not running (stale pid file removed)"
    fi
    rm -f -- "$MPR_MOTO_PID_FILE"
}

cmd_status() {
    local pid
    if pid="$(our_pid)"; then
        if healthy; then
            echo "moto_server running (pid $pid) at $MPR_MOTO_ENDPOINT, DynamoDB answering"
            return 0
        fi
        echo "moto_server running (pid $pid) but DynamoDB not answering at $MPR_MOTO_ENDPOINT; log: $MPR_MOTO_LOG"
        return 1
    fi
    if healthy; then
        echo "A DynamoDB not started by this script answers at $MPR_MOTO_ENDPOINT"
        return 2
    fi
    echo "moto_server is not running (port $MPR_MOTO_PORT)"
    return 3
}

case "${1:-}" in
    ensure)
        cmd_ensure
        mpr_info "moto venv ready: $MPR_MOTO_VENV"
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
