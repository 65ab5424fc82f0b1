#!/usr/bin/env bash
# The demo director pair, end to end, in network namespaces (scripts/lab.sh): two hbd nodes
# with an unchanged Linux-HA directory whose group is the VIP and the director
# (ldirectord::ldirectord.cf). The client's requests spread over three real servers by
# weight (3:2:1), a real server fails its check and is taken out, all fail and the
# fallback answers; then the active director's link is cut and the VIP and the rules move
# to the other director, the link is restored, then a planned standby and takeover;
# everything is cleaned up, even on failure. Run as root on a fresh Debian 12 machine:
# bash scripts/demo.sh
#
# Forwarding is LVS-NAT (masq): this kernel may have no IPVS, and hbd's nftables dataplane
# forwards by DNAT. The real servers' replies to the client go back through the VIP (a
# host route via the VIP on each real server), so they follow it on failover.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
source scripts/lab-lib.sh
[ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"

echo "== building hbd"
cargo build --quiet --bins --examples
BIN=$PWD/target/debug
VIP=192.0.2.10
WORK=$(mktemp -d /tmp/hbd-demo.XXXXXX)
remove_work() { rm -rf "$WORK"; }
lab_on_exit remove_work

echo "== lab: bridge, directors dir1 (.11) and dir2 (.12), client (.100), real servers (.21-.23)"
lab_up

# LVS-NAT: the real servers drop the VIP from lo (lab.sh prepares them for LVS-DR) and send
# their replies to the client through the VIP, wherever it is. The directors forward those
# replies out of the interface they came in on, so they must not send ICMP redirects.
for rs in rs1 rs2 rs3; do
  ip netns exec "hbdlab-$rs" resources/tunl "$VIP" lo stop >/dev/null
  ip -n "hbdlab-$rs" route add 192.0.2.100/32 via "$VIP"
done
for d in dir1 dir2; do
  for i in all eth0; do ip netns exec "hbdlab-$d" sh -c "echo 0 > /proc/sys/net/ipv4/conf/$i/send_redirects"; done
done

# One Linux-HA directory shared by both directors, heartbeat syntax throughout. The lvs
# script (resources/lvs) prepares the node as director on start and as real server on stop;
# ldirectord runs hbd's built-in director on the node that holds the group.
bash scripts/lab.sh ha-dir "$WORK/ha.d" "dir1 lvs::$VIP::lo IPaddr::$VIP/24/eth0 ldirectord::ldirectord.cf" "sha256 demo-only-secret"
cat >"$WORK/ha.d/ldirectord.cf" <<CF
checktimeout=1
checkinterval=1
quiescent=no
# When no real server is up, the director holding the VIP answers itself.
fallback=$VIP:80 masq

virtual=$VIP:80
	real=192.0.2.21:80 masq 3
	real=192.0.2.22:80 masq 2
	real=192.0.2.23:80 masq 1
	service=http
	request="/"
	receive="rs"
	scheduler=wrr
CF
echo "== hbd --check-config"
"$BIN/hbd" --check-config --ha-dir "$WORK/ha.d" --node-name dir1

distribution() { # requests: who answered, counted
  local n=$1 i
  for i in $(seq "$n"); do printf '%s\n' "$(ask_vip 1 "(no answer)")"; done | sort | uniq -c | awk '{printf "%s=%s ", $2, $1} END {print ""}'
}
wait_answers() { # what pattern: until 12 requests in a row match (bounded, ~10 s)
  local i last
  for i in $(seq 50); do
    last=$(distribution 12)
    if grep -Eq "$2" <<<"$last"; then return 0; fi
    sleep 0.1
  done
  echo "timed out waiting for: $1 (last answers: $last)" >&2
  tail -n 20 "$WORK"/dir*/log >&2
  return 1
}
labweb_pid() { cat "/run/hbdlab/$1.pid"; }

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
wait_answers "every real server serving" '^rs1=[0-9]+ rs2=[0-9]+ rs3=[0-9]+ $'
echo "== the client's 60 requests by real server (weights 3:2:1): $(distribution 60)"
echo "== hactl ipvs on dir1"; ip netns exec hbdlab-dir1 "$BIN/hactl" ipvs

echo; echo "== rs2's web server dies: its check fails and the director takes it out"
kill "$(labweb_pid rs2)"
wait_answers "rs2 out" '^rs1=[0-9]+ rs3=[0-9]+ $'
echo "== 60 requests: $(distribution 60)"
hactl dir1 checks

echo; echo "== rs1 and rs3 die too: no real server is up, the fallback answers"
kill "$(labweb_pid rs1)" "$(labweb_pid rs3)"
wait_answers "fallback" '^dir1=12 $'
echo "== 12 requests: $(distribution 12)"
hactl dir1 checks

echo; echo "== the real servers come back"
for rs in rs1 rs2 rs3; do
  ip netns exec "hbdlab-$rs" "$BIN/examples/labweb" --listen 0.0.0.0:80 --name "$rs" >/dev/null 2>&1 &
  lab_track $!
done
wait_answers "every real server back" '^rs1=[0-9]+ rs2=[0-9]+ rs3=[0-9]+ $'
echo "== 60 requests: $(distribution 60)"

echo; echo "== cutting dir1's link while the client probes the VIP every 2 ms"
probe_bg 1500 "$WORK/probe"
sleep 0.5
ip -n hbdlab-dir1 link set eth0 down
probe_wait
wait_owner dir2 dir2
echo "   outage seen by the client: $(cat "$WORK/probe")"
wait_answers "served through dir2" '^rs1=[0-9]+ rs2=[0-9]+ rs3=[0-9]+ $'
echo "== the rules followed the VIP: 60 requests through dir2: $(distribution 60)"
echo "== hactl ipvs on dir2"; ip netns exec hbdlab-dir2 "$BIN/hactl" ipvs
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
