#!/usr/bin/env bash
# Fuzz the inbound message parser (`message::parse_body`) with cargo-fuzz / libFuzzer. Not part of
# CI: run it by hand, e.g. `scripts/fuzz.sh` (180 s per target) or `scripts/fuzz.sh 600`.
#
#   scripts/fuzz.sh [SECONDS]
#
# For each target in fuzz/fuzz_targets/ (parse_body, parse_body_json): copies the committed seeds
# (fuzz/seeds/parse_body/) into a scratch corpus fuzz/corpus/<target>/ (gitignored, kept between
# runs so later runs start from what earlier ones found), fuzzes for SECONDS with one job, and
# prints libFuzzer's summary. Exits non-zero if any target left a crash, timeout, leak or OOM
# artifact in fuzz/artifacts/<target>/; minimize one with
#   RUSTC_BOOTSTRAP=1 cargo fuzz tmin -s address -a <target> fuzz/artifacts/<target>/crash-...
#
# Settings (environment variables, all optional):
#   MPR_FUZZ_TARGETS    space-separated targets to run        (default: "parse_body parse_body_json")
#   MPR_FUZZ_SANITIZER  cargo fuzz -s value: address or none  (default: address)
#
# Toolchain: cargo-fuzz needs nightly-only rustc flags (-Z...). Only stable is installed here, so
# the build runs with RUSTC_BOOTSTRAP=1, which lets stable accept them. cargo-fuzz itself is
# installed from crates.io (`cargo install cargo-fuzz --locked`) when missing.
set -euo pipefail

ROOT="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)"
SECONDS_PER_TARGET="${1:-180}"
TARGETS="${MPR_FUZZ_TARGETS:-parse_body parse_body_json}"
SANITIZER="${MPR_FUZZ_SANITIZER:-address}"
FUZZ_DIR="$ROOT/fuzz"
LOG_DIR="$FUZZ_DIR/target/fuzz-logs"

info() { printf '==> %s\n' "$*" >&2; }

if ! [[ $SECONDS_PER_TARGET =~ ^[1-9][0-9]*$ ]]; then
    echo "usage: scripts/fuzz.sh [SECONDS]   (SECONDS a positive integer, got '$SECONDS_PER_TARGET')" >&2
    exit 2
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
    info "cargo-fuzz not found: cargo install cargo-fuzz --locked"
    cargo install cargo-fuzz --locked
fi
info "$(cargo fuzz --version), $(rustc --version)"

export RUSTC_BOOTSTRAP=1
cd -- "$ROOT"
mkdir -p "$LOG_DIR"

# -a: debug assertions and overflow checks on, in the optimized build.
build_flags=(-s "$SANITIZER" -a)

failed=()
for target in $TARGETS; do
    corpus="$FUZZ_DIR/corpus/$target"
    artifacts="$FUZZ_DIR/artifacts/$target"
    log="$LOG_DIR/$target.log"
    mkdir -p "$corpus" "$artifacts"
    cp -- "$FUZZ_DIR"/seeds/parse_body/* "$corpus"/

    info "building $target (sanitizer: $SANITIZER)"
    cargo fuzz build "${build_flags[@]}" "$target"

    marker="$(mktemp)"
    info "fuzzing $target for ${SECONDS_PER_TARGET}s (corpus $corpus, log $log)"
    rc=0
    cargo fuzz run "${build_flags[@]}" "$target" "$corpus" -- \
        -max_total_time="$SECONDS_PER_TARGET" \
        -max_len=300000 \
        -timeout=10 \
        -print_final_stats=1 \
        >"$log" 2>&1 || rc=$?

    new_artifacts="$(find "$artifacts" -type f -newer "$marker" \
        \( -name 'crash-*' -o -name 'timeout-*' -o -name 'leak-*' -o -name 'oom-*' \) | sort)"
    rm -f -- "$marker"

    echo "---- $target: libFuzzer summary (exit code $rc) ----"
    # The last status line (execs, cov, ft, corpus) and the final stats.
    grep -E '^#[0-9]+[[:space:]]+(DONE|pulse|NEW|REDUCE|INITED)' "$log" | tail -n 1 || true
    grep -E '^(Done [0-9]+ runs|stat::)' "$log" || true
    echo "corpus files: $(find "$corpus" -type f | wc -l)"

    if [[ -n $new_artifacts ]] || ((rc != 0)); then
        echo "!!!! $target FAILED: exit code $rc" >&2
        grep -E -A 20 -m 1 "panicked at|ERROR: libFuzzer|ERROR: AddressSanitizer|SUMMARY:" "$log" >&2 || tail -n 40 "$log" >&2
        if [[ -n $new_artifacts ]]; then
            echo "artifacts:" >&2
            while IFS= read -r artifact; do echo "  $artifact"; done <<<"$new_artifacts" >&2
        fi
        failed+=("$target")
    fi
done

if ((${#failed[@]})); then
    echo "fuzzing found problems in: ${failed[*]}" >&2
    exit 1
fi
echo "no crashes in: $TARGETS (${SECONDS_PER_TARGET}s each)"
