#!/usr/bin/env bash
# Runs the libFuzzer targets of fuzz/ one after the other, each for FUZZ_RUNS executions (or
# FUZZ_SECONDS seconds when that is set), seeded from the repository's own samples, and prints
# a table of executions per target. A finding stops the run with libFuzzer's report and the
# crashing input under fuzz/artifacts/<target>/.
set -euo pipefail
cd "$(dirname "$0")/../.."

FUZZ_RUNS="${FUZZ_RUNS:-10000000}"
FUZZ_SECONDS="${FUZZ_SECONDS:-}"
FUZZ_TARGETS="${FUZZ_TARGETS:-json_mapping senml ngsi_ld config rules rowbinary spool}"
CARGO="${CARGO:-cargo}"
# The code under test is safe Rust: without AddressSanitizer a target runs several times
# faster. FUZZ_SANITIZER=address turns it back on.
FUZZ_SANITIZER="${FUZZ_SANITIZER:-none}"
# FUZZ_JOBS=N runs each target in libFuzzer's fork mode with N worker processes (one per
# core); the parent stops once the workers together reach FUZZ_RUNS executions.
FUZZ_JOBS="${FUZZ_JOBS:-1}"

command -v cargo-fuzz >/dev/null 2>&1 || "$CARGO" install cargo-fuzz --locked

golden=crates/cityops-feeds/tests/golden
seed() {
    local target=$1
    local corpus=fuzz/corpus/$target
    mkdir -p "$corpus"
    case $target in
        json_mapping) cp "$golden"/json/*.json "$corpus"/ ;;
        senml) cp "$golden"/senml/*.json "$golden"/senml_cbor/*.cbor "$corpus"/ 2>/dev/null || true ;;
        ngsi_ld) cp "$golden"/ngsi_ld/*.json "$corpus"/ ;;
        config) cp deploy/config/cityops.toml "$golden"/feeds.toml "$corpus"/ ;;
        rules) cp deploy/rules/*.yaml "$corpus"/ ;;
    esac
}

if [ -n "$FUZZ_SECONDS" ]; then
    limit="-max_total_time=$FUZZ_SECONDS"
else
    limit="-runs=$FUZZ_RUNS"
fi
fork=()
if [ "$FUZZ_JOBS" -gt 1 ]; then
    fork=("-fork=$FUZZ_JOBS")
fi

cd fuzz
RUSTC_BOOTSTRAP=1 "$CARGO" fuzz build -s "$FUZZ_SANITIZER"
cd ..
summary=""
for target in $FUZZ_TARGETS; do
    seed "$target"
    log=fuzz/artifacts/$target.log
    mkdir -p fuzz/artifacts
    started=$(date +%s)
    (cd fuzz && RUSTC_BOOTSTRAP=1 "$CARGO" fuzz run -s "$FUZZ_SANITIZER" "$target" "corpus/$target" -- \
        "$limit" "${fork[@]}" -print_final_stats=1 -rss_limit_mb=4096) >"$log" 2>&1 || {
        tail -60 "$log"
        echo "fuzz: $target found a problem (log $log, input under fuzz/artifacts/$target/)" >&2
        exit 1
    }
    seconds=$(( $(date +%s) - started ))
    if [ "$FUZZ_JOBS" -gt 1 ]; then
        # Fork mode's parent reports the workers' total in its progress lines: "#N: cov: ...".
        execs=$(sed -n 's/^#\([0-9][0-9]*\): cov:.*/\1/p' "$log" | tail -1)
    else
        execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    fi
    line=$(printf '%-13s %12s executions %6s s  %8s/s' "$target" "${execs:-?}" "$seconds" \
        "$(( ${execs:-0} / (seconds > 0 ? seconds : 1) ))")
    echo "$line"
    summary+="$line"$'\n'
done
echo
echo "fuzz: every target ran without a finding ($limit)"
printf '%s' "$summary"
