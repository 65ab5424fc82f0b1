#!/usr/bin/env bash
# bench-failover.sh: failover outages of an hbd director pair in the namespace lab
# (scripts/lab.sh), measured the way docs/benchmarks.md measured heartbeat and keepalived.
#
#   bash scripts/bench-failover.sh [--trials N]        (as root; default N = 5)
#
# Config: keepalive 10ms, deadtime 30ms, warntime 20ms, initdead 1, ucast both ways,
# auto_failback on, haresources `dir1 IPaddr::192.0.2.10/24/eth0` (the built-in IPaddr, so
# the figure is the protocol's, not a shell script's). A client in hbdlab-client runs
# examples/labprobe through the VIP (a new connection every 2 ms, 50 ms timeout) across each event;
# the figure is its max_gap_ms: the largest gap between two consecutive good answers.
#
# Scenarios, N trials each, back to the initial state (dir1 holds the VIP, both up) between:
#   a  dir1's link down
#   b  node death: dir1's hbd SIGKILLed and its link down
#   c  `hactl takeover` on dir2 (planned move)
#   d  partition heals: the lab's switch drops every frame to and from dir1 (nftables in the
#      bridge's namespace) until dir2 holds, then forwards again; also how long the VIP was
#      configured on both directors after the heal (from `ip -ts monitor address` events)
#   e  dir1's hbd SIGKILLed (links up, VIP left behind) and restarted after KILL_GAP_MS
#   idle footprint of one hbd after 10 s (VmRSS, PSS, CPU over 10 s), measured with the lab's
#      default veths and again after `lab.sh napi` (when ethtool is installed)
#   f  both cores saturated for LOAD_S seconds: late heartbeats, longest gap, false deaths
#
# Environment: KILL_GAP_MS (e, default 100), LOAD_S (f, default 30), HBD_ARGS (extra hbd
# arguments, e.g. --no-realtime). --only 'a c idle' runs a subset; --keep keeps the logs.
# Binaries: $CARGO_TARGET_DIR/release or target/release (built when missing). Every loop is
# bounded; the EXIT trap kills only the PIDs this script started and runs `lab.sh down`.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"

TRIALS=5
SCENARIOS="a b c d e idle f"
KILL_GAP_MS=${KILL_GAP_MS:-100}
LOAD_S=${LOAD_S:-30}
KEEP=
while [ $# -gt 0 ]; do
  case $1 in
  --trials) TRIALS=${2:?--trials needs a number}; shift 2 ;;
  --only) SCENARIOS=${2:?--only needs a list like "a c"}; shift 2 ;;
  --keep) KEEP=1; shift ;;
  *) echo "usage: $0 [--trials N] [--only 'a b c d e idle f'] [--keep]" >&2; exit 2 ;;
  esac
done
source scripts/lab-lib.sh
lab_require_root bench-failover.sh
lab_positive --trials "$TRIALS"

TARGET=${CARGO_TARGET_DIR:-$PWD/target}
BIN=$TARGET/release
if [ ! -x "$BIN/hbd" ] || [ ! -x "$BIN/hactl" ] || [ ! -x "$BIN/examples/labprobe" ] || [ ! -x "$BIN/examples/labweb" ]; then
  echo "== building release binaries into $TARGET"
  CARGO_TARGET_DIR=$TARGET cargo build --quiet --release --bins --examples
fi

VIP=192.0.2.10
WORK=$(mktemp -d /tmp/hbd-bench.XXXXXX)
remove_work() { if [ -n "$KEEP" ]; then echo "logs kept in $WORK" >&2; else rm -rf "$WORK"; fi; }
lab_on_exit remove_work

log() { echo "$*" >&2; }
now_ms() { echo $(($(date +%s%N) / 1000000)); }

# ---------------------------------------------------------------- lab and nodes
lab_up >&2

bash scripts/lab.sh ha-dir "$WORK/ha.d" "dir1 IPaddr::$VIP/24/eth0" "sha1 bench-only-secret"
"$BIN/hbd" --check-config --ha-dir "$WORK/ha.d" --node-name dir1 >&2

status_json() { hactl "$1" status --json 2>/dev/null; }
owner_seen_by() { status_json "$1" | jq -r '.groups[0].owner // "none"' 2>/dev/null || echo "?"; }
peer_up_seen_by() { # node peer -> 0 when node sees peer in an up state
  status_json "$1" | jq -e --arg p "$2" \
    '.nodes[] | select(.name == $p) | (.state|ascii_downcase) as $s | ($s == "active" or $s == "up")' >/dev/null 2>&1
}
vip_on() { ip -n "hbdlab-$1" -o -4 addr show dev eth0 2>/dev/null | grep -q " $VIP/"; }
link() { ip -n "hbdlab-$1" link set eth0 "$2"; }

# wait_holds OWNER [timeout_s]: both nodes' status (those running) name OWNER, the VIP is on
# OWNER only (other node running) and the client reaches OWNER through the VIP.
wait_holds() {
  local owner=$1 limit=$(($(now_ms) + ${2:-10} * 1000)) other
  [ "$owner" = dir1 ] && other=dir2 || other=dir1
  while [ "$(now_ms)" -lt "$limit" ]; do
    if [ "$(owner_seen_by "$owner")" = "$owner" ] && vip_on "$owner" \
      && { [ -z "${HBD_PID[$other]:-}" ] || { [ "$(owner_seen_by "$other")" = "$owner" ] && ! vip_on "$other"; }; } \
      && [ "$(ask_vip 0.2)" = "$owner" ]; then
      return 0
    fi
    sleep 0.05
  done
  log "   timed out waiting for $owner to hold the VIP: dir1 sees $(owner_seen_by dir1), dir2 sees $(owner_seen_by dir2), VIP on dir1: $(vip_on dir1 && echo yes || echo no), dir2: $(vip_on dir2 && echo yes || echo no), client gets '$(ask_vip 0.2)'"
  return 1
}

# wait_client OWNER [timeout_s]: OWNER says it owns the group, has the VIP, and the client
# reaches it (the other node may be partitioned or dead, so it is not asked).
wait_client() {
  local owner=$1 limit=$(($(now_ms) + ${2:-5} * 1000))
  while [ "$(now_ms)" -lt "$limit" ]; do
    [ "$(owner_seen_by "$owner")" = "$owner" ] && vip_on "$owner" && [ "$(ask_vip 0.2)" = "$owner" ] && return 0
    sleep 0.05
  done
  log "   timed out waiting for the client to reach $owner (it sees owner $(owner_seen_by "$owner"), client gets '$(ask_vip 0.2)')"
  return 1
}

# restore: both links up, both daemons running, each sees the other, dir1 holds the VIP.
restore() {
  switch_heal
  link dir1 up
  link dir2 up
  [ -n "${HBD_PID[dir1]:-}" ] || start_node dir1
  [ -n "${HBD_PID[dir2]:-}" ] || start_node dir2
  local limit=$(($(now_ms) + 15000))
  while [ "$(now_ms)" -lt "$limit" ]; do
    peer_up_seen_by dir1 dir2 && peer_up_seen_by dir2 dir1 && break
    sleep 0.05
  done
  wait_holds dir1 15 || return 1
  sleep 0.3 # let the pair settle (no measurement starts in a transient)
}

field() { sed -n "s/.*\b$1=\([^ ]*\).*/\1/p" "$2"; }

# stats of numbers on stdin -> "median / min / max"
stats() { sort -g | awk '{v[NR]=$1} END {if (NR==0) {print "n/a"; exit}
  m = (NR%2) ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2; printf "%.1f / %.1f / %.1f", m, v[1], v[NR]}'; }

declare -A RESULTS=()
declare -A NOTES=()
record() { # scenario trial probe-file [extra]
  local gap at from to ok failed
  gap=$(field max_gap_ms "$3"); at=$(field at_ms "$3"); from=$(field from "$3"); to=$(field to "$3")
  ok=$(field ok "$3"); failed=$(field failed "$3")
  log "   $1 #$2: max_gap_ms=$gap at_ms=$at $from->$to ok=$ok failed=$failed ${4:-}"
  RESULTS[$1]+="$gap "
  echo "$1 $2 max_gap_ms=$gap at_ms=$at from=$from to=$to ok=$ok failed=$failed ${4:-}" >>"$WORK/trials"
}

# ---------------------------------------------------------------- scenarios
scenario_a() { # $1 = trial
  probe_bg 1500 "$WORK/probe"; sleep 0.3
  link dir1 down
  probe_wait || true
  record a "$1" "$WORK/probe"
  wait_client dir2 5 || true
}

scenario_b() {
  probe_bg 1500 "$WORK/probe"; sleep 0.3
  { kill -KILL "${HBD_PID[dir1]}"; link dir1 down; kill_node dir1; } 2>/dev/null
  probe_wait || true
  record b "$1" "$WORK/probe"
  wait_client dir2 5 || true
}

scenario_c() {
  probe_bg 1000 "$WORK/probe"; sleep 0.3
  local t0 t1; t0=$(now_ms)
  hactl dir2 takeover >/dev/null || log "   hactl takeover refused"
  t1=$(now_ms)
  probe_wait || true
  record c "$1" "$WORK/probe" "hactl_ms=$((t1 - t0))"
  wait_holds dir2 5 || true
  hactl dir1 takeover >/dev/null || log "   hactl takeover (give back) refused"
}

# `ip -ts monitor` line "[2026-11-22T02:41:03.123456] ..." -> epoch microseconds
ts_us() { date -d "$(sed 's/^\[\([^]]*\)\].*/\1/' <<<"$1")" +%s%6N; }
now_us() { echo "${EPOCHREALTIME/./}"; }

# The switch: an `nft -i` coprocess in the bridge's namespace with one forward chain. A
# partition is a rule set in that chain, so the heal is one nftables commit: no link event,
# whose processing in this shared kernel (linkwatch, up to 1 s late, holding the RTNL lock that
# the other director's address change then waits for) would be measured instead of hbd.
switch_open() {
  coproc SWITCH { ip netns exec hbdlab-br nft -i >"$WORK/switch.log" 2>&1; }
  lab_track "$SWITCH_PID"
  echo 'add table bridge hbdbench' >&"${SWITCH[1]}"
  echo 'add chain bridge hbdbench cut { type filter hook forward priority 0; }' >&"${SWITCH[1]}"
}
switch_cut() { # port: drop every frame to or from it
  echo "add rule bridge hbdbench cut iifname \"$1\" drop; add rule bridge hbdbench cut oifname \"$1\" drop" >&"${SWITCH[1]}"
}
switch_heal() { echo 'flush chain bridge hbdbench cut' >&"${SWITCH[1]}"; }

scenario_d() {
  switch_cut dir1
  wait_client dir2 5 || log "   (d) dir2 did not take over before the heal"
  local m1 m2 theal
  ip -ts -n hbdlab-dir1 monitor address >"$WORK/mon1" 2>&1 &
  m1=$!; lab_track "$m1"
  ip -ts -n hbdlab-dir2 monitor address >"$WORK/mon2" 2>&1 &
  m2=$!; lab_track "$m2"
  probe_bg 1500 "$WORK/probe"; sleep 0.3
  # The heal's time is taken before the command is written, so nft's own parse and commit
  # time counts against hbd (the figure is an upper bound).
  theal=$(now_us)
  switch_heal
  probe_wait || true
  kill "$m1" "$m2" 2>/dev/null || true
  wait "$m1" "$m2" 2>/dev/null || true
  lab_forget "$m1" "$m2"
  # First deletion of the VIP on either director after the heal ends the overlap.
  local first="" who="" line t
  for n in 1 2; do
    line=$(grep -m1 "^\[.*Deleted.* $VIP/" "$WORK/mon$n" || true)
    [ -n "$line" ] || continue
    t=$(ts_us "$line")
    if [ -z "$first" ] || [ "$t" -lt "$first" ]; then first=$t; who=dir$n; fi
  done
  local both
  if [ -n "$first" ]; then
    both=$(awk -v d="$((first - theal))" -v w="$who" 'BEGIN {printf "%.1fms(dropped_by=%s)", d/1000, w}')
  else both=">1200ms(none_dropped)"; fi
  record d "$1" "$WORK/probe" "vip_on_both_after_heal=$both"
  NOTES[d]+="$both "
}

scenario_e() {
  probe_bg 3000 "$WORK/probe"; sleep 0.3
  kill_node dir1
  sleep "$(awk "BEGIN{print $KILL_GAP_MS/1000}")"
  start_node dir1
  probe_wait || true
  local failed; failed=$(field failed "$WORK/probe")
  record e "$1" "$WORK/probe" "total_outage_ms~$((failed * 2))"
  NOTES[e]+="$((failed * 2)) "
}

# ---------------------------------------------------------------- footprint and load
late_of() { # node peer -> "late_heartbeats longest_gap_ms"
  status_json "$1" | jq -r --arg p "$2" '.nodes[] | select(.name == $p) | "\(.late_heartbeats) \(.longest_gap_ms)"'
}
# (grep -c exits 1 when it counts nothing; under pipefail that must not end the script)
deaths() { { grep -c "node is dead" "$WORK/dir1/log" "$WORK/dir2/log" 2>/dev/null || true; } | awk -F: '{s += $2} END {print s+0}'; }

fresh_pair() {
  kill_node dir1; kill_node dir2
  restore
}

# measure_idle LABEL: CPU of each hbd over 10 s (lab_window), with VmRSS/PSS, into FOOTPRINT
measure_idle() {
  local n pid rss pss thr line
  lab_window 10 "${HBD_PID[dir1]}" "${HBD_PID[dir2]}"
  FOOTPRINT+="$1"$'\n'
  log "   $1"
  for n in dir1 dir2; do
    pid=${HBD_PID[$n]}
    rss=$(awk '/^VmRSS/ {print $2}' "/proc/$pid/status")
    pss=$(awk '/^Pss:/ {print $2}' "/proc/$pid/smaps_rollup" 2>/dev/null || echo "?")
    thr=$(awk '/^Threads/ {print $2}' "/proc/$pid/status")
    line=$(awk -v rss="$rss" -v pss="$pss" -v thr="$thr" -v n="$n" \
      'BEGIN {printf "%s: VmRSS %.1f MB, PSS %.1f MB, %d threads", n, rss/1024, pss/1024, thr}')
    line+=", CPU ${LAB_TICKS[$pid]} % of a core (stat ticks), ${LAB_CPU[$pid]} % (schedstat), ${LAB_WAKEUPS[$pid]} wakeups/s"
    log "     $line"
    FOOTPRINT+="  $line"$'\n'
  done
  if [ -n "$LAB_NAPI" ]; then
    log "     $LAB_NAPI"
    FOOTPRINT+="  $LAB_NAPI"$'\n'
  fi
}

run_idle() {
  log "== idle footprint (fresh pair, 10 s idle, then CPU over 10 s; then again with threaded NAPI)"
  fresh_pair || { log "   could not restore"; return; }
  sleep 10
  measure_idle "veth receive in the sender's system call (the lab's default: the sender pays for the bridge and the peer's stack):"
  IDLE_LATE="dir1 sees dir2: $(late_of dir1 dir2) ; dir2 sees dir1: $(late_of dir2 dir1) (late_heartbeats longest_gap_ms after ~20 s idle)"
  log "   $IDLE_LATE"
  if command -v ethtool >/dev/null; then
    bash scripts/lab.sh napi
    sleep 2
    measure_idle "veth receive in threaded NAPI (lab.sh napi: each side pays for its own stack, as on two machines):"
    # Back to the default: NAPI threads are ordinary SCHED_OTHER threads, so under (f)'s
    # load they would delay every frame, which is a harsher lab than the one (f) measures.
    bash scripts/lab.sh napi off
  else
    log "   (no ethtool: the threaded-NAPI measurement is skipped)"
  fi
}

run_f() {
  log "== (f) both cores saturated for $LOAD_S s"
  [ -n "${HBD_PID[dir1]:-}" ] && [ -n "${HBD_PID[dir2]:-}" ] || fresh_pair || return
  local before after d0 d1 i loads=()
  before="$(late_of dir1 dir2) | $(late_of dir2 dir1)"
  d0=$(deaths)
  for i in 1 2; do
    timeout "$LOAD_S" sh -c 'while :; do :; done' &
    loads+=($!); lab_track $!
  done
  local w; for w in "${loads[@]}"; do wait "$w" 2>/dev/null || true; done
  lab_forget "${loads[@]}"
  after="$(late_of dir1 dir2) | $(late_of dir2 dir1)"
  d1=$(deaths)
  LOAD_RESULT="late_heartbeats longest_gap_ms (dir1 sees dir2 | dir2 sees dir1): before $before, after $after; 'node is dead' logged during load: $((d1 - d0)); owner after: $(owner_seen_by dir1)/$(owner_seen_by dir2)"
  log "   $LOAD_RESULT"
}

# ---------------------------------------------------------------- main
FOOTPRINT="" IDLE_LATE="" LOAD_RESULT=""
switch_open
log "== machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
for s in $SCENARIOS; do
  case $s in
  idle) run_idle ;;
  f) run_f ;;
  a | b | c | d | e)
    log "== scenario ($s), $TRIALS trials"
    for t in $(seq 1 "$TRIALS"); do
      if ! restore; then log "   ($s) #$t: could not restore the initial state; skipped"; continue; fi
      "scenario_$s" "$t"
    done
    restore || log "   could not restore after ($s)"
    ;;
  *) log "unknown scenario $s"; exit 2 ;;
  esac
done

echo
echo "hbd failover benchmark: keepalive 10ms deadtime 30ms, $TRIALS trials, $(date -u +%F), load average at end $(cut -d' ' -f1-3 /proc/loadavg)"
echo "max_gap_ms median / min / max:"
for s in a b c d e; do
  [ -n "${RESULTS[$s]:-}" ] || continue
  printf '  (%s) %s' "$s" "$(tr ' ' '\n' <<<"${RESULTS[$s]}" | grep . | stats)"
  case $s in
  d) printf '   VIP on both after heal: %s' "${NOTES[d]}" ;;
  e) printf '   total outage ~ms (failed probes x 2 ms): %s' "${NOTES[e]}" ;;
  esac
  echo
done
[ -z "$FOOTPRINT" ] || { echo "idle footprint:"; printf '%s' "$FOOTPRINT" | sed 's/^/  /'; echo "  $IDLE_LATE"; }
[ -z "$LOAD_RESULT" ] || echo "(f) load: $LOAD_RESULT"
echo "node is dead lines in the logs (whole run): $(deaths)"
echo "per-trial lines:"; sed 's/^/  /' "$WORK/trials" 2>/dev/null || true
