#!/usr/bin/env bash
# The demo director pair, end to end, in network namespaces (scripts/lab.sh): two hbd nodes
# with an unchanged Linux-HA directory, the VIP on the preferred director, a client asking
# the VIP who answers; the active director's link is cut, the VIP answers from the other
# director, the link is restored, then a planned standby and takeover; everything is
# cleaned up. Run as root on a fresh Debian 12 machine: bash scripts/demo.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
source scripts/lab-lib.sh
[ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"

echo "== building hbd"
cargo build --quiet --bins
BIN=$PWD/target/debug
VIP=192.0.2.10
WORK=$(mktemp -d /tmp/hbd-demo.XXXXXX)
remove_work() { rm -rf "$WORK"; }
lab_on_exit remove_work

echo "== lab: bridge, directors dir1 (.11) and dir2 (.12), client (.100), real servers (.21-.23)"
lab_up

# One Linux-HA directory shared by both directors, heartbeat syntax throughout. The lvs
# script (resources/lvs) prepares the node as director on start and as real server on stop.
bash scripts/lab.sh ha-dir "$WORK/ha.d" "dir1 lvs::$VIP::lo IPaddr::$VIP/24/eth0" "sha256 demo-only-secret"
echo "== hbd --check-config"
"$BIN/hbd" --check-config --ha-dir "$WORK/ha.d" --node-name dir1

wait_owner() { # node-to-ask group-owner
  for _ in $(seq 1 200); do
    if hactl "$1" status --json 2>/dev/null | tr -d ' \n' | grep -q "\"owner\":\"$2\""; then return 0; fi
    sleep 0.02
  done
  echo "timed out waiting for $2 to own the group (asking $1)" >&2; return 1
}

start_node dir1
start_node dir2
wait_owner dir1 dir1
wait_owner dir2 dir1
echo; echo "== hactl status on dir1"; hactl dir1 status
echo "== client asks the VIP: $(ask_vip 1 "(no answer)")"

echo; echo "== cutting dir1's link while the client probes the VIP every 2 ms"
probe_bg 1500 "$WORK/probe"
sleep 0.5
ip -n hbdlab-dir1 link set eth0 down
probe_wait
wait_owner dir2 dir2
echo "   outage seen by the client: $(cat "$WORK/probe")"
echo "== client asks the VIP: $(ask_vip 1 "(no answer)")"
hactl dir2 status

echo; echo "== restoring dir1's link (auto_failback on: dir1 keeps the VIP, dir2 lets go)"
ip -n hbdlab-dir1 link set eth0 up
wait_owner dir2 dir1
echo "== client asks the VIP: $(ask_vip 1 "(no answer)")"

echo; echo "== hactl standby on dir1 (planned move)"
probe_bg 1000 "$WORK/probe"
sleep 0.3
hactl dir1 standby
probe_wait
wait_owner dir1 dir2
echo "   outage seen by the client: $(cat "$WORK/probe")"
echo "== client asks the VIP: $(ask_vip 1 "(no answer)")"
echo; echo "== hactl takeover on dir1"
hactl dir1 takeover
wait_owner dir2 dir1
echo "== client asks the VIP: $(ask_vip 1 "(no answer)")"
hactl dir1 status
echo; echo "== dir2's log (last lines)"
tail -n 12 "$WORK/dir2/log"
echo "== demo done"
