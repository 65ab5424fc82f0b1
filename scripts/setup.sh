#!/usr/bin/env bash
# Installs what hbd needs to build, test and run its demo on a fresh Debian 12 machine (as root).
# Idempotent: only missing pieces are installed.
set -euo pipefail

need_pkgs=()
for pair in ip:iproute2 nft:nftables socat:socat; do
  cmd=${pair%%:*}; pkg=${pair#*:}
  command -v "$cmd" >/dev/null 2>&1 || need_pkgs+=("$pkg")
done
command -v cc >/dev/null 2>&1 || need_pkgs+=(gcc libc6-dev)
command -v curl >/dev/null 2>&1 || need_pkgs+=(curl ca-certificates)
if [ ${#need_pkgs[@]} -gt 0 ]; then
  echo "setup: installing ${need_pkgs[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
  if [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
  else
    echo "setup: installing the Rust toolchain with rustup"
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal -c rustfmt,clippy
    export PATH="$HOME/.cargo/bin:$PATH"
  fi
fi
