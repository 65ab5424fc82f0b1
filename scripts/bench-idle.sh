#!/usr/bin/env bash
# bench-idle.sh: idle CPU of an hbd pair at keepalive 10 ms, for comparing builds and CPU
# placements against this machine's run-to-run noise (docs/benchmarks.md; the runs: docs/benchmarks-history.md).
#
#   bash scripts/bench-idle.sh [--runs N] [--pin free|same|split]... [BINDIR...]   (as root)
#
# Each run brings the lab up (scripts/lab.sh), starts hbd in hbdlab-dir1 and hbdlab-dir2 with
# the lab's ha.cf (ucast, keepalive 10ms, deadtime 30ms, one IPaddr group), lets them settle
# for 6 s and prints each node's CPU over 10 s (schedstat of all its threads, as
# bench-failover.sh measures: scripts/lab-lib.sh). Runs alternate between the BINDIRs (each
# holding an `hbd`; default $CARGO_TARGET_DIR/release or target/release, built when missing)
# and the placements, so slow drift of the machine falls on every variant alike:
#   free   the scheduler places both nodes (what bench-failover.sh measures);
#   same   both nodes' threads pinned to CPU 0: a wakeup of the peer stays on the CPU;
#   split  dir1 on CPU 0, dir2 on CPU 1: every wakeup of the peer crosses CPUs.
# Every loop is bounded; the EXIT trap kills only the PIDs this script started and runs
# `lab.sh down`.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
RUNS=3
PINS=()
BINS=()
while [ $# -gt 0 ]; do
  case $1 in
  --runs) RUNS=${2:?--runs needs a number}; shift 2 ;;
  --pin)
    case ${2:-} in free | same | split) PINS+=("$2") ;; *) echo "$0: --pin free|same|split" >&2; exit 2 ;; esac
    shift 2 ;;
  -*) echo "usage: $0 [--runs N] [--pin free|same|split]... [BINDIR...]" >&2; exit 2 ;;
  *) [ -x "$1/hbd" ] || { echo "$0: $1/hbd: not an executable" >&2; exit 2; }
     BINS+=("$(cd "$1" && pwd)"); shift ;;
  esac
done
source scripts/lab-lib.sh
lab_require_root bench-idle.sh
lab_positive --runs "$RUNS"
[ ${#PINS[@]} -gt 0 ] || PINS=(free)

TARGET=${CARGO_TARGET_DIR:-$PWD/target}
LABBIN=$TARGET/release
if [ ! -x "$LABBIN/hbd" ] || [ ! -x "$LABBIN/examples/labweb" ]; then
  CARGO_TARGET_DIR=$TARGET cargo build --quiet --release --bin hbd --example labweb
fi
[ ${#BINS[@]} -gt 0 ] || BINS=("$LABBIN")
WORK=$(mktemp -d /tmp/hbd-idle.XXXXXX)
remove_work() { rm -rf "$WORK"; }
lab_on_exit remove_work

measure() { # bindir placement
  local a b
  BIN=$LABBIN lab_up >/dev/null
  rm -rf "$WORK/ha.d" "$WORK/dir1" "$WORK/dir2"
  bash scripts/lab.sh ha-dir "$WORK/ha.d" "dir1 IPaddr::192.0.2.10/24/eth0" "sha1 bench-only-secret"
  BIN=$1 start_node dir1; lab_track "${HBD_PID[dir1]}"
  BIN=$1 start_node dir2; lab_track "${HBD_PID[dir2]}"
  a=${HBD_PID[dir1]}; b=${HBD_PID[dir2]}
  case $2 in
  same) taskset -a -p -c 0 "$a" >/dev/null; taskset -a -p -c 0 "$b" >/dev/null ;;
  split) taskset -a -p -c 0 "$a" >/dev/null; taskset -a -p -c 1 "$b" >/dev/null ;;
  esac
  sleep 6
  lab_window 10 "$a" "$b"
  printf '%s, %s: dir1 %s %% (%s wakeups/s), dir2 %s %% (%s wakeups/s)\n' "$1" "$2" \
    "${LAB_CPU[$a]}" "${LAB_WAKEUPS[$a]}" "${LAB_CPU[$b]}" "${LAB_WAKEUPS[$b]}"
  lab_stop "$a" "$b"
  unset 'HBD_PID[dir1]' 'HBD_PID[dir2]'
}

echo "hbd idle CPU at keepalive 10 ms, $RUNS runs, $(date -u +%F), load average $(cut -d' ' -f1-3 /proc/loadavg)"
for r in $(seq 1 "$RUNS"); do
  for bin in "${BINS[@]}"; do
    for pin in "${PINS[@]}"; do
      measure "$bin" "$pin"
    done
  done
done
