#!/usr/bin/env bash
# Installs what building and testing cityops needs on Debian/Ubuntu, idempotently: packages that
# are already there are not touched, and nothing is printed when nothing changes.
set -euo pipefail

# Debian package -> a command it provides, to tell whether it is installed.
declare -A PACKAGES=(
  [prometheus]=promtool  # promtool lints our /metrics output in tests
  [make]=make
  [gcc]=cc
)

missing=()
for package in "${!PACKAGES[@]}"; do
  command -v "${PACKAGES[$package]}" >/dev/null 2>&1 || missing+=("$package")
done

if ((${#missing[@]})); then
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  echo "deps: installing ${missing[*]} (apt)"
  $sudo apt-get update -qq
  # Debian's prometheus package starts a service only under systemd; tests never use it.
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "deps: cargo not found; install Rust with rustup (https://rustup.rs) and run again" >&2
  exit 1
fi
for component in rustfmt clippy; do
  if ! cargo "${component/rustfmt/fmt}" --version >/dev/null 2>&1; then
    echo "deps: adding the $component component"
    rustup component add "$component"
  fi
done
