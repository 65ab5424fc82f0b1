#!/usr/bin/env bash
# bench-ping.sh: how long after the active director loses its upstream does the VIP answer
# from the standby? (ping-node failover, heartbeat's ipfail built into hbd)
#
#   bash scripts/bench-ping.sh [--trials N] [--keep]      (as root; default N = 7)
#
# Topology (namespaces of its own, hbping<PID>-*, one LAN 192.0.2.0/24, no route out):
# dir1 192.0.2.11 and dir2 192.0.2.12 (each running examples/labweb on :80 answering its
# name), the router 192.0.2.1 (the ping node) and a client 192.0.2.100, on one bridge.
# Config: keepalive 20ms, deadtime 100ms, warntime 60ms, initdead 1, ucast both ways,
# `ping 192.0.2.1`, deadping 100ms, ping_hysteresis at its default (2 × deadping = 200ms),
# auto_failback on, haresources `dir1 IPaddr::192.0.2.10/24/eth0` (the built-in IPaddr).
#
# Each trial: dir1 holds the VIP and both directors reach the router; the client runs
# examples/labprobe through the VIP (a new connection every 2 ms, 50 ms timeout); dir1's
# path to the router is cut (nftables in dir1 drops its packets to and from 192.0.2.1);
# the figure is the time from the cut to the arrival of the first answer from dir2
# (labprobe's start_unix_ms + first_change_ms), counted from before the `nft` call that cuts (an upper
# bound) and from its return (a lower bound: the rule is in force by then). Then the path is restored and the VIP comes
# back (auto_failback, after the take-back hold) before the next trial. Prints each trial,
# then min / median / max against the target deadping + hysteresis + 50 ms = 350 ms.
#
# The instruments run SCHED_FIFO (priority 30, below hbd's 40): the probe and the `nft` call
# that cuts, so a busy machine delays neither the cut nor the client's view of it.
# HBD_ARGS adds hbd arguments (e.g. --no-realtime). Binaries: $BIN or target/debug (built
# when missing). Every loop is bounded; the EXIT trap kills only the PIDs this script
# started and deletes only the namespaces it created.
set -euo pipefail
cd "$(dirname "$0")/.."

TRIALS=7
KEEP=
while [ $# -gt 0 ]; do
  case $1 in
  --trials) TRIALS=${2:?--trials needs a number}; shift 2 ;;
  --keep) KEEP=1; shift ;;
  *) echo "usage: $0 [--trials N] [--keep]" >&2; exit 2 ;;
  esac
done
case $TRIALS in '' | *[!0-9]* | 0) echo "--trials: a positive number" >&2; exit 2 ;; esac
[ "$(id -u)" = 0 ] || { echo "bench-ping.sh: must run as root" >&2; exit 1; }
command -v jq >/dev/null || { echo "bench-ping.sh: needs jq" >&2; exit 1; }
command -v nft >/dev/null || { echo "bench-ping.sh: needs nft" >&2; exit 1; }

BIN=${BIN:-$PWD/target/debug}
if [ ! -x "$BIN/hbd" ] || [ ! -x "$BIN/hactl" ] || [ ! -x "$BIN/examples/labprobe" ] || [ ! -x "$BIN/examples/labweb" ]; then
  cargo build --quiet --bins --examples
fi
# shellcheck disable=SC2206 # HBD_ARGS is a list of arguments
EXTRA=(${HBD_ARGS:-})

DEADPING_MS=100
HYSTERESIS_MS=$((2 * DEADPING_MS)) # config::default_ping_hysteresis
TARGET_MS=$((DEADPING_MS + HYSTERESIS_MS + 50))
VIP=192.0.2.10
P=hbping$$
WORK=$(mktemp -d /tmp/hbd-ping.XXXXXX)
PIDS=()
NSS=()
cleanup() {
  set +e
  local p n
  for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
  for n in "${NSS[@]}"; do ip netns del "$n" 2>/dev/null; done
  if [ -n "$KEEP" ]; then echo "logs kept in $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { echo "$*" >&2; }
now_ms() { echo $(($(date +%s%N) / 1000000)); }
in_ns() { ip netns exec "$P-$1" "${@:2}"; }

# ---------------------------------------------------------------- the LAN
ip netns add "$P-br"; NSS+=("$P-br")
ip -n "$P-br" link set lo up
ip -n "$P-br" link add br0 type bridge
ip -n "$P-br" link set br0 up
for h in "dir1 192.0.2.11" "dir2 192.0.2.12" "router 192.0.2.1" "client 192.0.2.100"; do
  set -- $h
  ip netns add "$P-$1"; NSS+=("$P-$1")
  ip -n "$P-$1" link set lo up
  ip -n "$P-br" link add "$1" type veth peer name eth0 netns "$P-$1"
  ip -n "$P-br" link set "$1" master br0
  ip -n "$P-br" link set "$1" up
  ip -n "$P-$1" addr add "$2/24" dev eth0
  ip -n "$P-$1" link set eth0 up
done
for d in dir1 dir2; do
  # `ip netns exec` itself (not a shell function) in the background: it execs the program,
  # so $! is the program's PID and the EXIT trap kills it.
  ip netns exec "$P-$d" "$BIN/examples/labweb" --listen 0.0.0.0:80 --name "$d" >"$WORK/labweb-$d.log" 2>&1 &
  PIDS+=($!)
done

# ---------------------------------------------------------------- the pair
mkdir -p "$WORK/ha.d"
cat >"$WORK/ha.d/ha.cf" <<CF
keepalive 20ms
deadtime 100ms
warntime 60ms
initdead 1
udpport 694
ucast eth0 192.0.2.11
ucast eth0 192.0.2.12
ping 192.0.2.1
deadping ${DEADPING_MS}ms
auto_failback on
node dir1
node dir2
CF
echo "dir1 IPaddr::$VIP/24/eth0" >"$WORK/ha.d/haresources"
printf 'auth 1\n1 sha256 bench-ping-only\n' >"$WORK/ha.d/authkeys"
chmod 600 "$WORK/ha.d/authkeys"
"$BIN/hbd" --check-config --ha-dir "$WORK/ha.d" --node-name dir1 >&2
for d in dir1 dir2; do
  mkdir -p "$WORK/$d"
  ip netns exec "$P-$d" "$BIN/hbd" --ha-dir "$WORK/ha.d" --node-name "$d" --state-dir "$WORK/$d" \
    --socket "$WORK/$d/hbd.sock" --resource-dir "$PWD/resources" "${EXTRA[@]}" 2>>"$WORK/$d/log" &
  PIDS+=($!)
done

status_json() { "$BIN/hactl" --socket "$WORK/$1/hbd.sock" status --json 2>/dev/null; }
# settled: dir1 holds the group, both know both counts, the counts are equal and no
# take-back hold is pending (so the next cut starts from the same state each time).
settled() {
  local d
  for d in dir1 dir2; do
    status_json "$d" | jq -e '(.groups[0].owner == "dir1") and (.reachability.policy as $p
      | $p.local != null and $p.peer != null and $p.standing == "equal"
        and $p.local_hold_ms == null and $p.peer_hold_ms == null)' >/dev/null 2>&1 || return 1
  done
  [ "$(in_ns client curl -s -m 1 "http://$VIP/" 2>/dev/null)" = dir1 ]
}
wait_settled() { # bounded: 30 s
  for _ in $(seq 300); do settled && return 0; sleep 0.1; done
  log "the pair did not settle with dir1 holding the VIP; logs:"
  tail -n 30 "$WORK"/dir?/log >&2
  return 1
}
cut() { # on|off: dir1's path to the router
  if [ "$1" = on ]; then
    chrt -f 30 ip netns exec "$P-dir1" nft -f - <<NFT
add table inet hbdbench
add chain inet hbdbench out { type filter hook output priority 0 ; }
add chain inet hbdbench in { type filter hook input priority 0 ; }
add rule inet hbdbench out ip daddr 192.0.2.1 drop
add rule inet hbdbench in ip saddr 192.0.2.1 drop
NFT
  else
    in_ns dir1 nft delete table inet hbdbench
  fi
}
field() { sed -n "s/.*\b$1=\([^ ]*\).*/\1/p" "$2"; }

wait_settled
log "== pair up, dir1 holds $VIP; $TRIALS trial(s), target ${TARGET_MS} ms"
: >"$WORK/figures"
for t in $(seq "$TRIALS"); do
  wait_settled
  chrt -f 30 ip netns exec "$P-client" "$BIN/examples/labprobe" --target "$VIP:80" --interval-ms 2 --timeout-ms 50 \
    --duration-ms 2500 >"$WORK/probe-$t" 2>&1 &
  probe=$!
  PIDS+=("$probe")
  sleep 0.5
  cut_at=$(now_ms)
  cut on
  cut_done=$(now_ms)
  wait "$probe" || true
  start=$(field start_unix_ms "$WORK/probe-$t")
  change=$(field first_change_ms "$WORK/probe-$t")
  if [ -z "$change" ] || [ "$change" = - ]; then
    log "   trial $t: the VIP never answered from dir2 within the probe: $(cat "$WORK/probe-$t")"
    tail -n 20 "$WORK"/dir?/log >&2
    exit 1
  fi
  took=$(awk -v s="$start" -v c="$change" -v cut="$cut_at" 'BEGIN {printf "%.0f", s + c - cut}')
  nft_ms=$((cut_done - cut_at))
  echo "$took $((took - nft_ms))" >>"$WORK/figures"
  log "   trial $t: VIP answered from dir2 ${took} ms after the cut began, $((took - nft_ms)) ms after nft returned ($(cat "$WORK/probe-$t"))"
  cut off
done
# The rule takes effect somewhere while `ip netns exec … nft` runs (process start included,
# tens of ms on a busy machine): the first figure counts from before it (an upper bound), the
# second from its return (a lower bound).
summary() { # column label
  awk -v col="$1" '{print $col}' "$WORK/figures" | sort -n | awk -v target="$TARGET_MS" -v n="$TRIALS" -v label="$2" '
    {v[NR] = $1}
    END {
      med = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
      printf "upstream lost (%s) -> VIP answers from the standby, %d trials: min %d ms, median %d ms, max %d ms (target <= %d ms: deadping 100 + hysteresis 200 + 50)\n", label, n, v[1], med, v[NR], target
    }'
}
summary 1 "from before the nft call"
summary 2 "from nft's return"
