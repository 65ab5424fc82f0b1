# Scenario 1: one director node programs every kind of service; ipvsadm is the oracle.
. /vm/lib.sh
mkdir -p /ha /tmp/st
# One node of a pair whose peer never answers: it takes the group after initdead.
# checktype = on: no check traffic, every real up at its weight.
cat >/ha/ha.cf <<'CF'
keepalive 50ms
deadtime 500ms
warntime 200ms
initdead 1
ucast eth0 198.51.100.12
auto_failback on
node dir1
node dir2
CF
echo "dir1 ldirectord::ldirectord.cf" >/ha/haresources
printf 'auth 1\n1 sha256 vm-ipvs\n' >/ha/authkeys
chmod 600 /ha/authkeys
cat >/ha/ldirectord.cf <<'CF'
checkinterval=1
virtual=192.0.2.10:80
	real=198.51.100.21:80 gate 3
	real=198.51.100.22:80 ipip 2
	real=198.51.100.23:8080 masq 1 <l:10> <u:100>
	scheduler=wrr
	checktype=on
virtual=192.0.2.10:443
	real=198.51.100.21:443 gate
	real=198.51.100.22:443 gate 0
	scheduler=sh
	persistent=300
	netmask=255.255.255.0
	checktype=on
virtual=192.0.2.53:53
	real=198.51.100.21:53 gate
	protocol=udp
	scheduler=rr
	checktype=on
virtual=7
	real=198.51.100.21 gate 5
	scheduler=wlc
	checktype=on
virtual=192.0.2.11:80
	real=198.51.100.21:80 gate
	scheduler=lc
	checktype=on
virtual=192.0.2.12:80
	real=198.51.100.21:80 gate
	scheduler=sed
	checktype=on
virtual=192.0.2.13:80
	real=198.51.100.21:80 gate
	scheduler=nq
	checktype=on
virtual=192.0.2.14:80
	real=198.51.100.21:80 gate
	scheduler=dh
	checktype=on
virtual=192.0.2.15:80
	real=198.51.100.21:80 gate
	scheduler=lblc
	checktype=on
virtual=192.0.2.16:80
	real=198.51.100.21:80 gate
	scheduler=lblcr
	checktype=on
virtual=192.0.2.17:80
	real=198.51.100.21:80 gate
	real=198.51.100.22:80 gate
	scheduler=mh
	checktype=on
CF
# What hbd means, in ipvsadm-save -n order (sorted: the kernel lists by hash bucket).
cat >/ha/expected <<'EX'
-A -f 7 -s wlc
-A -t 192.0.2.10:443 -s sh -p 300 -M 255.255.255.0
-A -t 192.0.2.10:80 -s wrr
-A -t 192.0.2.11:80 -s lc
-A -t 192.0.2.12:80 -s sed
-A -t 192.0.2.13:80 -s nq
-A -t 192.0.2.14:80 -s dh
-A -t 192.0.2.15:80 -s lblc
-A -t 192.0.2.16:80 -s lblcr
-A -t 192.0.2.17:80 -s mh
-A -u 192.0.2.53:53 -s rr
-a -f 7 -r 198.51.100.21:0 -g -w 5
-a -t 192.0.2.10:443 -r 198.51.100.21:443 -g -w 1
-a -t 192.0.2.10:443 -r 198.51.100.22:443 -g -w 0
-a -t 192.0.2.10:80 -r 198.51.100.21:80 -g -w 3
-a -t 192.0.2.10:80 -r 198.51.100.22:80 -i -w 2
-a -t 192.0.2.10:80 -r 198.51.100.23:8080 -m -w 1 -x 100 -y 10
-a -t 192.0.2.11:80 -r 198.51.100.21:80 -g -w 1
-a -t 192.0.2.12:80 -r 198.51.100.21:80 -g -w 1
-a -t 192.0.2.13:80 -r 198.51.100.21:80 -g -w 1
-a -t 192.0.2.14:80 -r 198.51.100.21:80 -g -w 1
-a -t 192.0.2.15:80 -r 198.51.100.21:80 -g -w 1
-a -t 192.0.2.16:80 -r 198.51.100.21:80 -g -w 1
-a -t 192.0.2.17:80 -r 198.51.100.21:80 -g -w 1
-a -t 192.0.2.17:80 -r 198.51.100.22:80 -g -w 1
-a -u 192.0.2.53:53 -r 198.51.100.21:53 -g -w 1
EX
unthreshold </ha/expected >/ha/expected.saved
ours() { saved | grep -v 203.0.113.1; }
as_meant() { ours | diff -q - "${1:-/ha/expected.saved}" >/dev/null; }

ip link add name eth0 type veth
ip addr add 198.51.100.11/24 dev eth0; ip link set eth0 up
ip addr add 198.51.100.13/24 dev veth0; ip link set veth0 up
# Someone else's service, which hbd must leave alone.
ipvsadm -A -t 203.0.113.1:25 -s rr
ipvsadm -a -t 203.0.113.1:25 -r 198.51.100.30:25 -g
start_hbd() {
  hbd --ha-dir /ha --node-name dir1 --state-dir /tmp/st --socket /tmp/st/hbd.sock \
    --dataplane ipvs --no-realtime 2>>/tmp/hbd.log &
  HBD=$!
}
start_hbd
until_true 300 as_meant; check programmed $?
ours | diff /ha/expected.saved -; check rules-as-meant $?
# `  -> RemoteAddress:Port  Uthreshold Lthreshold ActiveConn InActConn`
row=$(ipvsadm -Ln --thresholds | awk '$2 == "198.51.100.23:8080" {print $3, $4}')
[ "$row" = "100 10" ]; r=$?
[ $r = 0 ] || ipvsadm -Ln --thresholds
check thresholds $r
saved | grep -q -- '-a -t 203.0.113.1:25 -r 198.51.100.30:25 -g -w 1'; check foreign-service-kept $?
ipvsadm -Ln >/tmp/ipvsadm.txt; hactl ipvs >/tmp/hactl.txt
diff /tmp/ipvsadm.txt /tmp/hactl.txt; check hactl-ipvs-equals-ipvsadm-Ln $?
ipvsadm -Ln --persistent-conn >/tmp/ipvsadm-p.txt; hactl ipvs --persistent-conn >/tmp/hactl-p.txt
diff /tmp/ipvsadm-p.txt /tmp/hactl-p.txt; check hactl-persistent-conn-equals-ipvsadm $?
head -1 /tmp/hactl.txt | grep -q '^IP Virtual Server version [0-9]*\.[0-9]*\.[0-9]* (size=[0-9]*)$'
check version-line $?
ipvsadm -Sn | sed 's/ --tun-type ipip$//' >/tmp/save1; hactl ipvs save | unthreshold >/tmp/save2
diff /tmp/save1 /tmp/save2; check hactl-save-equals-ipvsadm-Sn $?

# Changes by hand to hbd's own services are put back within a check interval (1 s here).
ipvsadm -d -t 192.0.2.10:80 -r 198.51.100.22:80
ipvsadm -e -t 192.0.2.10:80 -r 198.51.100.21:80 -g -w 9
ipvsadm -D -t 192.0.2.11:80
ipvsadm -E -t 192.0.2.12:80 -s rr
ipvsadm -a -t 192.0.2.13:80 -r 198.51.100.99:80 -g
until_true 50 as_meant; r=$?
[ $r = 0 ] || ours | diff /ha/expected.saved -
check hand-changes-put-back $r
grep -q 'changed by hand' /tmp/hbd.log; check hand-changes-logged $?
saved | grep -q -- '-a -t 203.0.113.1:25 -r 198.51.100.30:25 -g -w 1'
check foreign-service-kept-by-repair $?

# Reload: rs1's weight 3 -> 7 on the first service.
sed -i 's/real=198.51.100.21:80 gate 3/real=198.51.100.21:80 gate 7/' /ha/ldirectord.cf
sed 's/-r 198.51.100.21:80 -g -w 3/-r 198.51.100.21:80 -g -w 7/' /ha/expected.saved >/ha/expected.7
hactl --socket /tmp/st/hbd.sock reload >/dev/null
as_meant /ha/expected.7; check reload-applied $?
# A refused reload (a typo) keeps the rules.
cp /ha/ldirectord.cf /tmp/good.cf
echo "	real=nonsense" >>/ha/ldirectord.cf
hactl --socket /tmp/st/hbd.sock reload 2>/dev/null && r=1 || r=0
check bad-reload-refused $r
as_meant /ha/expected.7; check rules-kept-after-refusal $?
cp /tmp/good.cf /ha/ldirectord.cf

# A crash (SIGKILL) leaves the rules; the restarted hbd adopts them: nothing to change.
kill -KILL $HBD; wait $HBD 2>/dev/null
as_meant /ha/expected.7; check rules-survive-a-crash $?
: >/tmp/hbd.log
start_hbd
until_true 300 grep -q 'dataplane programmed' /tmp/hbd.log
grep 'dataplane programmed' /tmp/hbd.log | grep -q 'changes=0'; r=$?
[ $r = 0 ] || grep 'dataplane programmed' /tmp/hbd.log
check restart-adopts-without-changes $r
as_meant /ha/expected.7; check rules-as-meant-after-restart $?

# SIGTERM: hbd releases the group, cleanstop removes what it created, nothing else.
kill -TERM $HBD
gone() { ! kill -0 "$1" 2>/dev/null; }
until_true 100 gone $HBD; check hbd-stopped $?
[ "$(saved | grep -c '^-A')" = 1 ] && saved | grep -q -- '-A -t 203.0.113.1:25'
check stop-removes-only-its-own $?
echo "== hbd log (last lines)"; tail -n 8 /tmp/hbd.log
ipvsadm -C
ip link del eth0
