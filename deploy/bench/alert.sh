#!/usr/bin/env bash
# `make bench-alert`: the alerter measured in one script, on the same machine state:
#   (a) a bare rdkafka consume-and-count loop over BENCH_MESSAGES (default 1,000,000) messages
#       of the Kafka feeds (the baseline of `make bench-kafka`),
#   (b) `cityops alert` with the Da Nang rules reading the same messages (its own group, from
#       the beginning): messages/s against the baseline, events evaluated, CPU per message,
#   (c) publish-to-Alertmanager latency p50/p99 of flood probes over MQTT while `cityops sim`
#       loads both sources with BENCH_LOAD_EVENTS_PER_S (default 50,000) events/s,
#   (d) state per series with 1,000,000 series of an absence rule, and RSS.
set -euo pipefail
cd "$(dirname "$0")/../.."
source deploy/local/lib.sh

N=${BENCH_MESSAGES:-1000000}
LOAD=${BENCH_LOAD_EVENTS_PER_S:-50000}
PROBES=${BENCH_PROBES:-200}
TOPICS=danang.citizen.reports,danang.dvc.dossiers,danang.transport.bus-gps,danang.health.beds
KAFKA_FEEDS=citizen_reports,public_service_dossiers,bus_gps,hospital_beds

source deploy/bench/lib.sh kafka_bench
cargo build --release --quiet -p cityops-alert --example alert_bench
ALERT_BENCH=target/release/examples/alert_bench
start_tansu

say "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(. /etc/os-release; echo "$PRETTY_NAME"); Tansu (memory), mosquitto, Alertmanager on this machine"
say "producing $N messages of the Kafka feeds with cityops sim ..."
"$BIN" sim --seed 1 --start 2026-11-26T00:00:00Z --duration 3650d --rate 1500000 --unpaced \
  --count "$N" --feeds "$KAFKA_FEEDS" --to-kafka "$bootstrap" 2>"$work/sim.log"

say "(a) bare consume-and-count loop:"
baseline=$("$BENCH" count "$bootstrap" "$TOPICS" "$N")
say "  $baseline"

# The example config with the Da Nang rules and a probe rule (no lateness, no `for`: the
# latency is the pipeline's own), its paths absolute so that the copy works from $work.
cat >"$work/probe.yaml" <<'YAML'
groups:
  - name: bench
    lateness: 0s
    rules:
      - alert: BenchProbe
        match: '{feed="water_level", metric="water_level", entity_id=~"probe-.*"}'
        threshold: {fire: "> 9"}
        severity: info
        annotations: {summary: "probe {{ labels.entity_id }}"}
YAML
rules=$(printf '"%s", ' "$PWD"/deploy/rules/*.yaml)
sed -e "s|^rule_files = .*|rule_files = [${rules}\"$work/probe.yaml\"]|" deploy/config/cityops.toml >"$work/bench.toml"
export CITYOPS_KAFKA_BOOTSTRAP=$bootstrap CITYOPS_LOG_LEVEL=warn CITYOPS_CLICKHOUSE_DATABASE=bench_alert
export CITYOPS_CLICKHOUSE_URL=http://127.0.0.1:$CH_HTTP_PORT CITYOPS_ALERTMANAGER_URL=http://127.0.0.1:$ALERTMANAGER_PORT
export CITYOPS_MQTT_PORT=$MQTT_PORT
# The history goes to a database of its own, as in production.
sql "DROP DATABASE IF EXISTS bench_alert" >/dev/null
"$BIN" migrate --config "$work/bench.toml" --quiet

say "(b) cityops alert reading the same messages with the Da Nang rules:"
aport=$(free_port)
CITYOPS_ALERT_PORT=$aport CITYOPS_ALERT_KAFKA_GROUP=bench-alert-$$ CITYOPS_ALERT_KAFKA_OFFSET_RESET=earliest \
  CITYOPS_ALERT_STATE_DIR=$work/state-b CITYOPS_ALERT_MQTT_CLIENT_ID=bench-b-$$ \
  "$BIN" alert --config "$work/bench.toml" 2>"$work/alert-b.log" &
alerter=$!
pids+=($alerter)
result=$(python3 - "$alerter" "http://127.0.0.1:$aport/metrics" "$N" <<'PY'
import sys, time, urllib.request
pid, url, n = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
tick = 100.0
def cpu():
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / tick
def rss():
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0
def sample():
    try:
        text = urllib.request.urlopen(url, timeout=5).read().decode()
    except Exception:
        return None, None
    def total(name, want=""):
        return sum(float(l.rsplit(" ", 1)[1]) for l in text.splitlines() if l.startswith(name) and want in l)
    return total("cityops_alert_source_messages_total", 'source="kafka"'), total("cityops_alert_events_evaluated_total")
start = first = None
deadline = time.time() + 900
peak = 0
while time.time() < deadline:
    got, evaluated = sample()
    peak = max(peak, rss())
    if got and first is None:
        first, cpu0, got0 = time.time(), cpu(), got
    if got is not None and got >= n:
        seconds = time.time() - first
        used = cpu() - cpu0
        read = got - got0
        print(f"alert messages={read:.0f} seconds={seconds:.3f} messages_per_s={read / seconds:.0f} "
              f"evaluated={evaluated:.0f} cpu_seconds={used:.2f} messages_per_cpu_s={read / max(used, 0.01):.0f} peak_rss_bytes={peak}")
        sys.exit(0)
    time.sleep(0.05)
sys.exit("the alerter did not read every message within 15 minutes")
PY
) || { cat "$work/alert-b.log"; exit 1; }
say "  $result"
kill -TERM "$alerter"; wait "$alerter" || true

say "(c) publish-to-Alertmanager latency, $PROBES flood probes over MQTT 100 ms apart, under $LOAD events/s of every feed:"
cport=$(free_port)
CITYOPS_ALERT_PORT=$cport CITYOPS_ALERT_KAFKA_GROUP=bench-latency-$$ CITYOPS_ALERT_STATE_DIR=$work/state-c \
  CITYOPS_ALERT_MQTT_CLIENT_ID=bench-c-$$ "$BIN" alert --config "$work/bench.toml" 2>"$work/alert-c.log" &
pids+=($!)
for _ in $(seq 600); do curl -sf "http://127.0.0.1:$cport/readyz" >/dev/null && break; sleep 0.1; done
"$BIN" sim --seed 3 --rate "$LOAD" --duration 120s --to-kafka "$bootstrap" --to-mqtt "127.0.0.1:$MQTT_PORT" 2>"$work/load.log" &
load=$!
pids+=($load)
sleep 5
latency=$("$ALERT_BENCH" latency "$MQTT_PORT" "http://127.0.0.1:$ALERTMANAGER_PORT" "$PROBES" 100)
say "  $latency"
read_load=$(curl -sf "http://127.0.0.1:$cport/metrics" | awk '/^cityops_alert_source_messages_total/ {s += $2} END {print s}')
say "  (the alerter read $read_load messages of the load meanwhile)"
kill "$load" 2>/dev/null || true

say "(d) state per series, an absence rule with 1,000,000 series:"
state=$("$ALERT_BENCH" state 1000000)
say "  $state"

python3 - "$baseline" "$result" "$latency" "$state" <<'PY'
import sys
def parse(line):
    return {k: float(v) for k, v in (f.split("=") for f in line.split()[1:])}
a, b, c, d = (parse(x) for x in sys.argv[1:5])
base = a["messages"] / a["seconds"]
print(f"summary: baseline {base:,.0f} messages/s; alerter {b['messages_per_s']:,.0f} messages/s "
      f"(alerter / baseline = {b['messages_per_s'] / base:.3f}), {b['messages_per_cpu_s']:,.0f} messages per CPU-second, "
      f"{b['evaluated']:,.0f} rule evaluations, peak RSS {b['peak_rss_bytes'] / 1048576:.0f} MiB")
print(f"summary: publish-to-Alertmanager p50 {c['p50_ms']:.1f} ms, p99 {c['p99_ms']:.1f} ms, max {c['max_ms']:.1f} ms ({c['seen']:.0f} of {c['probes']:.0f} probes)")
print(f"summary: {d['engine_bytes_per_series']:.0f} bytes per series by the engine's count, RSS growth {d['rss_growth_bytes_per_series']:.0f} bytes per series at {d['series']:,.0f} series; "
      f"state file {d['snapshot_json_bytes'] / 1048576:.0f} MiB of JSON in {d['snapshot_ms']:.0f} ms; a tick over them {d['tick_ms']:.0f} ms")
PY
