#!/usr/bin/env bash
# bench-serial.sh: soak of hbd pairs joined only by a serial line (a pty pair joined by socat,
# the e2e's null-modem cable), counting false deaths: how short may keepalive and deadtime be
# at a given line rate before a healthy line makes a node declare its peer dead?
#
#   bash scripts/bench-serial.sh [--minutes N] [--keep] [BAUD:KEEPALIVE:DEADTIME ...]
#
# Each BAUD:KEEPALIVE:DEADTIME (e.g. 19200:130ms:270ms) is one pair, run for N minutes
# (default 10, heartbeat's "day-long equivalent" of the issue); several pairs run in
# parallel, each on its own cable. Default: 19200:130ms:270ms 115200:25ms:55ms, the shortest
# timings check-config accepts for a two-node status with sha256 at each rate (it refuses a
# deadtime of two line frame times or less and says what the line needs).
#
# Config per pair: serial only (no UDP: the line alone must keep the pair up), two nodes, no
# groups, sha256, initdead 2 s, warntime = keepalive + half of (deadtime - keepalive). Each
# node is `hbd --ha-dir` in the root namespace with its own state dir and control socket; no
# network traffic at all. A pair counts once both nodes see the other up; then the soak runs
# N minutes and reports, per node: false deaths ("node is dead" log lines after the start),
# late heartbeats and the longest gap between two heartbeats (hactl status), and the serial
# line's frames in and out.
#
# Run niced (nice -n 10): the pairs are mostly idle. The socat cable runs SCHED_FIFO
# (CABLE_RT, default priority 30; 0 = not realtime). HBD_ARGS adds hbd arguments (e.g.
# --no-realtime: without it each hbd switches its heartbeat thread to SCHED_FIFO as in
# production, so the figure is the line's and the protocol's, not the machine's load).
# Binaries: $BIN or target/debug. Every loop is bounded; the EXIT trap kills only the PIDs
# this script started.
set -euo pipefail
cd "$(dirname "$0")/.."

MINUTES=10
KEEP=
RUNS=()
while [ $# -gt 0 ]; do
  case $1 in
  --minutes) MINUTES=${2:?--minutes needs a number}; shift 2 ;;
  --keep) KEEP=1; shift ;;
  -h | --help) sed -n '2,25p' "$0"; exit 0 ;;
  *:*:*) RUNS+=("$1"); shift ;;
  *) echo "usage: $0 [--minutes N] [--keep] [BAUD:KEEPALIVE:DEADTIME ...]" >&2; exit 2 ;;
  esac
done
[ ${#RUNS[@]} -gt 0 ] || RUNS=(19200:130ms:270ms 115200:25ms:55ms)
case $MINUTES in '' | *[!0-9]* | 0) echo "--minutes: a positive number" >&2; exit 2 ;; esac
[ "$(id -u)" = 0 ] || { echo "bench-serial.sh: must run as root (realtime scheduling)" >&2; exit 1; }
command -v socat >/dev/null || { echo "bench-serial.sh: needs socat (apt-get install socat)" >&2; exit 1; }
command -v jq >/dev/null || { echo "bench-serial.sh: needs jq" >&2; exit 1; }

BIN=${BIN:-$PWD/target/debug}
[ -x "$BIN/hbd" ] && [ -x "$BIN/hactl" ] || cargo build --quiet --bins
# shellcheck disable=SC2206 # HBD_ARGS is a list of arguments
EXTRA=(${HBD_ARGS:-})

WORK=$(mktemp -d /tmp/hbd-serial.XXXXXX)
PIDS=()
cleanup() {
  set +e
  local p
  for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
  if [ -n "$KEEP" ]; then echo "logs kept in $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

ms_of() { # 130ms | 1s | 2 -> milliseconds
  case $1 in
  *ms) echo "${1%ms}" ;;
  *s) echo $((${1%s} * 1000)) ;;
  *) echo $(($1 * 1000)) ;;
  esac
}
hactl_in() { "$BIN/hactl" --socket "$1/hbd.sock" status --json 2>/dev/null; }
peer_up() { # state-dir peer
  hactl_in "$1" | jq -e --arg p "$2" '.nodes[] | select(.name == $p) | .status == "up"' >/dev/null 2>&1
}

# start_pair I BAUD KEEPALIVE DEADTIME: cable and two nodes under $WORK/run-I.
start_pair() {
  local i=$1 baud=$2 ka=$3 dt=$4 dir=$WORK/run-$1 node dev ka_ms dt_ms warn_ms
  mkdir -p "$dir"
  # The cable runs SCHED_FIFO: a null-modem cable is never starved, and socat at nice 10 on
  # a busy machine would be (CABLE_RT=0 runs it as an ordinary process).
  local rt=()
  [ "${CABLE_RT:-30}" != 0 ] && rt=(chrt -f "${CABLE_RT:-30}")
  "${rt[@]}" socat "pty,link=$dir/ttyA,raw,echo=0" "pty,link=$dir/ttyB,raw,echo=0" 2>"$dir/socat.log" &
  PIDS+=($!)
  for _ in $(seq 100); do [ -e "$dir/ttyA" ] && [ -e "$dir/ttyB" ] && break; sleep 0.05; done
  ka_ms=$(ms_of "$ka"); dt_ms=$(ms_of "$dt"); warn_ms=$((ka_ms + (dt_ms - ka_ms) / 2))
  for node in n1 n2; do
    dev=$dir/ttyA; [ "$node" = n2 ] && dev=$dir/ttyB
    mkdir -p "$dir/$node/ha.d"
    printf 'keepalive %s\ndeadtime %s\nwarntime %sms\ninitdead 2\nbaud %s\nserial %s\nauto_failback on\nnode n1\nnode n2\n' \
      "$ka" "$dt" "$warn_ms" "$baud" "$dev" >"$dir/$node/ha.d/ha.cf"
    : >"$dir/$node/ha.d/haresources"
    printf 'auth 1\n1 sha256 bench-serial-only\n' >"$dir/$node/ha.d/authkeys"
    chmod 600 "$dir/$node/ha.d/authkeys"
  done
  echo "== run $i: $baud baud, keepalive $ka, deadtime $dt (warntime ${warn_ms}ms); check-config says:"
  "$BIN/hbd" --check-config --ha-dir "$dir/n1/ha.d" --node-name n1 2>&1 | sed 's/^/   /' || return 1
  for node in n1 n2; do
    "$BIN/hbd" --ha-dir "$dir/$node/ha.d" --node-name "$node" --state-dir "$dir/$node" \
      --socket "$dir/$node/hbd.sock" "${EXTRA[@]}" 2>>"$dir/$node/log" &
    PIDS+=($!)
    echo "$!" >"$dir/$node/pid"
  done
}

# pair_up I: both nodes see the other up (bounded: 30 s).
pair_up() {
  local dir=$WORK/run-$1
  for _ in $(seq 300); do
    peer_up "$dir/n1" n2 && peer_up "$dir/n2" n1 && return 0
    sleep 0.1
  done
  return 1
}

# report I BAUD KA DT: one line per node.
report() {
  local i=$1 dir=$WORK/run-$1 node peer deaths from json alive
  for node in n1 n2; do
    peer=n2; [ "$node" = n2 ] && peer=n1
    from=$(cat "$dir/$node/from")
    deaths=$(tail -n +"$from" "$dir/$node/log" | grep -c 'node is dead' || true)
    alive=yes; kill -0 "$(cat "$dir/$node/pid")" 2>/dev/null || alive=NO
    json=$(hactl_in "$dir/$node" || echo '{}')
    echo "$json" | jq -r --arg p "$peer" --arg run "$2 baud, keepalive $3, deadtime $4" \
      --arg node "$node" --arg deaths "$deaths" --arg min "$MINUTES" --arg alive "$alive" '
      (.nodes // [] | map(select(.name == $p)) | first // {}) as $n
      | (.media // [] | map(select(.serial != null)) | first // {}) as $m
      | "\($run): \($node) over \($min) min: false deaths \($deaths), peer now \($n.status // "?"), "
        + "late heartbeats \($n.late_heartbeats // "?"), longest gap \($n.longest_gap_ms // "?") ms, "
        + "serial frames in \($m.serial.frames_in // "?") out \($m.serial.frames_out // "?"), daemon alive \($alive)"'
    echo "$deaths" >"$dir/$node/deaths"
  done
}

i=0
for r in "${RUNS[@]}"; do
  IFS=: read -r baud ka dt <<<"$r"
  i=$((i + 1))
  start_pair "$i" "$baud" "$ka" "$dt"
done
for j in $(seq "$i"); do
  if ! pair_up "$j"; then
    echo "run $j: the pair never came up; logs:" >&2
    tail -n 20 "$WORK/run-$j"/n?/log >&2
    exit 1
  fi
  for node in n1 n2; do
    echo $(($(wc -l <"$WORK/run-$j/$node/log") + 1)) >"$WORK/run-$j/$node/from"
  done
done
echo "== all $i pair(s) up at $(date -u +%H:%M:%S); soaking $MINUTES min"
end=$(($(date +%s) + MINUTES * 60))
while [ "$(date +%s)" -lt "$end" ]; do sleep 5; done
total=0
for j in $(seq "$i"); do
  IFS=: read -r baud ka dt <<<"${RUNS[$((j - 1))]}"
  report "$j" "$baud" "$ka" "$dt"
  for node in n1 n2; do total=$((total + $(cat "$WORK/run-$j/$node/deaths"))); done
done
echo "== total false deaths: $total"
