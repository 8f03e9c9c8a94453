#!/usr/bin/env bash
# `make demo`: runs as much of the pipeline as exists: validate the example config, decode every
# sample payload the way ingest will, then start the local stack, fill ClickHouse with six
# simulated hours of the city (a flood included) and show what the wall dashboards would.
set -euo pipefail
cd "$(dirname "$0")/.."

bin=${CITYOPS_BIN:-target/release/cityops}
config=deploy/config/cityops.toml
samples=deploy/config/samples

"$bin" check --config "$config"
echo

# The alert rules of Da Nang and their tests (the alerter runs them on the live feeds).
"$bin" rules check deploy/rules/*.yaml
"$bin" rules test deploy/rules/tests/*.test.yaml
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
[ "$total_rejects" = 0 ] || exit 1

# ---------------------------------------------------------------------------------------------
# The pipeline on the local stack: six hours of the simulated city, with a flood striking Cẩm Lệ
# for the last two, decoded with the example config and stored in ClickHouse; then what the
# wall shows. Uses its own database (cityops_demo), recreated on every run.
echo
echo "== The local stack"
CITYOPS_BIN=$bin deploy/local/up.sh
source deploy/local/lib.sh
export CITYOPS_CLICKHOUSE_URL="http://127.0.0.1:$CH_HTTP_PORT"
export CITYOPS_CLICKHOUSE_DATABASE=cityops_demo
ch() { clickhouse-client --port "$CH_TCP_PORT" --format PrettyCompactNoEscapes --query "$1"; }
ch "DROP DATABASE IF EXISTS cityops_demo" >/dev/null
"$bin" migrate --config "$config" --quiet >/dev/null

echo
echo "== Six hours of Da Nang, flood in Cẩm Lệ for the last two (cityops sim --backfill)"
truth=${TMPDIR:-/tmp}/cityops-demo-ground-truth.json
"$bin" sim --seed 2026 --backfill 6h --scenario flood --scenario-at 4h --scenario-duration 2h \
  --ground-truth "$truth" --to-clickhouse --config "$config" 2>&1 | grep -E "^sim:|clickhouse:"
echo "ground truth: $(tr '\n' ' ' <"$truth" | tr -s ' ')"

echo
echo "== Flood watch: latest level of every gauge (metres)"
ch "SELECT entity_id, district, round(argMax(value, ts), 2) AS level_m, max(ts) AS measured_at
    FROM cityops_demo.events WHERE domain = 'water' AND metric = 'water_level' AND ts >= now() - INTERVAL 1 HOUR
    GROUP BY entity_id, district ORDER BY level_m DESC LIMIT 8"

echo
echo "== Air quality: PM2.5 by district, last hour (ug/m3)"
ch "SELECT district, round(sumMerge(value_sum) / countMerge(samples), 1) AS avg_pm25, round(maxMerge(value_max), 1) AS max_pm25
    FROM cityops_demo.events_1m_district WHERE domain = 'environment' AND metric = 'pm25' AND minute >= now() - INTERVAL 1 HOUR
    GROUP BY district ORDER BY avg_pm25 DESC"

echo
echo "== Citizen reports of the last six hours by status"
ch "SELECT status, uniqMerge(entities) AS reports FROM cityops_demo.events_1m_status
    WHERE domain = 'citizen_report' AND metric = 'status' GROUP BY status ORDER BY reports DESC"

echo
echo "== Feed health: events and rejects per feed"
ch "SELECT feed, count() AS events FROM cityops_demo.events GROUP BY feed ORDER BY feed"
ch "SELECT count() AS rejects FROM cityops_demo.rejects"
echo
echo "demo: done. The stack keeps running (make status, make down); query it with"
echo "  clickhouse-client --port $CH_TCP_PORT --query 'SELECT count() FROM cityops_demo.events'"
