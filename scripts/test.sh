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
# `cargo test --all-targets` builds examples only as test harnesses (examples/NAME-HASH); the
# e2e tests run the lab helpers and gen-manpages as plain binaries, so build those first.
cargo build --locked --examples
cargo test --locked --all-targets 2>&1 | tee /tmp/hbd-test.log
# The IPVS tier (scripts/vm-ipvs.sh: Debian's kernel under qemu), alone after the tests above
# so the guest's CPU does not skew their timing: the rules and the packets scenario, one
# guest at a time.
cargo test --locked --test e2e vm:: -- --ignored --test-threads=1 2>&1 | tee -a /tmp/hbd-test.log
# Every fuzz target for a bounded time (≤ 3 minutes in all) from its seed corpus.
scripts/fuzz.sh
