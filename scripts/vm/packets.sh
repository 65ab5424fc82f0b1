# Scenario 2: real packets. A director pair (d1, d2), three real servers (rs1-3) and a
# client (cl), each in its own namespace, on one bridge. LVS-DR on 198.51.100.10 (the VIP on
# the reals' lo, arp_ignore/arp_announce), LVS-TUN on 198.51.100.9 (the VIP on the reals'
# tunl0, rp_filter off), HTTP checks; the ipvssync resource keeps the connection table of
# the standby in step. This scenario is about the dataplane, and the failovers in it are
# asked for (hactl standby); the heartbeat timers are loose (keepalive 1 s, deadtime 15 s,
# auto_failback off) because the guest is emulated. On a busy host it runs at a fraction
# of its speed, the two debug-built hbds take most of its CPU, and heartbeats arrive up to
# 7 s apart: at deadtime 5 s both directors declared each other dead in the middle of a
# spread, each took the VIPs, and the one the client reached refused connections ("wrr: no
# destination available": a director taking over starts its reals at weight 0 until their
# first check passes). That was the TUN flake of issue 16; the check
# pair-no-false-failover names it should it come back.
. /vm/lib.sh
VIP=198.51.100.10
TVIP=198.51.100.9
at() { n=$1; shift; ip netns exec "$n" "$@"; }
ip link add br0 type bridge; ip link set br0 up
addr() { case $1 in d1) echo 11;; d2) echo 12;; rs1) echo 21;; rs2) echo 22;; rs3) echo 23;; cl) echo 50;; esac; }
for n in d1 d2 rs1 rs2 rs3 cl; do
  ip netns add $n
  ip link add $n-e type veth peer name eth0 netns $n
  ip link set $n-e master br0 up
  ip -n $n link set lo up
  ip -n $n addr add 198.51.100.$(addr $n)/24 dev eth0
  ip -n $n link set eth0 up
done
for n in rs1 rs2 rs3; do
  # The lvs preparation (resources/lvs stop): the VIP on lo, no ARP for it.
  for c in all eth0; do
    at $n sysctl -qw net.ipv4.conf.$c.arp_ignore=1 net.ipv4.conf.$c.arp_announce=2
  done
  ip -n $n addr add $VIP/32 dev lo
  # The tunl preparation: the VIP on tunl0 (ipip), reverse-path filter off.
  ip -n $n link set tunl0 up
  ip -n $n addr add $TVIP/32 dev tunl0
  for c in all tunl0 eth0; do at $n sysctl -qw net.ipv4.conf.$c.rp_filter=0; done
  mkdir -p /www/$n; echo $n >/www/$n/index.html
  # Started by path, not through the shell function `at`: $! must be the server's pid.
  /usr/sbin/ip netns exec $n httpd -f -p 80 -h /www/$n & eval "HTTPD_$n=\$!"
  /usr/sbin/ip netns exec $n env NAME=$n nc -ll -p 9000 -e /vm/echo.sh & eval "ECHO_$n=\$!"
done
for d in d1 d2; do
  at $d sysctl -qw net.ipv4.ip_forward=1
  mkdir -p /ha-$d /tmp/$d
  peer=d2; [ $d = d2 ] && peer=d1
  cat >/ha-$d/ha.cf <<CF
keepalive 1s
deadtime 15s
warntime 8s
initdead 30
ucast eth0 198.51.100.$(addr $peer)
auto_failback off
node d1
node d2
CF
  echo "d1 $VIP/24/eth0 $TVIP/24/eth0 ipvssync::eth0::7 ldirectord::ldirectord.cf" >/ha-$d/haresources
  printf 'auth 1\n1 sha256 vm-pair\n' >/ha-$d/authkeys; chmod 600 /ha-$d/authkeys
  cat >/ha-$d/ldirectord.cf <<CF
# Generous timeouts: the guest is emulated, and slow when the host is busy.
checkinterval=1
checktimeout=5
negotiatetimeout=5
failurecount=2
virtual=$VIP:80
	real=198.51.100.21:80 gate 3
	real=198.51.100.22:80 gate 2
	real=198.51.100.23:80 gate 1
	scheduler=wrr
	service=http
	checktype=negotiate
	request="index.html"
	receive="rs"
virtual=$TVIP:80
	real=198.51.100.21:80 ipip 1
	real=198.51.100.22:80 ipip 2
	real=198.51.100.23:80 ipip 3
	scheduler=wrr
	service=http
	checktype=negotiate
	request="index.html"
	receive="rs"
virtual=$VIP:9000
	real=198.51.100.21:9000 gate
	real=198.51.100.22:9000 gate
	real=198.51.100.23:9000 gate
	scheduler=rr
	checktype=on
CF
  /usr/sbin/ip netns exec $d hbd --ha-dir /ha-$d --node-name $d --state-dir /tmp/$d --socket /tmp/$d/hbd.sock \
    --dataplane ipvs --no-realtime 2>/tmp/$d.log & eval "HBD_$d=\$!"
done
echo "VM-STEP packets: namespaces ready, hbd started"
services() { at $1 ipvsadm -Sn | grep -c '^-A'; }
has_rules() { [ "$(services $1)" = 3 ]; }
until_true 300 has_rules d1; check pair-d1-programs-the-rules $?
holds_vip() { ip -n $1 addr show eth0 | grep -q "$VIP/"; }
until_true 100 holds_vip d1; check pair-d1-holds-the-vip $?
[ "$(services d2)" = 0 ]; check pair-standby-has-no-rules $?
daemons() { at $1 ipvsadm -Ln --daemon; }
runs_daemon() { at $1 ipvsadm -Ln --daemon | grep -q "$2 sync daemon (mcast=eth0, syncid=7"; }
until_true 50 runs_daemon d2 backup; check sync-backup-on-standby $?
daemons d1 | grep -q 'master sync daemon (mcast=eth0, syncid=7'; r=$?
daemons d1 | grep -q backup && r=1
check sync-master-on-active $r

# Requests from the client through a VIP (spread.sh: "name=count " per real).
spread() { at cl sh /vm/spread.sh "$1" "$2"; }
# One request first: when it fails, say why and skip what depends on it.
first=$(spread $VIP 1 2>&1)
case "$first" in "rs"[123]"=1 ") r=0 ;; *) r=1 ;; esac
[ $r = 0 ] || { echo "first request: $first"; at d1 ipvsadm -Ln; at d1 ipvsadm -Lnc; tail -n 20 /tmp/d1.log; ip -n cl neigh; }
check first-request-through-the-vip $r
# Every real of VIP:80 carries weight in d1's IPVS: each comes up as its own check passes,
# later than the first in a slow emulated guest.
all_up() {
  [ "$(at d1 ipvsadm -Ln -t $1:80 | awk '$1 == "->" && $2 ~ /:80$/ && $4 + 0 > 0' | wc -l)" = 3 ]
}
# wrr is exact over whole cycles (6 requests for weights 3+2+1), counted once all three
# carry weight (seen in CI: rs1=16 rs2=10 rs3=4, the spread began before rs3's first check
# passed).
until_true 300 all_up $VIP || { echo "the DR reals are not all up:"; at d1 ipvsadm -Ln -t $VIP:80; }
got=$(spread $VIP 30); echo "DR spread: $got"
[ "$got" = "rs1=15 rs2=10 rs3=5 " ]; check dr-weights-3-2-1 $?
# The same for the tunnel's reals (seen: 5 of 30 requests refused, "wrr: no destination
# available").
until_true 300 all_up $TVIP || { echo "the tunnel's reals are not all up:"; at d1 ipvsadm -Ln -t $TVIP:80; }
got=$(spread $TVIP 30); echo "TUN spread: $got"
[ "$got" = "rs1=5 rs2=10 rs3=15 " ]; check tun-weights-1-2-3 $?

# rs3's web server dies: its check fails, IPVS keeps it at weight 0 (quiescent), and it gets
# no new connection.
kill $HTTPD_rs3
rs3_quiesced() { [ "$(at $1 ipvsadm -Sn | grep -c -- '-r 198.51.100.23:80 -[gi] -w 0')" = 2 ]; }
until_true 300 rs3_quiesced d1; check down-real-quiesced $?
got=$(spread $VIP 20); echo "DR spread with rs3 down: $got"
[ "$got" = "rs1=12 rs2=8 " ]; check down-real-gets-no-new-connections $?

# Every spread above counts on d1 alone holding the VIPs: neither director may have taken
# the other for dead (a false failover moves the VIPs mid-spread).
! grep -q 'node is dead' /tmp/d1.log /tmp/d2.log; check pair-no-false-failover $?

# A long-lived connection through the VIP, then the group moves to d2.
mkfifo /tmp/cin
/usr/sbin/ip netns exec cl nc $VIP 9000 </tmp/cin >/tmp/cout & NC=$!
exec 3>/tmp/cin
echo one >&3; echo two >&3
until_true 50 grep -q ' two$' /tmp/cout; check long-connection-open $?
real=$(awk 'NR == 1 {print $1}' /tmp/cout)
synced() { at d2 ipvsadm -Lnc | grep -q "$VIP:9000"; }
until_true 100 synced; check connection-synced-to-standby $?
hactl --socket /tmp/d1/hbd.sock standby >/dev/null
until_true 200 has_rules d2; check rules-follow-the-vip-to-d2 $?
no_rules() { [ "$(services $1)" = 0 ]; }
until_true 100 no_rules d1; r=$?
[ $r = 0 ] || { at d1 ipvsadm -Sn; grep -v 'real server' /tmp/d1.log | tail -n 25; }
check rules-leave-d1 $r
until_true 50 holds_vip d2; check vip-on-d2 $?
until_true 50 runs_daemon d2 master; check sync-master-follows-to-d2 $?
until_true 50 runs_daemon d1 backup; check sync-backup-on-d1-after-standby $?
# A director that takes over starts its reals at weight 0 until their check passes.
rs12_up() { [ "$(at $1 ipvsadm -Sn | grep -c -- '-r 198.51.100.2[12]:80 -g -w [1-9]')" = 2 ]; }
until_true 300 rs3_quiesced d2
until_true 300 rs12_up d2
got=$(spread $VIP 5); echo "DR spread through d2: $got"
[ "$got" = "rs1=3 rs2=2 " ]; r=$?
check new-connections-through-d2 $r
echo three >&3
until_true 50 grep -q ' three$' /tmp/cout; r=$?
[ "$(awk '{print $1}' /tmp/cout | sort -u)" = "$real" ] || r=1
kill -0 $NC 2>/dev/null || r=1
[ $r = 0 ] || { cat /tmp/cout; at d2 ipvsadm -Lnc; }
check long-connection-survives-failover $r

# d2's hbd dies (SIGKILL: no stop runs). d1 declares it dead after deadtime, takes the
# VIPs, programs the rules and becomes the sync master; the long connection, whose entry
# d2's master synced to d1's backup, goes on through d1 to the same real.
synced_back() { at d1 ipvsadm -Lnc | grep -q "$VIP:9000"; }
until_true 100 synced_back; check connection-synced-back-to-d1 $?
kill -KILL $HBD_d2
until_true 400 holds_vip d1; check sigkill-d1-takes-the-vip $?
until_true 200 has_rules d1; check sigkill-rules-on-d1 $?
until_true 100 runs_daemon d1 master; check sigkill-sync-master-on-d1 $?
echo four >&3
until_true 100 grep -q ' four$' /tmp/cout; r=$?
[ "$(awk '{print $1}' /tmp/cout | sort -u)" = "$real" ] || r=1
kill -0 $NC 2>/dev/null || r=1
[ $r = 0 ] || { cat /tmp/cout; at d1 ipvsadm -Lnc; }
check long-connection-survives-sigkill $r
until_true 300 rs12_up d1
got=$(spread $VIP 5); echo "DR spread through d1 after SIGKILL: $got"
[ "$got" = "rs1=3 rs2=2 " ]; check new-connections-after-sigkill $?
exec 3>&-

kill -TERM $HBD_d1 $HBD_d2 2>/dev/null
gone() { ! kill -0 "$1" 2>/dev/null; }
for d in d1 d2; do eval "p=\$HBD_$d"; until_true 100 gone $p; done
for d in d1 d2; do echo "== $d log (last lines)"; tail -n 6 /tmp/$d.log; done
# A failed check: both directors' logs (without the per-message lines), for the reader.
if [ -n "$FAILED" ]; then
  for d in d1 d2; do grep -v 'heartbeat message\|the peer is a heartbeat' /tmp/$d.log | sed "s/^/$d: /"; done
fi
kill $NC $HTTPD_rs1 $HTTPD_rs2 $ECHO_rs1 $ECHO_rs2 $ECHO_rs3 2>/dev/null
