#!/usr/bin/env bash
# `make bench-kafka`: Kafka -> ClickHouse ingest against a bare consume-and-count loop, in one
# script so that both run on the same machine state. Produces BENCH_MESSAGES (default
# 2,000,000) realistic city messages with `cityops sim` to a broker of its own, then measures
#   (a) a bare rdkafka consumer counting the messages (the baseline),
#   (b) `cityops ingest` end to end into ClickHouse (a database of its own), with every
#       guarantee on: messages/s, rows/s, CPU seconds per million messages, peak RSS,
#   (c) the same ingest into a Null-engine `events` table: the ingest's own ceiling, with
#       ClickHouse's cost of storing rows taken out,
#   (d) publish-to-queryable latency p50/p99 with probes, under a paced background load, once
#       ClickHouse has merged the bulk load's parts.
set -euo pipefail
cd "$(dirname "$0")/../.."
source deploy/local/lib.sh

N=${BENCH_MESSAGES:-2000000}
LATENCY_RATE=${BENCH_LATENCY_EVENTS_PER_S:-50000}
TOPICS=danang.citizen.reports,danang.dvc.dossiers,danang.transport.bus-gps,danang.health.beds
FEEDS=${BENCH_FEEDS:-citizen_reports,public_service_dossiers,bus_gps,hospital_beds}

source deploy/bench/lib.sh kafka_bench

start_tansu

say "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(. /etc/os-release; echo "$PRETTY_NAME"); broker Tansu (memory) and ClickHouse $(sql "SELECT version()") on this machine"
say "producing $N messages of the Kafka feeds with cityops sim ..."
"$BIN" sim --seed 1 --start 2026-11-26T00:00:00Z --duration 3650d --rate 1500000 --unpaced \
  --count "$N" --feeds "$FEEDS" --to-kafka "$bootstrap" 2>"$work/sim.log"
tail -n 6 "$work/sim.log"

say "(a) bare consume-and-count loop:"
baseline=$("$BENCH" count "$bootstrap" "$TOPICS" "$N")
say "  $baseline"

say "(b) cityops ingest end to end:"
export CITYOPS_CLICKHOUSE_DATABASE=bench_kafka CITYOPS_KAFKA_BOOTSTRAP=$bootstrap
export CITYOPS_KAFKA_GROUP=bench-ingest-$$ CITYOPS_CLICKHOUSE_URL=http://127.0.0.1:$CH_HTTP_PORT
export CITYOPS_LOG_LEVEL=warn
sql "DROP DATABASE IF EXISTS bench_kafka" >/dev/null
"$BIN" migrate --config deploy/config/cityops.toml --quiet
mport=$(free_port)
"$BIN" ingest --source kafka --config deploy/config/cityops.toml --listen-addr "127.0.0.1:$mport" 2>"$work/ingest.log" &
ingest=$!
pids+=($ingest)
result=$(python3 deploy/bench/watch_ingest.py "$ingest" "http://127.0.0.1:$mport/metrics" "$N") || {
  cat "$work/ingest.log"; exit 1; }
say "  $result"

# The bulk load leaves ClickHouse merging its parts for a while; latency is measured after that.
waited=0
while [ "$waited" -lt 600 ]; do
  merges=$(sql "SELECT count() FROM system.merges")
  [ "$merges" = 0 ] && break
  sleep 1
  waited=$((waited + 1))
done
say "  (ClickHouse merged the bulk load's parts for ${waited} s before this; $merges merges still running)"

# The ingest's own ceiling: the same messages, the same guarantees, into an `events` table of
# the Null engine (ClickHouse parses every RowBinary row, then discards it, no view attached),
# so that what ClickHouse spends storing rows is out of the measurement.
say "(c) the same ingest into a Null events table (ClickHouse parses, stores nothing):"
null_db=bench_kafka_null
sql "DROP DATABASE IF EXISTS $null_db" >/dev/null
CITYOPS_CLICKHOUSE_DATABASE=$null_db "$BIN" migrate --config deploy/config/cityops.toml --quiet
for view in $(sql "SELECT name FROM system.tables WHERE database = '$null_db' AND engine = 'MaterializedView'"); do
  sql "DROP TABLE $null_db.$view" >/dev/null
done
sql "DROP TABLE $null_db.events" >/dev/null
sql "CREATE TABLE $null_db.events AS bench_kafka.events ENGINE = Null" >/dev/null
nport=$(free_port)
CITYOPS_CLICKHOUSE_DATABASE=$null_db CITYOPS_KAFKA_GROUP=bench-null-$$ \
  "$BIN" ingest --source kafka --config deploy/config/cityops.toml --listen-addr "127.0.0.1:$nport" 2>"$work/null.log" &
null_ingest=$!
pids+=($null_ingest)
null_result=$(python3 deploy/bench/watch_ingest.py "$null_ingest" "http://127.0.0.1:$nport/metrics" "$N") || {
  cat "$work/null.log"; exit 1; }
kill -TERM "$null_ingest"; wait "$null_ingest" || true
sql "DROP DATABASE $null_db" >/dev/null
say "  $null_result"

say "(d) publish-to-queryable latency, 400 probes 50 ms apart, over a paced load of $LATENCY_RATE events/s:"
"$BIN" sim --seed 2 --rate "$LATENCY_RATE" --duration 40s --feeds "$FEEDS" --to-kafka "$bootstrap" 2>"$work/load.log" &
pids+=($!)
latency=$("$BENCH" latency "$bootstrap" "$CITYOPS_CLICKHOUSE_URL" bench_kafka 400 50 2>"$work/latency.log")
[ -s "$work/latency.log" ] && sed "s/^/  /" "$work/latency.log"
say "  $latency"
kill -TERM "$ingest"; wait "$ingest" || true

python3 - "$baseline" "$result" "$null_result" <<'PY'
import sys
def parse(line):
    return {k: float(v) for k, v in (f.split("=") for f in line.split()[1:])}
a, b, c = parse(sys.argv[1]), parse(sys.argv[2]), parse(sys.argv[3])
base = a["messages"] / a["seconds"]
def line(what, r):
    ingest = r["messages_per_s"]
    return (f"{what} {ingest:,.0f} messages/s ({r['rows_per_s']:,.0f} rows/s), "
            f"ingest / baseline = {ingest / base:.3f}, "
            f"{r['cpu_s_per_million_messages']:.2f} CPU-s per million messages, "
            f"peak RSS {r['peak_rss_bytes'] / 1048576:.0f} MiB")
print(f"summary: baseline {base:,.0f} messages/s")
print("summary: " + line("ingest into ClickHouse", b))
print("summary: " + line("ingest into a Null table", c))
PY
