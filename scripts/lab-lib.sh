# lab-lib.sh: the pieces the lab scripts share (demo.sh, bench-failover.sh, bench-floor.sh).
# Sourced, never run, from the repository root after `cd`. scripts/lab.sh stays about the
# topology; this file is about what runs in it and how its cost is measured.
#
#   argument checks     lab_require_root NAME, lab_positive FLAG VALUE
#   PID registry        lab_track PID..., lab_forget PID..., lab_stop PID...,
#                       lab_on_exit [FUNCTION]: on exit kill (by PID, SIGKILL) every tracked
#                       process and every hbd in HBD_PID, then `lab.sh down`, then FUNCTION
#   the lab             lab_up: a fresh lab serving $BIN/examples/labweb
#   hbd nodes           start_node NAME, kill_node NAME, hactl NAME ARGS..., ask_vip [TIMEOUT_S
#                       [FALLBACK]], probe_bg DURATION_MS FILE, probe_wait
#   CPU measurement     cpu_ns PID, cpu_ticks PID, ctxsw PID, napi_ns, lab_window SECONDS PID...
#
# The callers set BIN (the binaries), VIP, and for hbd nodes WORK (holding ha.d and one
# directory per node); HBD_ARGS adds hbd arguments (e.g. --no-realtime).

LAB_PIDS=()
declare -A HBD_PID=()
HBD_ARGS=${HBD_ARGS:-}

# ---------------------------------------------------------------- argument checks
lab_require_root() { # script-name
  [ "$(id -u)" = 0 ] || { echo "$1: must run as root" >&2; exit 1; }
}
lab_positive() { # flag value
  case $2 in '' | *[!0-9]* | 0) echo "$1: a positive number" >&2; exit 2 ;; esac
}

# ---------------------------------------------------------------- PID registry and cleanup
lab_track() { LAB_PIDS+=("$@"); }
lab_forget() { # pid...: reaped by the caller, so no longer to be killed
  local keep=() p q gone
  for p in "${LAB_PIDS[@]}"; do
    gone=
    for q in "$@"; do [ "$p" = "$q" ] && gone=1; done
    [ -n "$gone" ] || keep+=("$p")
  done
  LAB_PIDS=("${keep[@]}")
}
lab_stop() { # pid...: SIGKILL, reap, forget
  kill -KILL "$@" 2>/dev/null || true
  wait "$@" 2>/dev/null || true
  lab_forget "$@"
}
lab_cleanup() {
  set +e
  local pid
  for pid in "${HBD_PID[@]}" "${LAB_PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null; done
  for pid in "${HBD_PID[@]}" "${LAB_PIDS[@]}"; do wait "$pid" 2>/dev/null; done
  bash scripts/lab.sh down >/dev/null 2>&1
  [ -z "${LAB_EXIT_HOOK:-}" ] || "$LAB_EXIT_HOOK"
}
lab_on_exit() { # [function run after the cleanup]
  LAB_EXIT_HOOK=${1:-}
  trap lab_cleanup EXIT
  trap 'exit 130' INT TERM
}

# ---------------------------------------------------------------- the lab
lab_up() { # a fresh lab (any previous one torn down) whose web servers are $BIN/examples/labweb
  bash scripts/lab.sh down >/dev/null 2>&1 || true
  HBD_LABWEB=$BIN/examples/labweb bash scripts/lab.sh up
}

# ---------------------------------------------------------------- hbd nodes
start_node() { # name: hbd in hbdlab-NAME with $WORK/ha.d, its log appended to $WORK/NAME/log
  mkdir -p "$WORK/$1"
  # `ip netns exec` execs hbd, so $! is hbd's own PID.
  # shellcheck disable=SC2086 # HBD_ARGS is a list of arguments
  ip netns exec "hbdlab-$1" "$BIN/hbd" --ha-dir "$WORK/ha.d" --node-name "$1" \
    --state-dir "$WORK/$1" --socket "$WORK/$1/hbd.sock" --resource-dir "$PWD/resources" \
    $HBD_ARGS 2>>"$WORK/$1/log" &
  HBD_PID[$1]=$!
}
kill_node() { # name: SIGKILL (as a crash) and reap
  local pid=${HBD_PID[$1]:-}
  [ -n "$pid" ] || return 0
  kill -KILL "$pid" 2>/dev/null || true
  { wait "$pid"; } 2>/dev/null || true
  unset "HBD_PID[$1]"
}
hactl() { "$BIN/hactl" --socket "$WORK/$1/hbd.sock" "${@:2}"; }
ask_vip() { # [timeout_s (1)] [printed when nothing answers]: who answers on the VIP
  ip netns exec hbdlab-client curl -s -m "${1:-1}" "http://$VIP/" 2>/dev/null || printf '%s' "${2:-}"
}
probe_bg() { # duration_ms outfile: examples/labprobe from the client through the VIP, in the background
  ip netns exec hbdlab-client "$BIN/examples/labprobe" --target "$VIP:80" --interval-ms 2 \
    --timeout-ms 50 --duration-ms "$1" >"$2" 2>&1 &
  PROBE_PID=$!
  lab_track "$PROBE_PID"
}
probe_wait() { # the probe's exit status
  local rc=0
  wait "$PROBE_PID" || rc=$?
  lab_forget "$PROBE_PID"
  return "$rc"
}

# ---------------------------------------------------------------- CPU measurement
# CPU time in ns of every thread of PID (schedstat's first field, summed over its tasks).
cpu_ns() { cat /proc/"$1"/task/*/schedstat 2>/dev/null | awk '{s += $1} END {print s+0}'; }
# utime + stime clock ticks of PID (all threads), from /proc/PID/stat.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# Voluntary and involuntary context switches of PID, as /proc/PID/status counts them.
ctxsw() { cat /proc/"$1"/task/*/status 2>/dev/null | awk '/ctxt_switches/ {s += $2} END {print s+0}'; }
# CPU time in ns of the threaded-NAPI kernel threads (0 before `lab.sh napi`).
napi_ns() {
  local p s=0 v
  for p in $(pgrep '^napi/' 2>/dev/null); do
    v=$(awk '{print $1}' "/proc/$p/schedstat" 2>/dev/null || echo 0)
    s=$((s + v))
  done
  echo "$s"
}

# lab_window SECONDS PID...: one measurement window. Samples each PID and the NAPI threads,
# sleeps, samples again, and sets for each PID LAB_CPU[PID] (% of a core, from cpu_ns),
# LAB_TICKS[PID] (% of a core, from cpu_ticks at 100 Hz) and LAB_WAKEUPS[PID] (context
# switches per second); LAB_NAPI is the NAPI threads' line ("" when there are none).
declare -A LAB_CPU=() LAB_TICKS=() LAB_WAKEUPS=()
LAB_NAPI=""
lab_window() {
  local secs=$1 pid w0 w1 k0 k1
  shift
  local -A n0=() t0=() c0=()
  for pid in "$@"; do
    n0[$pid]=$(cpu_ns "$pid"); t0[$pid]=$(cpu_ticks "$pid"); c0[$pid]=$(ctxsw "$pid")
  done
  k0=$(napi_ns); w0=$(date +%s%N)
  sleep "$secs"
  w1=$(date +%s%N); k1=$(napi_ns)
  for pid in "$@"; do
    LAB_CPU[$pid]=$(awk -v ns="$(($(cpu_ns "$pid") - n0[$pid]))" -v w="$((w1 - w0))" \
      'BEGIN {printf "%.3f", ns/w*100}')
    LAB_TICKS[$pid]=$(awk -v t="$(($(cpu_ticks "$pid") - t0[$pid]))" -v w="$((w1 - w0))" \
      'BEGIN {printf "%.2f", t/100*1e9/w*100}')
    LAB_WAKEUPS[$pid]=$(awk -v cs="$(($(ctxsw "$pid") - c0[$pid]))" -v w="$((w1 - w0))" \
      'BEGIN {printf "%.0f", cs/(w/1e9)}')
  done
  LAB_NAPI=""
  if [ "$k1" -gt 0 ]; then
    LAB_NAPI=$(awk -v ns="$((k1 - k0))" -v w="$((w1 - w0))" \
      'BEGIN {printf "NAPI kernel threads (receive paths of the whole lab): %.3f %% of a core", ns/w*100}')
  fi
}
