#!/usr/bin/env bash
# `make demo`: runs as much of the pipeline as exists. Today: validate the example config, then
# decode every sample payload of it the way ingest will, and show the events.
set -euo pipefail
cd "$(dirname "$0")/.."

bin=${CITYOPS_BIN:-target/release/cityops}
config=deploy/config/cityops.toml
samples=deploy/config/samples

"$bin" check --config "$config"
echo

# samples.toml is a list of [[sample]] tables with file, source, topic and received_at.
awk -F' = ' '
  /^\[\[sample\]\]/ { if (file) print file, source, topic, at; file = source = topic = at = "" }
  $1 == "file" { gsub(/"/, "", $2); file = $2 }
  $1 == "source" { gsub(/"/, "", $2); source = $2 }
  $1 == "topic" { gsub(/"/, "", $2); topic = $2 }
  $1 == "received_at" { gsub(/"/, "", $2); at = $2 }
  END { if (file) print file, source, topic, at }
' "$samples/samples.toml" >"${TMPDIR:-/tmp}/cityops-demo-samples.txt"

total_events=0
total_rejects=0
while read -r file source topic at; do
  output=$("$bin" decode --config "$config" --source "$source" --topic "$topic" \
    --file "$samples/$file" --received-at "$at")
  if grep -q '"reject"' <<<"$output"; then
    total_rejects=$((total_rejects + 1))
    printf '%-6s %-48s REJECT %s\n' "$source" "$topic" "$output"
    continue
  fi
  count=$(wc -l <<<"$output")
  total_events=$((total_events + count))
  printf '%-6s %-48s %3d events\n' "$source" "$topic" "$count"
  # One short line per event: entity, metric, value or text, unit, event time.
  sed -E 's/.*"ts":"([^"]*)".*"feed":"([^"]*)".*"entity_id":"([^"]*)".*"metric":"([^"]*)","value":([^,]*),"text":(null|"[^"]*"),"unit":"([^"]*)".*/    \2  \3  \4 = \5 \6 \7  @ \1/; s/ null / /; s/ = null "/ = "/' <<<"$output"
done <"${TMPDIR:-/tmp}/cityops-demo-samples.txt"

echo
echo "demo: $total_events events from $(wc -l <"${TMPDIR:-/tmp}/cityops-demo-samples.txt") sample payloads, $total_rejects rejects"
[ "$total_rejects" = 0 ]
