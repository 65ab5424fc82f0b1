#!/usr/bin/env bash
# bench-vrrp.sh: VRRP failover outages of hbd and keepalived pairs, and one instance's idle
# footprint, in the namespace lab (scripts/lab.sh). A few minutes; run it niced:
#
#   nice -n 10 bash scripts/bench-vrrp.sh [--runs N] [--no-idle] [--keep]
#                                             (as root; needs keepalived and jq)
#
# Failover: dir1 (priority 200) and dir2 (priority 100) run one VRRPv3 instance, vrid 70,
# advert_int 0.05, VIP 192.0.2.10/24 on eth0, each side either `hbd --keepalived-conf` or
# keepalived 2.2.7 (`--vrrp`) reading the same file. The client runs examples/labprobe through
# the VIP (a new connection every 2 ms, 50 ms timeout) while dir1's link goes down; the
# figure is its max_gap_ms. The pairs (master/backup) hbd/hbd, hbd/keepalived,
# keepalived/hbd and keepalived/keepalived run N times each (default 7), interleaved (round
# 1 of every pair, then round 2, ...), with the same probe, so a busy moment of the shared
# machine lands on every pair alike; the summary is min / median / max per pair. The bound is
# Master_Down_Interval of the backup: 3 × 50 ms + (256 − 100) × 50 ms / 256 = 180.5 ms,
# counted from the master's last advert (up to 50 ms before the link went down).
#
# Idle: one instance alone on dir1 at advert_int 0.01 (100 adverts/s), hbd and then keepalived
# (both of its processes), CPU over 10 s (% of a core, from schedstat) and VmRSS.
#
# Binaries: $CARGO_TARGET_DIR/release or target/release (built when missing). Every loop is
# bounded; the EXIT trap kills only the PIDs this script started and runs `lab.sh down`.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"

KEEP= RUNS=7 IDLE_TOO=1
source scripts/lab-lib.sh
while [ $# -gt 0 ]; do
  case $1 in
  --keep) KEEP=1; shift ;;
  --runs) lab_positive --runs "${2:-}"; RUNS=$2; shift 2 ;;
  --no-idle) IDLE_TOO=; shift ;;
  *) echo "usage: $0 [--runs N] [--no-idle] [--keep]" >&2; exit 2 ;;
  esac
done
lab_require_root bench-vrrp.sh
command -v keepalived >/dev/null || { echo "bench-vrrp.sh: needs keepalived (apt-get install keepalived)" >&2; exit 1; }

TARGET=${CARGO_TARGET_DIR:-$PWD/target}
BIN=${HBD_BIN:-$TARGET/release} # HBD_BIN: another build (e.g. target/debug)
if [ ! -x "$BIN/hbd" ] || [ ! -x "$BIN/hactl" ] || [ ! -x "$BIN/examples/labprobe" ] || [ ! -x "$BIN/examples/labweb" ]; then
  echo "== building release binaries into $TARGET" >&2
  CARGO_TARGET_DIR=$TARGET cargo build --quiet --release --bins --examples
fi

VIP=192.0.2.10
WORK=$(mktemp -d /tmp/hbd-bench-vrrp.XXXXXX)
remove_work() { if [ -n "$KEEP" ]; then echo "logs kept in $WORK" >&2; else rm -rf "$WORK"; fi; }
lab_on_exit remove_work
log() { echo "$*" >&2; }
now_ms() { echo $(($(date +%s%N) / 1000000)); }
vip_on() { ip -n "hbdlab-$1" -o -4 addr show dev eth0 2>/dev/null | grep -q " $VIP/"; }
field() { sed -n "s/.*\b$1=\([^ ]*\).*/\1/p" "$2"; }

lab_up >&2

conf() { # node priority advert_int -> the node's keepalived.conf
  mkdir -p "$WORK/$1"
  cat >"$WORK/$1/keepalived.conf" <<EOF
global_defs {
  router_id $1
  enable_script_security
}
vrrp_instance V {
  state BACKUP
  interface eth0
  virtual_router_id 70
  priority $2
  advert_int $3
  version 3
  virtual_ipaddress {
    $VIP/24
  }
}
EOF
}

declare -A SIDE_PID=()
start_side() { # node kind(hbd|keepalived)
  if [ "$2" = hbd ]; then
    ip netns exec "hbdlab-$1" "$BIN/hbd" --keepalived-conf "$WORK/$1/keepalived.conf" \
      --node-name "$1" --state-dir "$WORK/$1/state" --socket "$WORK/$1/hbd.sock" \
      2>>"$WORK/$1/log" &
    SIDE_PID[$1]=$!
    lab_track "${SIDE_PID[$1]}"
  else
    ip netns exec "hbdlab-$1" keepalived -n -l -D --vrrp -f "$WORK/$1/keepalived.conf" \
      -p "$WORK/$1/ka.pid" -r "$WORK/$1/vrrp.pid" >>"$WORK/$1/log" 2>&1 &
    SIDE_PID[$1]=$!
    lab_track "${SIDE_PID[$1]}"
    local limit=$(($(now_ms) + 5000)) child=
    while [ "$(now_ms)" -lt "$limit" ]; do
      child=$(cat "$WORK/$1/vrrp.pid" 2>/dev/null || true)
      [ -n "$child" ] && break
      sleep 0.05
    done
    [ -n "$child" ] && lab_track "$child"
    KA_CHILD[$1]=$child
  fi
}
declare -A KA_CHILD=()
stop_side() { # node: SIGTERM, wait (bounded), then SIGKILL
  local pid=${SIDE_PID[$1]:-} limit
  [ -n "$pid" ] || return 0
  kill -TERM "$pid" 2>/dev/null || true
  limit=$(($(now_ms) + 5000))
  while kill -0 "$pid" 2>/dev/null && [ "$(now_ms)" -lt "$limit" ]; do sleep 0.05; done
  lab_stop "$pid"
  [ -z "${KA_CHILD[$1]:-}" ] || lab_stop "${KA_CHILD[$1]}"
  unset "SIDE_PID[$1]" "KA_CHILD[$1]"
  rm -f "$WORK/$1/vrrp.pid" "$WORK/$1/ka.pid"
  ip -n "hbdlab-$1" addr del "$VIP/24" dev eth0 2>/dev/null || true
}
wait_until() { # seconds command...
  local limit=$(($(now_ms) + $1 * 1000))
  shift
  while [ "$(now_ms)" -lt "$limit" ]; do "$@" && return 0; sleep 0.05; done
  return 1
}
answers() { [ "$(ip netns exec hbdlab-client curl -s -m 0.3 "http://$VIP/" 2>/dev/null)" = "$1" ]; }

# ---------------------------------------------------------------- failover, N interleaved runs
conf dir1 200 0.05
conf dir2 100 0.05
PAIRS=("hbd hbd" "hbd keepalived" "keepalived hbd" "keepalived keepalived")
declare -A GAPS=() # "master backup" -> the max_gap_ms of each run, space-separated
one_run() { # master backup -> GAP: max_gap_ms, or empty when no steady state
  local master=$1 backup=$2 probe
  GAP=
  ip -n hbdlab-dir1 link set eth0 up
  start_side dir2 "$backup"
  start_side dir1 "$master"
  if ! wait_until 10 answers dir1 || ! wait_until 5 bash -c "! ip -n hbdlab-dir2 -o -4 addr show dev eth0 | grep -q ' $VIP/'"; then
    log "   dir1 never held the VIP alone; run skipped"
  else
    sleep 1
    ip netns exec hbdlab-client "$BIN/examples/labprobe" --target "$VIP:80" --interval-ms 2 \
      --timeout-ms 50 --duration-ms 1500 >"$WORK/probe" 2>&1 &
    probe=$!
    lab_track "$probe"
    sleep 0.3
    ip -n hbdlab-dir1 link set eth0 down
    wait "$probe" || true
    lab_forget "$probe"
    GAP=$(field max_gap_ms "$WORK/probe")
    log "   $(cat "$WORK/probe")"
  fi
  stop_side dir1
  stop_side dir2
  ip -n hbdlab-dir1 link set eth0 up
}
for round in $(seq 1 "$RUNS"); do
  for pair in "${PAIRS[@]}"; do
    log "== round $round/$RUNS: ${pair% *} (dir1, master) / ${pair#* } (dir2, backup)"
    # shellcheck disable=SC2086 # two words
    one_run $pair
    [ -z "$GAP" ] || GAPS[$pair]="${GAPS[$pair]:-} $GAP"
  done
done
declare -a LINES=()
for pair in "${PAIRS[@]}"; do
  # shellcheck disable=SC2086 # a list of numbers
  stats=$(printf '%s\n' ${GAPS[$pair]:-} | sort -g | awk '
    NF { v[++n] = $1 }
    END {
      if (n == 0) { print "| (no run) | | | 0 |"; exit }
      m = (n % 2) ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
      printf "| %.1f | %.1f | %.1f | %d |", v[1], m, v[n], n
    }')
  LINES+=("| ${pair% *} | ${pair#* } $stats${GAPS[$pair]:-} |")
done

# ---------------------------------------------------------------- idle, one instance
conf dir1 200 0.01
declare -a IDLE=()
IDLE_KINDS=()
[ -z "$IDLE_TOO" ] || IDLE_KINDS=(hbd keepalived)
for kind in "${IDLE_KINDS[@]}"; do
  ip -n hbdlab-dir2 link set eth0 down # alone on the LAN: no peer to answer
  start_side dir1 "$kind"
  wait_until 10 vip_on dir1 || log "   $kind never became master"
  sleep 2
  pids=${SIDE_PID[dir1]}
  [ -z "${KA_CHILD[dir1]:-}" ] || pids="$pids ${KA_CHILD[dir1]}"
  # shellcheck disable=SC2086 # a list of PIDs
  lab_window 10 $pids
  cpu=0 rss=0
  for p in $pids; do
    cpu=$(awk -v a="$cpu" -v b="${LAB_CPU[$p]}" 'BEGIN {printf "%.3f", a+b}')
    rss=$((rss + $(awk '/VmRSS/ {print $2}' "/proc/$p/status")))
  done
  log "   $kind idle at advert_int 0.01: CPU $cpu % of a core, RSS $rss KiB (PIDs $pids)"
  IDLE+=("| $kind | $cpu | $((rss / 1024)).$(((rss % 1024) * 10 / 1024)) |")
  stop_side dir1
  ip -n hbdlab-dir2 link set eth0 up
done

echo
echo "Failover outage (advert_int 0.05, VRRPv3, dir1's link down; labprobe max_gap_ms, $RUNS interleaved runs):"
echo
echo "| master (dir1) | backup (dir2) | min | median | max | runs | every run |"
echo "|---|---|---|---|---|---|---|"
printf '%s\n' "${LINES[@]}"
echo
echo "Idle, one instance alone at advert_int 0.01 (10 s window):"
echo
echo "| daemon | CPU % of a core | RSS MiB |"
echo "|---|---|---|"
[ ${#IDLE[@]} -eq 0 ] || printf '%s\n' "${IDLE[@]}"
