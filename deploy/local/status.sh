#!/usr/bin/env bash
# `make status`: one line per local service: running and answering, running but not answering,
# or stopped.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

for name in "${SERVICES[@]}"; do
  if running "$name"; then
    if ready "$name"; then state="up"; else state="starting"; fi
    printf '%-13s %-8s pid %-7s %s\n' "$name" "$state" "$(cat "$(pid_file "$name")")" "$(address_of "$name")"
  else
    printf '%-13s stopped\n' "$name"
  fi
done
