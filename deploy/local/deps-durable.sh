#!/usr/bin/env bash
# `make deps-durable`: builds the durable Kafka-protocol broker (nisshi, Tansu's successor, with
# SQLite storage) from crates.io for tests that restart the broker. About 12 minutes on two cores
# the first time; cached per user and version afterwards.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

if [ -x "$NISSHI_BIN" ]; then exit 0; fi
say "deps-durable: building nisshi $NISSHI_VERSION (about 12 minutes the first time)"
root=$CACHE_DIR/nisshi-$NISSHI_VERSION
cargo install "nisshi@$NISSHI_VERSION" --locked --no-default-features --features libsql \
  --root "$root.tmp" --quiet
rm -rf "$root"
mv "$root.tmp" "$root"
