# shellcheck shell=bash disable=SC2034
# Shared helpers for scripts/*.sh. Source it; don't run it.
#
# Settings (environment variables, all optional):
#   MPR_VENV              Python venv holding LocalStack      (default: <repo>/.localstack-venv)
#   MPR_LOCALSTACK_PORT   port LocalStack listens on, 127.0.0.1 only        (default: 4566)
#   MPR_STATE_DIR         directory for LocalStack's state: fs/ (its FILESYSTEM_ROOT),
#                         localstack.log and localstack.pid  (default: <repo>/target/localstack)
#   MPR_PYTHON            Python used to create the venv  (default: python3.11, else python3)
#   MPR_LOCALSTACK_TIMEOUT seconds to wait for LocalStack to become healthy (default: 90)

# Repository root, from this file's location (works from any current directory).
MPR_ROOT="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)"

# Turn a possibly relative path into an absolute one (the directory need not exist).
mpr_abspath() {
    case "$1" in
        /*) printf '%s\n' "$1" ;;
        *) printf '%s/%s\n' "$(pwd -P)" "$1" ;;
    esac
}

MPR_VENV="$(mpr_abspath "${MPR_VENV:-$MPR_ROOT/.localstack-venv}")"
MPR_VENV="${MPR_VENV%/}"
MPR_LOCALSTACK_PORT="${MPR_LOCALSTACK_PORT:-4566}"
# One state directory per port, so LocalStacks on different ports never share a pid file.
if [[ $MPR_LOCALSTACK_PORT == 4566 ]]; then
    MPR_STATE_DIR="$(mpr_abspath "${MPR_STATE_DIR:-$MPR_ROOT/target/localstack}")"
else
    MPR_STATE_DIR="$(mpr_abspath "${MPR_STATE_DIR:-$MPR_ROOT/target/localstack-$MPR_LOCALSTACK_PORT}")"
fi
MPR_STATE_DIR="${MPR_STATE_DIR%/}"
MPR_LOCALSTACK_TIMEOUT="${MPR_LOCALSTACK_TIMEOUT:-90}"

MPR_LS_FS_ROOT="$MPR_STATE_DIR/fs"
MPR_LS_LOG="$MPR_STATE_DIR/localstack.log"
MPR_LS_PID_FILE="$MPR_STATE_DIR/localstack.pid"
MPR_LS_ENDPOINT="http://127.0.0.1:$MPR_LOCALSTACK_PORT"

mpr_info() { printf '%s\n' "$*" >&2; }
mpr_die() {
    printf 'error: %s\n' "$*" >&2
    exit 1
}

if ! [[ $MPR_LOCALSTACK_PORT =~ ^[0-9]+$ ]] || ((MPR_LOCALSTACK_PORT < 1 || MPR_LOCALSTACK_PORT > 65535)); then
    mpr_die "MPR_LOCALSTACK_PORT must be a port number, got '$MPR_LOCALSTACK_PORT'"
fi
if ! [[ $MPR_LOCALSTACK_TIMEOUT =~ ^[0-9]+$ ]]; then
    mpr_die "MPR_LOCALSTACK_TIMEOUT must be a number of seconds, got '$MPR_LOCALSTACK_TIMEOUT'"
fi

# Print the last lines of the LocalStack log to stderr.
mpr_ls_log_tail() {
    local lines="${1:-60}"
    if [[ -s $MPR_LS_LOG ]]; then
        mpr_info "---- last $lines lines of $MPR_LS_LOG ----"
        tail -n "$lines" -- "$MPR_LS_LOG" >&2 || true
        mpr_info "---- end of LocalStack log ----"
    else
        mpr_info "(LocalStack log $MPR_LS_LOG is empty or missing)"
    fi
}

# Debian's chromium and chromium-driver, which tests/browser.rs drives: installed with apt-get
# (as root, or through sudo) when either command is missing.
mpr_ensure_chromium() {
    if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
        return 0
    fi
    command -v apt-get >/dev/null 2>&1 ||
        mpr_die "tests/browser.rs needs chromium and chromedriver on PATH; install them with your package manager"
    local -a sudo=()
    if [[ $(id -u) -ne 0 ]]; then
        command -v sudo >/dev/null 2>&1 ||
            mpr_die "tests/browser.rs needs chromium and chromedriver: apt-get install -y chromium chromium-driver (as root)"
        sudo=(sudo)
    fi
    mpr_info "Installing chromium and chromium-driver (Debian packages) for tests/browser.rs ..."
    ${sudo[@]+"${sudo[@]}"} apt-get update
    ${sudo[@]+"${sudo[@]}"} env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        chromium chromium-driver
}

# ---------------------------------------------------------------------------------------------
# moto's server (scripts/moto.sh): the DynamoDB the store tests use (LocalStack's DynamoDB needs
# a Java download). Settings (environment variables, all optional):
#   MPR_MOTO_VENV         Python venv holding moto            (default: <repo>/.moto-venv)
#   MPR_MOTO_PORT         port moto_server listens on, 127.0.0.1 only       (default: 4568)
#   MPR_MOTO_STATE_DIR    directory for moto.log and moto.pid
#                         (default: <repo>/target/moto, or target/moto-PORT for another port)
#   MPR_MOTO_TIMEOUT      seconds to wait for moto_server to answer          (default: 60)
MPR_MOTO_VENV="$(mpr_abspath "${MPR_MOTO_VENV:-$MPR_ROOT/.moto-venv}")"
MPR_MOTO_VENV="${MPR_MOTO_VENV%/}"
MPR_MOTO_PORT="${MPR_MOTO_PORT:-4568}"
if [[ $MPR_MOTO_PORT == 4568 ]]; then
    MPR_MOTO_STATE_DIR="$(mpr_abspath "${MPR_MOTO_STATE_DIR:-$MPR_ROOT/target/moto}")"
else
    MPR_MOTO_STATE_DIR="$(mpr_abspath "${MPR_MOTO_STATE_DIR:-$MPR_ROOT/target/moto-$MPR_MOTO_PORT}")"
fi
MPR_MOTO_STATE_DIR="${MPR_MOTO_STATE_DIR%/}"
MPR_MOTO_TIMEOUT="${MPR_MOTO_TIMEOUT:-60}"
MPR_MOTO_LOG="$MPR_MOTO_STATE_DIR/moto.log"
MPR_MOTO_PID_FILE="$MPR_MOTO_STATE_DIR/moto.pid"
MPR_MOTO_ENDPOINT="http://127.0.0.1:$MPR_MOTO_PORT"

if ! [[ $MPR_MOTO_PORT =~ ^[0-9]+$ ]] || ((MPR_MOTO_PORT < 1 || MPR_MOTO_PORT > 65535)); then
    mpr_die "MPR_MOTO_PORT must be a port number, got '$MPR_MOTO_PORT'"
fi
if ! [[ $MPR_MOTO_TIMEOUT =~ ^[0-9]+$ ]]; then
    mpr_die "MPR_MOTO_TIMEOUT must be a number of seconds, got '$MPR_MOTO_TIMEOUT'"
fi

# Print the last lines of the moto log to stderr.
mpr_moto_log_tail() {
    local lines="${1:-60}"
    if [[ -s $MPR_MOTO_LOG ]]; then
        mpr_info "---- last $lines lines of $MPR_MOTO_LOG ----"
        tail -n "$lines" -- "$MPR_MOTO_LOG" >&2 || true
        mpr_info "---- end of moto log ----"
    else
        mpr_info "(moto log $MPR_MOTO_LOG is empty or missing)"
    fi
}

# One DynamoDB ListTables call with curl (moto does not check signatures; the credential scope
# in the Authorization header routes the request to DynamoDB). Prints the JSON answer.
mpr_moto_list_tables() {
    local endpoint="${1:-$MPR_MOTO_ENDPOINT}"
    curl -sf --noproxy '*' --connect-timeout 2 --max-time 5 -X POST \
        -H 'Content-Type: application/x-amz-json-1.0' \
        -H 'X-Amz-Target: DynamoDB_20120810.ListTables' \
        -H 'Authorization: AWS4-HMAC-SHA256 Credential=test/20250101/us-east-1/dynamodb/aws4_request, SignedHeaders=host, Signature=0' \
        --data '{}' "$endpoint/"
}
