#!/usr/bin/env bash
# Benchmark mp-resolver against the usual alternative (bench/baseline: Node's sqs-consumer with the
# AWS SDK for JavaScript v3) on this machine, against LocalStack and the bundled Marketplace
# Metering emulator, and write the figures into BENCHMARKS.md. Not a test and not in CI: it takes
# about 20 minutes and its figures depend on the machine and on what else runs on it.
# (bench/README.md says what is in bench/.)
#
# Usage: scripts/bench.sh [--quick] [--runs N] [--tokens N] [--only LIST] [--no-write]
#   --quick      1 run of each figure, 2,000 tokens, shorter windows (about 6 minutes); writes
#                target/bench/report.md only, not BENCHMARKS.md
#   --runs N     runs per figure, the median is reported (default 3)
#   --tokens N   tokens per throughput run (default 10000)
#   --only LIST  subset of startup,throughput,newtask,hot,rss,latency,goodput,usage (implies --no-write)
#   --no-write   leave BENCHMARKS.md alone; the report is in target/bench/report.md
# BENCH_THROUGHPUT_KINDS=ceiling,ours,oursDynamo (comma-separated) limits the throughput runs to those.
#
# Needs: Rust (builds target/release/mp-resolver), Node >= 20 and npm (installs bench/'s locked
# dependencies), Python 3.11 (LocalStack, as for scripts/test.sh), curl.
# Settings: BENCH_LOCALSTACK_PORT (default 4570): its own LocalStack, started and stopped here,
# on 127.0.0.1 only; every process it starts is stopped by PID on exit.
set -euo pipefail

export MPR_LOCALSTACK_PORT="${BENCH_LOCALSTACK_PORT:-4570}"
# moto's server, the DynamoDB of the `dynamodb` store's figures (BENCH_MOTO_PORT, default 4579;
# BENCH_DYNAMODB=0 leaves those figures out).
export MPR_MOTO_PORT="${BENCH_MOTO_PORT:-4579}"
# shellcheck source=scripts/lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"
cd -- "$MPR_ROOT"

write=1
args=()
while (($#)); do
    case "$1" in
        --quick | --only) write=0 ;;&
        --no-write) write=0 ;;
        --quick) args+=("$1") ;;
        --runs | --tokens | --only)
            (($# >= 2)) || mpr_die "$1 needs a value"
            args+=("$1" "$2")
            shift
            ;;
        -h | --help)
            sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}" >&2
            exit 0
            ;;
        *) mpr_die "unknown argument '$1' (try --help)" ;;
    esac
    shift
done

LOCALSTACK=("$BASH" "$MPR_ROOT/scripts/localstack.sh")
MOTO=("$BASH" "$MPR_ROOT/scripts/moto.sh")
OUT="$MPR_ROOT/target/bench"
started_localstack=0
started_moto=0

# shellcheck disable=SC2317 # invoked by the EXIT trap
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if ((started_localstack)); then
        "${LOCALSTACK[@]}" stop || true
    fi
    if ((started_moto)); then
        "${MOTO[@]}" stop || true
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

command -v node >/dev/null 2>&1 || mpr_die "node not found (Node >= 20 runs the baseline and the driver)"
node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 20 ? 0 : 1)' ||
    mpr_die "Node >= 20 needed, found $(node --version)"

mpr_info "==> Building target/release/mp-resolver"
# scripts/deploy-check.sh builds a copy of the sources into this target/ too, under the same
# package name: cargo then takes the copy's build of mp-resolver for this tree's (its dep-info names
# the copy's unchanged files), and links it again even with the link removed. So this crate's own
# release artifacts are cleaned first (the dependencies stay built: a minute or two).
cargo clean --release --package mp-resolver --quiet
cargo build --release --locked --quiet --bin mp-resolver
# Measure a private copy: a `cargo build --release` elsewhere during the run must not swap the
# binary between runs.
mkdir -p "$OUT/bin"
cp -f target/release/mp-resolver "$OUT/bin/mp-resolver"

mpr_info "==> Node dependencies of bench/ (npm ci)"
if ! [[ -d bench/node_modules && bench/node_modules/.package-lock.json -nt bench/package-lock.json ]]; then
    (cd bench && npm ci --no-audit --no-fund --loglevel=error)
fi

mpr_info "==> LocalStack on 127.0.0.1:$MPR_LOCALSTACK_PORT"
if "${LOCALSTACK[@]}" status >/dev/null 2>&1; then
    mpr_die "a LocalStack already runs on port $MPR_LOCALSTACK_PORT; stop it or set BENCH_LOCALSTACK_PORT"
fi
started_localstack=1
"${LOCALSTACK[@]}" start

dynamodb=()
if [[ ${BENCH_DYNAMODB:-1} != 0 ]]; then
    mpr_info "==> moto's DynamoDB on 127.0.0.1:$MPR_MOTO_PORT"
    if "${MOTO[@]}" status >/dev/null 2>&1; then
        mpr_die "a moto server already runs on port $MPR_MOTO_PORT; stop it or set BENCH_MOTO_PORT"
    fi
    started_moto=1
    "${MOTO[@]}" start
    dynamodb=("BENCH_DYNAMODB=http://127.0.0.1:$MPR_MOTO_PORT"
        "BENCH_DYNAMODB_PID=$(cat -- "$MPR_MOTO_PID_FILE")")
fi

mkdir -p "$OUT"
mpr_info "==> Measuring (logs in $OUT/logs)"
# The driver reads BENCH_DYNAMODB as moto's endpoint: the caller's "0" must not reach it.
env -u BENCH_DYNAMODB ${dynamodb[@]+"${dynamodb[@]}"} \
    BENCH_LOCALSTACK="$MPR_LS_ENDPOINT" \
    BENCH_LOCALSTACK_PID="$(cat -- "$MPR_LS_PID_FILE")" \
    BENCH_BIN="$OUT/bin/mp-resolver" \
    node bench/driver.js --out "$OUT" ${args[@]+"${args[@]}"}

if ((write)); then
    node bench/report.js --write BENCHMARKS.md "$OUT/results.json"
    mpr_info "==> Updated the generated block of BENCHMARKS.md (and $OUT/report.md)"
else
    mpr_info "==> Report: $OUT/report.md (BENCHMARKS.md left alone)"
fi
