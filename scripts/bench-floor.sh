#!/usr/bin/env bash
# bench-floor.sh: what the cheapest possible heartbeat exchange costs on this machine, to read
# hbd's idle CPU against (docs/benchmarks.md, "The floor").
#
#   bash scripts/bench-floor.sh [--runs N]        (as root; default N = 3)
#
# Starts the lab (scripts/lab.sh), runs examples/heartbeat_floor.rs as the pace setter in
# hbdlab-dir1 and as the follower in hbdlab-dir2 (a datagram every 10 ms and its answer, as
# hbd at keepalive 10 ms), and prints each one's CPU over 10 s from /proc/PID/schedstat: first
# with the lab's default veths, then after `lab.sh napi` (needs ethtool). Every loop is
# bounded; the EXIT trap kills only the PIDs this script started and runs `lab.sh down`.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
RUNS=3
while [ $# -gt 0 ]; do
  case $1 in
  --runs) RUNS=${2:?--runs needs a number}; shift 2 ;;
  *) echo "usage: $0 [--runs N]" >&2; exit 2 ;;
  esac
done
[ "$(id -u)" = 0 ] || { echo "bench-floor.sh: must run as root" >&2; exit 1; }
case $RUNS in '' | *[!0-9]* | 0) echo "--runs: a positive number" >&2; exit 2 ;; esac

TARGET=${CARGO_TARGET_DIR:-$PWD/target}
cargo build --quiet --release --example heartbeat_floor --bin hbd-labweb
FLOOR=$TARGET/release/examples/heartbeat_floor
pids=()
cleanup() {
  set +e
  for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null; done
  bash scripts/lab.sh down >/dev/null 2>&1
}
trap cleanup EXIT
trap 'exit 130' INT TERM

cpu_ns() { awk '{print $1}' "/proc/$1/schedstat"; }
ctxsw() { awk '/ctxt_switches/ {s += $2} END {print s+0}' "/proc/$1/status"; }

measure() { # label
  local lead follow l0 f0 c0 d0 w0 w1
  ip netns exec hbdlab-dir1 "$FLOOR" lead 192.0.2.11:7694 192.0.2.12:7694 &
  lead=$!; pids+=("$lead")
  ip netns exec hbdlab-dir2 "$FLOOR" follow 192.0.2.12:7694 192.0.2.11:7694 &
  follow=$!; pids+=("$follow")
  sleep 2
  l0=$(cpu_ns "$lead"); f0=$(cpu_ns "$follow"); c0=$(ctxsw "$lead"); d0=$(ctxsw "$follow"); w0=$(date +%s%N)
  sleep 10
  w1=$(date +%s%N)
  awk -v l="$(($(cpu_ns "$lead") - l0))" -v f="$(($(cpu_ns "$follow") - f0))" -v w="$((w1 - w0))" \
    -v lc="$(($(ctxsw "$lead") - c0))" -v fc="$(($(ctxsw "$follow") - d0))" -v label="$1" \
    'BEGIN {printf "%s: pace setter %.3f %% of a core (%.0f wakeups/s), follower %.3f %% (%.0f wakeups/s)\n", label, l/w*100, lc/(w/1e9), f/w*100, fc/(w/1e9)}'
  kill -KILL "$lead" "$follow"; wait "$lead" "$follow" 2>/dev/null || true
}

echo "heartbeat floor: a datagram every 10 ms and its answer, $RUNS runs, $(date -u +%F), load average $(cut -d' ' -f1-3 /proc/loadavg)"
for mode in default napi; do
  bash scripts/lab.sh down >/dev/null 2>&1 || true
  HBD_LABWEB=$TARGET/release/hbd-labweb bash scripts/lab.sh up >/dev/null
  if [ "$mode" = napi ]; then
    command -v ethtool >/dev/null || { echo "(no ethtool: the threaded-NAPI runs are skipped)"; break; }
    bash scripts/lab.sh napi
  fi
  for r in $(seq 1 "$RUNS"); do measure "$mode veths, run $r"; done
done
