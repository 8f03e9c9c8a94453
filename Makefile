# cityops: the two commands of the quick start are `make demo` and `make test`.
# Both install what they need (Debian packages via apt, crates via cargo) and are idempotent.

CARGO ?= cargo
# Two cores: one build at a time, each using both.
export CARGO_BUILD_JOBS ?= 2

.PHONY: help deps deps-durable up down up-cluster down-cluster status build release demo verify-dashboards test test-stress fmt fmt-check clippy unit bench bench-kafka bench-mqtt bench-alert check-config fuzz clean

help:
	@echo "make demo   - the city live: stack, a day of history, sim -> ingest + alert, a scenario (SCENARIO=flood), Ctrl-C stops all"
	@echo "make test   - format check, clippy -D warnings, and every test"
	@echo "make verify-dashboards - the demo on 7 days of history; every panel verified while its alert fires, slowest query reported"
	@echo "make test-stress - the Kafka and MQTT ingest tests with every core busy (STRESS_RUNS=5 repeats)"
	@echo "make deps   - install build and test dependencies (apt, rustup components)"
	@echo "make up     - start mosquitto, ClickHouse, Tansu, Prometheus, Alertmanager on 127.0.0.1"
	@echo "make up-cluster - a ClickHouse cluster on 127.0.0.1: ZooKeeper, 2 shards x 2 replicas (SHARDS, REPLICAS), the cluster schema"
	@echo "make down-cluster - stop it"
	@echo "make status - show which local services run"
	@echo "make down   - stop them"
	@echo "make bench  - decoder throughput against a parse-only baseline"
	@echo "make bench-kafka - Kafka -> ClickHouse ingest against a bare consumer (BENCH_MESSAGES=2000000)"
	@echo "make bench-mqtt - MQTT -> ClickHouse ingest against a bare subscriber (BENCH_MESSAGES=500000)"
	@echo "make bench-alert - the alerter: its read rate against a bare consumer, publish-to-Alertmanager latency under load, state per series"
	@echo "make soak   - an hour of the live city at 10x its natural rate: RSS growth, error logs, every message stored (SOAK_SECONDS)"
	@echo "make fuzz   - every fuzz target (decoders, config, rules, RowBinary, spool) for FUZZ_RUNS executions (10 million; FUZZ_SECONDS=N for a time limit)"

deps:
	@deploy/local/deps.sh

# The durable Kafka-protocol broker for broker-restart tests (about 12 minutes the first time).
deps-durable: deps
	@deploy/local/deps-durable.sh

up: deps release
	@CITYOPS_BIN=target/release/cityops deploy/local/up.sh

down:
	@deploy/local/down.sh

up-cluster: deps release
	@CITYOPS_BIN=target/release/cityops deploy/local/up-cluster.sh

# ClickHouse first, then the ZooKeeper it leans on.
down-cluster:
	@deploy/local/down.sh $$(cd $${CITYOPS_STATE_DIR:-.cityops} 2>/dev/null && ls -d ch-s*r* 2>/dev/null) zookeeper

status:
	@deploy/local/status.sh

build: deps
	$(CARGO) build --workspace --all-targets

release: deps
	$(CARGO) build --release -p cityops

# SCENARIO (flood, pollution, outage, complaint-spike, overdue, pipeline-stall, none);
# DEMO_SECONDS=N runs non-interactively and ends with a summary (deploy/demo.py lists the rest).
demo: deps release
	@CITYOPS_BIN=target/release/cityops python3 deploy/demo.py

# Every dashboard panel verified against the live demo on a week of history (about 10 minutes);
# `make test` does the same on six hours. The summary gives the slowest panel query.
verify-dashboards: deps release
	@CITYOPS_BIN=target/release/cityops DEMO_SECONDS=420 DEMO_BACKFILL=7d SCENARIO=flood \
	  SCENARIO_DURATION=120s DEMO_VERIFY=1 python3 deploy/demo.py

fmt:
	$(CARGO) fmt --all

fmt-check: deps
	$(CARGO) fmt --all -- --check

clippy: deps
	$(CARGO) clippy --workspace --all-targets -- -D warnings

unit: deps deps-durable
	@deploy/local/run-tests.sh

test: fmt-check clippy unit

# The ingest integration tests while stress-ng keeps every core busy (STRESS_RUNS=N repeats).
test-stress: deps deps-durable
	@deploy/local/test-stress.sh

# Benchmarks report ratios against a baseline run in the same process (these machines are noisy).
bench: deps
	$(CARGO) bench -p cityops-feeds --bench decode

bench-kafka: deps
	@deploy/bench/kafka.sh

bench-mqtt: deps
	@deploy/bench/mqtt.sh

bench-alert: deps
	@deploy/bench/alert.sh

# An hour of the live city at ten times its natural rate through ingest and alerter, RSS
# sampled, every message counted (deploy/soak.py; SOAK_SECONDS, SOAK_SPEED). Figures: BENCHMARKS.md.
soak: deps release
	@CITYOPS_BIN=target/release/cityops python3 deploy/soak.py

check-config: release
	target/release/cityops check --config deploy/config/cityops.toml

# Coverage-guided fuzzing with libFuzzer (deploy/local/fuzz.sh). cargo-fuzz needs nightly
# features; RUSTC_BOOTSTRAP lets the stable toolchain provide them.
fuzz: deps
	deploy/local/fuzz.sh

clean:
	$(CARGO) clean
