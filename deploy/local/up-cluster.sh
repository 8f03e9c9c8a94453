#!/usr/bin/env bash
# `make up-cluster`: a ClickHouse cluster on this machine, as the test kit starts one: Debian's
# ZooKeeper and SHARDS x REPLICAS ClickHouse servers (2 x 2 by default) as plain background
# processes on 127.0.0.1, each a node of the cluster `cityops` and of its twin
# `cityops_all_replicas` (deploy/local/clickhouse/cluster.xml), then the cluster schema applied
# with `cityops migrate` (`[clickhouse] cluster = "cityops"`). Safe to re-run; `make down-cluster`
# stops it. Ports: ZooKeeper CITYOPS_ZOOKEEPER_PORT (12181); node N (1..) answers HTTP on
# CITYOPS_CLUSTER_HTTP_BASE+N (18200+N), native on 19200+N, interserver on 19300+N.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

SHARDS=${SHARDS:-2}
REPLICAS=${REPLICAS:-2}
ZK_PORT=${CITYOPS_ZOOKEEPER_PORT:-12181}
HTTP_BASE=${CITYOPS_CLUSTER_HTTP_BASE:-18200}
TCP_BASE=${CITYOPS_CLUSTER_TCP_BASE:-19200}
INTERSERVER_BASE=${CITYOPS_CLUSTER_INTERSERVER_BASE:-19300}
CITYOPS_BIN=${CITYOPS_BIN:-$REPO_DIR/target/release/cityops}

[ -f /usr/share/java/zookeeper.jar ] && command -v java >/dev/null || fail "zookeeper is not installed: run 'make deps'"
command -v clickhouse-server >/dev/null || fail "clickhouse-server is not installed: run 'make deps'"

# ZooKeeper answers `srvr` with its mode only once it serves sessions (ClickHouse 18.16
# connecting before that fails its handshake).
zookeeper_serving() {
  local answer
  answer=$( (exec 3<>"/dev/tcp/127.0.0.1/$ZK_PORT" && printf srvr >&3 && timeout 2 cat <&3) 2>/dev/null || true)
  [[ $answer == *"Mode: "* ]]
}

mkdir -p "$STATE_DIR/zookeeper"/{conf,data,log,run}
sed -e "s|@ZK_PORT@|$ZK_PORT|g" -e "s|@DATA_DIR@|$STATE_DIR/zookeeper/data|g" \
  "$LOCAL_DIR/zookeeper/zoo.cfg" >"$STATE_DIR/zookeeper/conf/zoo.cfg"
launch zookeeper "$ZK_PORT" java -Xmx256m -XX:+UseSerialGC -cp /usr/share/java/zookeeper.jar \
  org.apache.zookeeper.server.quorum.QuorumPeerMain "$STATE_DIR/zookeeper/conf/zoo.cfg"
wait_for zookeeper 60 zookeeper_serving

# The clusters every node knows: shards of replicas, and every replica as a shard of its own.
replica_xml() { printf '<replica><host>127.0.0.1</host><port>%s</port></replica>' "$1"; }
servers="        <cityops>"$'\n'
all="        <cityops_all_replicas>"$'\n'
node=0
for ((s = 1; s <= SHARDS; s++)); do
  servers+="            <shard><internal_replication>true</internal_replication>"$'\n'
  for ((r = 1; r <= REPLICAS; r++)); do
    node=$((node + 1))
    servers+="                $(replica_xml $((TCP_BASE + node)))"$'\n'
    all+="            <shard>$(replica_xml $((TCP_BASE + node)))</shard>"$'\n'
  done
  servers+="            </shard>"$'\n'
done
servers+="        </cityops>"$'\n'"$all        </cityops_all_replicas>"
printf '%s\n' "$servers" >"$STATE_DIR/remote_servers.xml.part"

node=0
nodes=()
for ((s = 1; s <= SHARDS; s++)); do
  for ((r = 1; r <= REPLICAS; r++)); do
    node=$((node + 1))
    name=ch-s${s}r${r}
    nodes+=("$name")
    dir=$STATE_DIR/$name
    mkdir -p "$dir"/{conf/config.d,data/tmp,data/user_files,data/format_schemas,log,run}
    CH_HTTP_PORT=$((HTTP_BASE + node)) CH_TCP_PORT=$((TCP_BASE + node)) \
      render "$LOCAL_DIR/clickhouse/config.xml" "$dir/conf/config.xml" "$dir"
    render "$LOCAL_DIR/clickhouse/users.xml" "$dir/conf/users.xml" "$dir"
    sed -e "s|@ZK_PORT@|$ZK_PORT|g" -e "s|@INTERSERVER_PORT@|$((INTERSERVER_BASE + node))|g" \
      -e "s|@SHARD@|$(printf %02d "$s")|g" -e "s|@REPLICA@|s${s}r${r}|g" -e "s|@CLUSTER@|cityops|g" \
      -e "/@REMOTE_SERVERS@/{r $STATE_DIR/remote_servers.xml.part" -e "d}" \
      "$LOCAL_DIR/clickhouse/cluster.xml" >"$dir/conf/config.d/cluster.xml"
    launch "$name" $((HTTP_BASE + node)) clickhouse-server --config-file="$dir/conf/config.xml"
  done
done
node=0
for name in "${nodes[@]}"; do
  node=$((node + 1))
  port=$((HTTP_BASE + node))
  wait_for "$name" 60 bash -c "[ \"\$(curl -fsS --max-time 2 http://127.0.0.1:$port/ping 2>/dev/null)\" = Ok. ]"
done

config=$STATE_DIR/cluster.toml
cat >"$config" <<TOML
# Written by make up-cluster: the cluster schema through node 1.
[clickhouse]
url = "http://127.0.0.1:$((HTTP_BASE + 1))"
database = "cityops"
cluster = "cityops"
TOML
if [ -x "$CITYOPS_BIN" ]; then
  "$CITYOPS_BIN" migrate --config "$config" --quiet
else
  say "($CITYOPS_BIN is not built: run 'make release', then $CITYOPS_BIN migrate --config $config)"
fi
printf '%-13s %s\n' zookeeper "127.0.0.1:$ZK_PORT"
node=0
for name in "${nodes[@]}"; do
  node=$((node + 1))
  printf '%-13s http://127.0.0.1:%s (native %s)\n' "$name" $((HTTP_BASE + node)) $((TCP_BASE + node))
done
say "cluster cityops: $SHARDS shards x $REPLICAS replicas; config for cityops: $config"
