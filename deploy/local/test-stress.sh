#!/usr/bin/env bash
# `make test-stress`: the Kafka and MQTT integration tests (the ingest proofs, several ingests
# in one group, the ClickHouse cluster proofs) while stress-ng keeps every core busy, as on a
# noisy CI machine. STRESS_RUNS=N repeats them N times (default 1) and stops at the first
# failure; each run's result and duration is printed, then a summary. STRESS_TESTS takes the
# test-name filters, space-separated. Logs go to $STRESS_LOG_DIR (default target/test-stress).
set -uo pipefail
source "$(dirname "$0")/lib.sh"
cd "$REPO_DIR"

runs=${STRESS_RUNS:-1}
read -r -a filters <<<"${STRESS_TESTS:-ingest_ scale_out cluster::}"
logs=${STRESS_LOG_DIR:-$REPO_DIR/target/test-stress}
cores=$(nproc)
mkdir -p "$logs"
command -v stress-ng >/dev/null 2>&1 || fail "stress-ng is not installed: run 'make deps'"

# Built before the load starts: the runs measure the tests, not the compiler.
cargo test -p cityops --test cli --no-run --quiet || fail "the tests do not build"

stress_pid=""
stop_stress() {
  [ -n "$stress_pid" ] && kill "$stress_pid" 2>/dev/null && wait "$stress_pid" 2>/dev/null
  stress_pid=""
}
trap stop_stress EXIT INT TERM

passed=0
for run in $(seq "$runs"); do
  stress-ng --cpu "$cores" --cpu-method matrixprod --quiet --timeout 0 &
  stress_pid=$!
  log="$logs/run-$run.log"
  started=$(date +%s)
  cargo test -p cityops --test cli -- "${filters[@]}" >"$log" 2>&1
  status=$?
  stop_stress
  summary=$(grep '^test result:' "$log" | tail -n 1)
  say "test-stress: run $run of $runs: $([ $status = 0 ] && echo passed || echo FAILED) in $(($(date +%s) - started)) s (${summary:-no result}; log $log)"
  if [ $status != 0 ]; then
    grep -E '^test .* FAILED|panicked at' "$log" | head -n 20
    say "test-stress: $passed of $runs runs passed"
    exit 1
  fi
  passed=$((passed + 1))
done
say "test-stress: $passed of $runs runs passed, each with $cores stress-ng workers busy on $cores cores"
