#!/usr/bin/env bash
# Runs every test of the workspace and ends with one summary line, "tests: N passed, N failed",
# so that a reader (or CI) sees the total instead of the last crate's count; then searches every
# log the tests kept for the test secrets (grep-secrets.sh).
set -uo pipefail
cd "$(dirname "$0")/../.."

log=$(mktemp)
trap 'rm -f "$log"' EXIT
# Every log the tests write is kept here, then searched for the test secrets.
export CITYOPS_TEST_LOG_DIR="$PWD/target/test-logs"
rm -rf "$CITYOPS_TEST_LOG_DIR"
cargo test --workspace "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
awk '/^test result:/ { passed += $4; failed += $6 } END { printf "tests: %d passed, %d failed\n", passed, failed }' "$log"
deploy/local/grep-secrets.sh "$CITYOPS_TEST_LOG_DIR" || status=1
exit "$status"
