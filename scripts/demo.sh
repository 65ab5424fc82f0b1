#!/usr/bin/env bash
# The demo director pair: two hbd nodes in network namespaces, heartbeating over ucast and
# mcast with an unchanged Linux-HA configuration directory. Shows `hactl status` on both,
# cuts one director's link, shows the peer declared dead, restores it, and cleans up.
# Run as root on a fresh Debian 12 machine: bash scripts/demo.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
[ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"

echo "== building hbd"
cargo build --quiet --bins
HBD=$PWD/target/debug/hbd
HACTL=$PWD/target/debug/hactl

tag="hbdd$$"
NS1="${tag}a"; NS2="${tag}b"
WORK=$(mktemp -d /tmp/hbd-demo.XXXXXX)
pids=()
cleanup() {
  set +e
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null; done
  ip netns del "$NS1" 2>/dev/null
  ip netns del "$NS2" 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT

echo "== lab: $NS1 (loadbalancer, 192.0.2.11) <-> $NS2 (backup, 192.0.2.12)"
ip netns add "$NS1"; ip netns add "$NS2"
ip link add "${tag}x" netns "$NS1" type veth peer name "${tag}y" netns "$NS2"
ip -n "$NS1" link set "${tag}x" name eth0
ip -n "$NS2" link set "${tag}y" name eth0
ip -n "$NS1" addr add 192.0.2.11/24 dev eth0
ip -n "$NS2" addr add 192.0.2.12/24 dev eth0
for ns in "$NS1" "$NS2"; do ip -n "$ns" link set lo up; ip -n "$ns" link set eth0 up; done

# One Linux-HA directory shared by both nodes, as heartbeat users have it: the ucast line to
# the node's own address is skipped on that node.
mkdir -p "$WORK/ha.d"
cat > "$WORK/ha.d/ha.cf" <<CF
logfacility local0
keepalive 100ms
deadtime 500ms
warntime 300ms
initdead 2
udpport 694
ucast eth0 192.0.2.11
ucast eth0 192.0.2.12
mcast eth0 239.0.2.94 694 1 0
auto_failback on
node loadbalancer
node backup
CF
cat > "$WORK/ha.d/haresources" <<'HR'
loadbalancer lvs IPaddr::192.0.2.100/24/eth0 ipvsadm ldirectord
HR
printf 'auth 1\n1 sha256 demo-only-secret\n' > "$WORK/ha.d/authkeys"
chmod 600 "$WORK/ha.d/authkeys"

echo "== hbd --check-config"
"$HBD" --check-config --ha-dir "$WORK/ha.d" --node-name loadbalancer

start_node() { # ns name
  mkdir -p "$WORK/$2"
  ip netns exec "$1" "$HBD" --ha-dir "$WORK/ha.d" --node-name "$2" \
    --state-dir "$WORK/$2" --socket "$WORK/$2/hbd.sock" 2>"$WORK/$2/log" &
  pids+=($!)
}
start_node "$NS1" loadbalancer
start_node "$NS2" backup

wait_status() { # node peer wanted-status
  for _ in $(seq 1 100); do
    if "$HACTL" --socket "$WORK/$1/hbd.sock" status --json 2>/dev/null \
       | tr -d ' \n' | grep -q "\"name\":\"$2\",\"status\":\"$3\""; then return 0; fi
    sleep 0.05
  done
  echo "timed out waiting for $2 to be $3 on $1" >&2; return 1
}
wait_status loadbalancer backup up
wait_status backup loadbalancer up

echo; echo "== hactl status on loadbalancer"
"$HACTL" --socket "$WORK/loadbalancer/hbd.sock" status
echo; echo "== hactl status on backup"
"$HACTL" --socket "$WORK/backup/hbd.sock" status

echo; echo "== cutting loadbalancer's link"
t0=$(date +%s%N)
ip -n "$NS1" link set eth0 down
wait_status backup loadbalancer dead
t1=$(date +%s%N)
echo "backup declared loadbalancer dead $(( (t1 - t0) / 1000000 )) ms after the cut (deadtime 500 ms)"
"$HACTL" --socket "$WORK/backup/hbd.sock" status

echo; echo "== restoring the link"
ip -n "$NS1" link set eth0 up
wait_status backup loadbalancer up
"$HACTL" --socket "$WORK/backup/hbd.sock" status
echo; echo "== backup's log"
sed -n '1,40p' "$WORK/backup/log"
echo "== demo done"
