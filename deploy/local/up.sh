#!/usr/bin/env bash
# `make up`: starts mosquitto, ClickHouse, Tansu (Kafka protocol), Prometheus and Alertmanager as
# plain background processes bound to 127.0.0.1, waits until each answers, creates the Kafka
# topics, applies the ClickHouse schema, and prints one line per service. Safe to re-run: a
# service that already runs is left alone.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

check_binaries() {
  local missing=()
  for bin in mosquitto clickhouse-server prometheus prometheus-alertmanager curl; do
    command -v "$bin" >/dev/null 2>&1 || missing+=("$bin")
  done
  [ -x "$TANSU_BIN" ] || missing+=("tansu ($TANSU_BIN)")
  ((${#missing[@]} == 0)) || fail "missing ${missing[*]}: run 'make deps' first"
}

# start NAME COMMAND...: starts the service on its port (lib.sh's launch).
start() {
  local name=$1
  shift
  launch "$name" "$(port_of "$name")" "$@"
}

# wait_ready NAME SECONDS: waits for the service's readiness check.
wait_ready() { wait_for "$1" "$2" ready "$1"; }

prepare() {
  local name=$1
  mkdir -p "$STATE_DIR/$name"/{conf,data,log,run}
}

check_binaries
for name in "${SERVICES[@]}"; do prepare "$name"; done

render "$LOCAL_DIR/mosquitto.conf" "$STATE_DIR/mosquitto/conf/mosquitto.conf" "$STATE_DIR/mosquitto"
start mosquitto mosquitto -c "$STATE_DIR/mosquitto/conf/mosquitto.conf"

render "$LOCAL_DIR/clickhouse/config.xml" "$STATE_DIR/clickhouse/conf/config.xml" "$STATE_DIR/clickhouse"
render "$LOCAL_DIR/clickhouse/users.xml" "$STATE_DIR/clickhouse/conf/users.xml" "$STATE_DIR/clickhouse"
mkdir -p "$STATE_DIR/clickhouse/data"/{tmp,user_files,format_schemas}
start clickhouse clickhouse-server --config-file="$STATE_DIR/clickhouse/conf/config.xml"

start tansu "$TANSU_BIN" broker \
  --listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
  --advertised-listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
  --storage-engine memory://tansu/

render "$LOCAL_DIR/alertmanager.yml" "$STATE_DIR/alertmanager/conf/alertmanager.yml" "$STATE_DIR/alertmanager"
start alertmanager prometheus-alertmanager \
  --config.file="$STATE_DIR/alertmanager/conf/alertmanager.yml" \
  --storage.path="$STATE_DIR/alertmanager/data" \
  --web.listen-address="127.0.0.1:$ALERTMANAGER_PORT" \
  --cluster.listen-address=

render "$LOCAL_DIR/prometheus.yml" "$STATE_DIR/prometheus/conf/prometheus.yml" "$STATE_DIR/prometheus"
mkdir -p "$STATE_DIR/prometheus/conf/targets"
start prometheus prometheus \
  --config.file="$STATE_DIR/prometheus/conf/prometheus.yml" \
  --storage.tsdb.path="$STATE_DIR/prometheus/data" \
  --web.listen-address="127.0.0.1:$PROMETHEUS_PORT" \
  --web.enable-lifecycle

for name in "${SERVICES[@]}"; do wait_ready "$name" 60; done

# Kafka topics (Tansu keeps them in memory: they are created again after every start).
existing=$("$TANSU_BIN" topic list --broker "tcp://127.0.0.1:$KAFKA_PORT" 2>/dev/null) ||
  fail "cannot list Kafka topics on 127.0.0.1:$KAFKA_PORT"
while read -r topic partitions; do
  case $topic in '' | '#'*) continue ;; esac
  if ! grep -q "\"name\":\"$topic\"" <<<"$existing"; then
    "$TANSU_BIN" topic create "$topic" --partitions "$partitions" --broker "tcp://127.0.0.1:$KAFKA_PORT" >/dev/null ||
      fail "cannot create Kafka topic $topic"
  fi
done <"$LOCAL_DIR/kafka-topics.txt"

# The ClickHouse schema.
CITYOPS_CLICKHOUSE_URL="http://127.0.0.1:$CH_HTTP_PORT" \
  "${CITYOPS_BIN:-$REPO_DIR/target/release/cityops}" migrate --config "$REPO_DIR/deploy/config/cityops.toml" --quiet

for name in "${SERVICES[@]}"; do
  printf '%-13s up    %s\n' "$name" "$(address_of "$name")"
done
