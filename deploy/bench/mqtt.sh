#!/usr/bin/env bash
# `make bench-mqtt`: MQTT -> ClickHouse ingest against a bare subscribe-and-count client, in one
# script so that both run on the same machine state. A mosquitto of its own (its default
# in-flight window of 20 per session; the queue unbounded so that the broker itself drops
# nothing), BENCH_MESSAGES (default 500,000) realistic sensor messages from `cityops sim`:
#   (a) a bare client (rumqttc, acknowledging on receipt, as many sessions sharing the
#       subscription as the ingest, CITYOPS_MQTT_CONNECTIONS, default 4) counting an unpaced burst: the baseline;
#   (b) `cityops ingest` end to end into ClickHouse (a database of its own) with the no-loss
#       guarantee on (PUBACK only after the spool's fdatasync), the same unpaced burst:
#       messages/s, rows/s, CPU seconds per million messages, peak RSS;
#   (c) both again draining the same burst queued at the broker while they were away (their
#       persistent sessions), which takes the publisher's CPU out of the measurement: the
#       catch-up rate after an outage;
#   (d) the ingest under a paced load (BENCH_RATE events/s) with publish-to-queryable latency
#       probes, p50/p99.
set -euo pipefail
cd "$(dirname "$0")/../.."
source deploy/local/lib.sh

N=${BENCH_MESSAGES:-500000}
RATE=${BENCH_RATE:-20000}
PUB_CONNECTIONS=${BENCH_PUBLISHER_CONNECTIONS:-8}
export CITYOPS_MQTT_CONNECTIONS=${CITYOPS_MQTT_CONNECTIONS:-4}
FEEDS=${BENCH_FEEDS:-air_quality,water_level,traffic_counter,streetlight,parking,waste_bin,camera_ai}
FILTERS=danang/+/air/+,danang/+/water/+,danang/+/traffic/+,danang/+/lighting/+/+,danang/+/parking/+,danang/+/waste/notifications,danang/+/camera/+/events

source deploy/bench/lib.sh mqtt_bench

# A broker of its own, in memory.
port=$(free_port)
cat >"$work/mosquitto.conf" <<EOF
listener $port 127.0.0.1
allow_anonymous true
persistence false
max_inflight_messages 20
max_queued_messages 0
log_dest file $work/mosquitto.log
user $(id -un)
EOF
mosquitto -c "$work/mosquitto.conf" &
pids+=($!)
for _ in $(seq 100); do (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done

publish_burst() {
  "$BIN" sim --seed 1 --start 2026-11-26T00:00:00Z --duration 3650d --rate 1500000 --unpaced \
    --count "$N" --feeds "$FEEDS" --to-mqtt "127.0.0.1:$port" --mqtt-connections "$PUB_CONNECTIONS" 2>"$work/sim-$1.log"
  tail -n 3 "$work/sim-$1.log" | sed "s/^/  publisher: /"
}

say "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(. /etc/os-release; echo "$PRETTY_NAME"); mosquitto $(mosquitto -h 2>/dev/null | head -1 | awk '{print $3}') and ClickHouse $(sql "SELECT version()") on this machine"

say "(a) bare subscribe-and-count client, $N messages published unpaced:"
"$BENCH" count 127.0.0.1 "$port" "$FILTERS" "$N" "$CITYOPS_MQTT_CONNECTIONS" >"$work/count.out" 2>"$work/count.err" &
counter=$!
pids+=($counter)
for _ in $(seq 100); do grep -q ready "$work/count.err" 2>/dev/null && break; sleep 0.1; done
publish_burst a
wait "$counter"
baseline=$(cat "$work/count.out")
say "  $baseline"

say "(b) cityops ingest end to end, the same burst:"
export CITYOPS_CLICKHOUSE_DATABASE=bench_mqtt CITYOPS_MQTT_PORT=$port
export CITYOPS_CLICKHOUSE_URL=http://127.0.0.1:$CH_HTTP_PORT CITYOPS_LOG_LEVEL=warn
export CITYOPS_MQTT_CLIENT_ID=bench-ingest-$$ CITYOPS_SPOOL_DIR=$work/spool
sql "DROP DATABASE IF EXISTS bench_mqtt" >/dev/null
"$BIN" migrate --config deploy/config/cityops.toml --quiet
mport=$(free_port)
"$BIN" ingest --source mqtt --config deploy/config/cityops.toml --listen-addr "127.0.0.1:$mport" 2>"$work/ingest.log" &
ingest=$!
pids+=($ingest)
for _ in $(seq 100); do
  curl -sf "http://127.0.0.1:$mport/metrics" | grep -q "^cityops_ingest_mqtt_subscribed_connections $CITYOPS_MQTT_CONNECTIONS" && break
  sleep 0.1
done
python3 deploy/bench/watch_ingest.py "$ingest" "http://127.0.0.1:$mport/metrics" "$N" >"$work/watch.out" &
watcher=$!
publish_burst b
wait "$watcher" || { cat "$work/ingest.log"; exit 1; }
result=$(cat "$work/watch.out")
say "  $result"
spool=$(curl -sf "http://127.0.0.1:$mport/metrics" | awk '/^cityops_ingest_spool_sync_duration_seconds_(sum|count)/ {v[$1]=$2} END {if (v["cityops_ingest_spool_sync_duration_seconds_count"] > 0) printf "%d syncs, mean %.2f ms", v["cityops_ingest_spool_sync_duration_seconds_count"], 1000 * v["cityops_ingest_spool_sync_duration_seconds_sum"] / v["cityops_ingest_spool_sync_duration_seconds_count"]}')
say "  spool: $spool"

say "(c) draining the same burst queued at the broker while the client was away:"
"$BENCH" count 127.0.0.1 "$port" "$FILTERS" 0 "$CITYOPS_MQTT_CONNECTIONS" bench-drain-$$ 2>/dev/null >/dev/null
publish_burst c1
drain_baseline=$("$BENCH" count 127.0.0.1 "$port" "$FILTERS" "$N" "$CITYOPS_MQTT_CONNECTIONS" bench-drain-$$ 2>/dev/null)
say "  bare client: $drain_baseline"
kill -TERM "$ingest"; wait "$ingest" || true
publish_burst c2
sql "DROP DATABASE IF EXISTS bench_mqtt" >/dev/null
"$BIN" migrate --config deploy/config/cityops.toml --quiet
# Same client id (its sessions hold the burst), a fresh spool and database.
CITYOPS_SPOOL_DIR=$work/spool-drain "$BIN" ingest --source mqtt --config deploy/config/cityops.toml \
  --listen-addr "127.0.0.1:$mport" 2>"$work/ingest-drain.log" &
ingest=$!
pids+=($ingest)
drain_result=$(python3 deploy/bench/watch_ingest.py "$ingest" "http://127.0.0.1:$mport/metrics" "$N") || {
  cat "$work/ingest-drain.log"; exit 1; }
say "  ingest: $drain_result"

say "(d) publish-to-queryable latency, 400 probes 50 ms apart, over a paced load of $RATE events/s:"
"$BIN" sim --seed 2 --rate "$RATE" --duration 40s --feeds "$FEEDS" --to-mqtt "127.0.0.1:$port" 2>"$work/load.log" &
pids+=($!)
latency=$("$BENCH" latency 127.0.0.1 "$port" "$CITYOPS_CLICKHOUSE_URL" bench_mqtt 400 50 2>"$work/latency.log")
[ -s "$work/latency.log" ] && sed "s/^/  /" "$work/latency.log"
say "  $latency"
kill -TERM "$ingest"; wait "$ingest" || true
grep -E "WARN|ERROR" "$work/ingest.log" | head -5 | sed "s/^/  ingest log: /" || true

python3 - "$baseline" "$result" "$drain_baseline" "$drain_result" <<'PY'
import sys
def parse(line):
    return {k: float(v) for k, v in (f.split("=") for f in line.split()[1:])}
a, b, c, d = (parse(x) for x in sys.argv[1:5])
for what, base_run, run in (("live burst", a, b), ("queued burst", c, d)):
    base = base_run["messages"] / base_run["seconds"]
    ingest = run["messages_per_s"]
    print(f"summary: {what}: baseline {base:,.0f} messages/s (acknowledged on receipt); "
          f"ingest into ClickHouse {ingest:,.0f} messages/s ({run['rows_per_s']:,.0f} rows/s), "
          f"ingest / baseline = {ingest / base:.3f}, "
          f"{run['cpu_s_per_million_messages']:.2f} CPU-s per million messages, "
          f"peak RSS {run['peak_rss_bytes'] / 1048576:.0f} MiB")
PY
