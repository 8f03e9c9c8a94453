#!/usr/bin/env bash
# Searches every log the test suite kept (CITYOPS_TEST_LOG_DIR, filled by the test kit) for the
# test secrets of crates/cityops-testkit/src/test-secrets.txt; fails naming the file and line
# of any found. First it checks itself on a planted log, so that a broken search cannot pass.
#   usage: grep-secrets.sh DIR
set -euo pipefail
cd "$(dirname "$0")/../.."
dir=${1:?usage: grep-secrets.sh DIR}
secrets=crates/cityops-testkit/src/test-secrets.txt

canary=$(mktemp -d)
trap 'rm -rf "$canary"' EXIT
head -n1 "$secrets" | sed 's/^/connected with password=/' > "$canary/planted.log"
if ! grep -rFq -f "$secrets" "$canary"; then
  echo "secrets: the search does not find a planted secret; not trusting it" >&2
  exit 1
fi

files=$(find "$dir" -type f 2>/dev/null | wc -l)
if [ "$files" -eq 0 ]; then
  echo "secrets: no logs kept in $dir (was CITYOPS_TEST_LOG_DIR set for the tests?)" >&2
  exit 1
fi
bytes=$(du -sb "$dir" | cut -f1)
count=$(grep -cv '^\s*$' "$secrets")
if found=$(grep -rnF -f "$secrets" "$dir" | cut -c1-300); then
  echo "secrets: test secrets found in kept logs:" >&2
  echo "$found" | head -20 >&2
  exit 1
fi
echo "secrets: $files logs ($((bytes / 1048576)) MiB) searched for $count test secrets: none found"
