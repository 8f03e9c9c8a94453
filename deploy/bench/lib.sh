# What the ingest benchmarks share (sourced by kafka.sh and mqtt.sh after deploy/local/lib.sh):
# the release binary and the bench example `$1` built, the local stack up, a work folder and
# the processes in `pids` cleaned up on exit, and small helpers.
cargo build --release --quiet -p cityops --bin cityops
cargo build --release --quiet -p cityops-ingest --example "$1"
CITYOPS_BIN=target/release/cityops deploy/local/up.sh >/dev/null
BIN=target/release/cityops
BENCH=target/release/examples/$1

work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

sql() { curl -sf "http://127.0.0.1:$CH_HTTP_PORT/" --data-binary "$1"; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# A Kafka-protocol broker of its own (Tansu, in memory) with the topics of `make up`: empty,
# nothing else producing. Sets `bootstrap`.
start_tansu() {
  local port
  port=$(free_port)
  (cd "$work" && exec "$TANSU_BIN" broker --listener-url "tcp://127.0.0.1:$port" \
    --advertised-listener-url "tcp://127.0.0.1:$port" --storage-engine memory://tansu/ \
    >"$work/tansu.log" 2>&1) &
  pids+=($!)
  for _ in $(seq 100); do (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
  grep -v '^#' deploy/local/kafka-topics.txt | while read -r topic partitions; do
    [ -n "$topic" ] && "$TANSU_BIN" topic create "$topic" --partitions "$partitions" \
      --broker "tcp://127.0.0.1:$port" >/dev/null
  done
  bootstrap=127.0.0.1:$port
}
