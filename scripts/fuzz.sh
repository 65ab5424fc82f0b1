#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for a bounded time, starting from its seed corpus
# (fuzz/corpus/TARGET, kept in the repository). All targets together take at most
# HBD_FUZZ_SECONDS (default 160, so that with start-up the run stays within 3 minutes) of
# fuzzing, plus the build. A crash fails the script and
# leaves its input in fuzz/artifacts/TARGET/; reproduce it with
#   RUSTC_BOOTSTRAP=1 cargo fuzz run --dev -s none TARGET fuzz/artifacts/TARGET/crash-…
# New interesting inputs go to a scratch directory, so the repository's corpus only changes
# when someone copies an input in on purpose (a crash's regression, a new seed).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"

command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz
# cargo fuzz passes -Z flags to rustc (sanitizer coverage); CI has only the stable
# toolchain, which accepts them with RUSTC_BOOTSTRAP=1.
export RUSTC_BOOTSTRAP=1
# --dev: unoptimised, with debug assertions and overflow checks (a debug build would panic
# there too); it builds in minutes where an optimised build with coverage instrumentation
# took far longer on a busy 2-core machine, at the price of fewer runs per second.
# -s none: no sanitizer: the parsers are safe Rust, so a bug is a panic.
flags=(--dev -s none)

total=${HBD_FUZZ_SECONDS:-160}
cd fuzz
mapfile -t targets < <(cargo fuzz list)
per=$(( total / ${#targets[@]} ))
[ "$per" -ge 1 ] || per=1
cargo fuzz build "${flags[@]}"
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
for t in "${targets[@]}"; do
  echo "fuzz.sh: $t for ${per}s"
  mkdir -p "$scratch/$t"
  # -timeout: an input that takes 5 s is a hang; -max_len: frames and configs are small.
  rc=0
  cargo fuzz run "${flags[@]}" "$t" "$scratch/$t" "corpus/$t" -- \
    -max_total_time="$per" -timeout=5 -rss_limit_mb=2048 -max_len=65536 \
    -print_final_stats=1 >"$scratch/$t.log" 2>&1 || rc=$?
  grep -E '^(stat::number_of_executed_units|stat::new_units_added)' "$scratch/$t.log" || true
  if [ "$rc" != 0 ]; then
    tail -n 40 "$scratch/$t.log" >&2
    echo "fuzz.sh: $t failed (exit $rc); the input is in fuzz/artifacts/$t/" >&2
    exit 1
  fi
done
