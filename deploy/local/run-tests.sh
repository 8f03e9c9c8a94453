#!/usr/bin/env bash
# Runs every test of the workspace and ends with one summary line, "tests: N passed, N failed",
# so that a reader (or CI) sees the total instead of the last crate's count.
set -uo pipefail
cd "$(dirname "$0")/../.."

log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --workspace "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
awk '/^test result:/ { passed += $4; failed += $6 } END { printf "tests: %d passed, %d failed\n", passed, failed }' "$log"
exit "$status"
