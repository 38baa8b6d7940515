#!/usr/bin/env bash
# Measure `mp-resolver intake` on this machine: requests per second and p50/p99/max latency of the
# fulfillment POST (form -> SendMessageBatch to LocalStack's SQS -> 303) at fixed offered rates,
# open loop (tests/intake.rs, bench_intake_at_fixed_offered_rates, an ignored test), against the
# release build of the binary. Prints a Markdown table for BENCHMARKS.md's "intake" section. Not a
# test and not in CI: the figures depend on the machine and on what else runs on it.
#
# Usage: scripts/bench-intake.sh
# Settings: MPR_BENCH_RATES (default 50,100,200 requests/s), MPR_BENCH_SECS (default 10 per rate);
# LocalStack as for scripts/test.sh (MPR_TEST_LOCALSTACK_ENDPOINT, or one started and stopped here).
set -euo pipefail
cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.."
cargo build --release --locked --bin mp-resolver
export MPR_BENCH_BIN="$PWD/target/release/mp-resolver"
exec bash scripts/test.sh --test intake -- --ignored --nocapture --exact bench_intake_at_fixed_offered_rates
