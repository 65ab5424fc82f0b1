#!/usr/bin/env bash
# bench-floor.sh: what the cheapest possible heartbeat exchange costs on this machine, to read
# hbd's idle CPU against (docs/benchmarks-history.md, "The floor").
#
#   bash scripts/bench-floor.sh [--runs N]        (as root; default N = 3)
#
# Starts the lab (scripts/lab.sh), runs examples/heartbeat_floor.rs as the pace setter in
# hbdlab-dir1 and as the follower in hbdlab-dir2 (a datagram every 10 ms and its answer, as
# hbd at keepalive 10 ms), and prints each one's CPU over 10 s (schedstat of all its threads,
# as bench-failover.sh measures hbd: scripts/lab-lib.sh) and, once the NAPI threads exist, theirs:
# first with the lab's default veths, then after `lab.sh napi` (needs ethtool). Each run has
# three pairs: the blocking pace setter, the lazy one (which reads answers on its own tick, as
# hbd does), and the lazy one with both ends at SCHED_FIFO REALTIME_PRIORITY, as hbd runs by
# default (on this VM realtime wakeups cost more: docs/benchmarks-history.md run 12), so that pair is
# the floor hbd compares with. Binaries: $CARGO_TARGET_DIR/release or target/release (built
# when missing). Every loop is bounded; the EXIT trap kills only the PIDs this script started
# and runs `lab.sh down`.
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
source scripts/lab-lib.sh
lab_require_root bench-floor.sh
lab_positive --runs "$RUNS"

TARGET=${CARGO_TARGET_DIR:-$PWD/target}
BIN=$TARGET/release
FLOOR=$BIN/examples/heartbeat_floor
if [ ! -x "$FLOOR" ] || [ ! -x "$BIN/examples/labweb" ]; then
  CARGO_TARGET_DIR=$TARGET cargo build --quiet --release --example heartbeat_floor --example labweb
fi
lab_on_exit
# hbd's REALTIME_PRIORITY (src/daemon/realtime.rs), for the runs scheduled as hbd is by default.
HBD_RT_PRIORITY=$(sed -n 's/^pub const REALTIME_PRIORITY: i32 = \([0-9]*\);/\1/p' src/daemon/realtime.rs)
[ -n "$HBD_RT_PRIORITY" ] || { echo "bench-floor.sh: REALTIME_PRIORITY not found in src/daemon/realtime.rs" >&2; exit 1; }

measure() { # label [lead role [realtime]]: "realtime" runs both ends as hbd's default does
  local lead follow sched=()
  [ "${3:-}" = realtime ] && sched=(chrt -f "$HBD_RT_PRIORITY")
  # `ip netns exec` and chrt exec, so $! is the floor program's own PID.
  ip netns exec hbdlab-dir1 "${sched[@]}" "$FLOOR" "${2:-lead}" 192.0.2.11:7694 192.0.2.12:7694 &
  lead=$!; lab_track "$lead"
  ip netns exec hbdlab-dir2 "${sched[@]}" "$FLOOR" follow 192.0.2.12:7694 192.0.2.11:7694 &
  follow=$!; lab_track "$follow"
  sleep 2
  lab_window 10 "$lead" "$follow"
  # hbd's pair takes turns at setting the pace, so one hbd node pays about the mean of the two.
  printf '%s: pace setter %s %% of a core (%s wakeups/s), follower %s %% (%s wakeups/s), mean %s %%\n' "$1" \
    "${LAB_CPU[$lead]}" "${LAB_WAKEUPS[$lead]}" "${LAB_CPU[$follow]}" "${LAB_WAKEUPS[$follow]}" \
    "$(awk -v a="${LAB_CPU[$lead]}" -v b="${LAB_CPU[$follow]}" 'BEGIN {printf "%.3f", (a + b) / 2}')"
  [ -z "$LAB_NAPI" ] || echo "  $LAB_NAPI"
  lab_stop "$lead" "$follow"
}

echo "heartbeat floor: a datagram every 10 ms and its answer, $RUNS runs, $(date -u +%F), load average $(cut -d' ' -f1-3 /proc/loadavg)"
for mode in default napi; do
  lab_up >/dev/null
  if [ "$mode" = napi ]; then
    command -v ethtool >/dev/null || { echo "(no ethtool: the threaded-NAPI runs are skipped)"; break; }
    bash scripts/lab.sh napi
  fi
  for r in $(seq 1 "$RUNS"); do
    measure "$mode veths, run $r"
    measure "$mode veths, lazy pace setter, run $r" lazy
    measure "$mode veths, lazy pace setter, SCHED_FIFO $HBD_RT_PRIORITY (hbd's realtime), run $r" lazy realtime
  done
done
