#!/usr/bin/env bash
# Runs every check CI runs: formatting, clippy, unit tests, simulation tests and the root
# end-to-end tests in network namespaces. Must run as root on Linux.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
[ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"

if [ "$(id -u)" != 0 ]; then
  echo "test.sh: the end-to-end tests need root (network namespaces)" >&2
  exit 1
fi

cargo fmt --all -- --check
cargo clippy --locked --all-targets -- -D warnings
cargo test --locked --all-targets 2>&1 | tee /tmp/hbd-test.log
