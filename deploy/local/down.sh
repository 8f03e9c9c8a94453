#!/usr/bin/env bash
# `make down`: stops every local service by its recorded pid (SIGTERM, then SIGKILL after 15 s)
# and leaves no process behind. Data stays in the state directory for the next `make up`.
# `down.sh NAME...` stops only those (the demo stops what it started).
set -euo pipefail
source "$(dirname "$0")/lib.sh"

names=("$@")
((${#names[@]})) || names=("${SERVICES[@]}")
for name in "${names[@]}"; do
  file=$(pid_file "$name")
  [ -f "$file" ] || continue
  pid=$(cat "$file")
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    # Each service runs in its own process group (setsid): signal the whole group.
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
      kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
    fi
    printf '%-13s stopped\n' "$name"
  fi
  rm -f "$file"
done
