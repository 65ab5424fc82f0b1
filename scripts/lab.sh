#!/bin/bash
# lab.sh: a network-namespace lab for an LVS director pair.
#
#   scripts/lab.sh up|down|status
#   scripts/lab.sh ha-dir DIR 'HARESOURCES LINE' 'AUTHKEY'   (e.g. 'sha1 secret')
#   scripts/lab.sh napi [on|off]      (needs ethtool; default on)
#
# `ha-dir` writes the pair's unchanged-heartbeat-syntax configuration for this lab into DIR:
# ha.cf (dir1 and dir2 over ucast on eth0, keepalive 10ms, deadtime 30ms, warntime 20ms,
# initdead 1, auto_failback on), haresources (the one line given) and authkeys (key 1, mode
# 600). The demo and the failover benchmark both use it.
#
# Topology (one LAN, 192.0.2.0/24, TEST-NET-1, no route out of the lab):
#
#   hbdlab-br      bridge br0 with one port per host
#   hbdlab-dir1    director 1      192.0.2.11  (labweb on :80 answering "dir1")
#   hbdlab-dir2    director 2      192.0.2.12  (labweb on :80 answering "dir2")
#   hbdlab-client  client          192.0.2.100
#   hbdlab-rs1..3  real servers    192.0.2.21-23, each running labweb on :80 that
#                  answers with its name; VIP 192.0.2.10 on lo, hidden from ARP
#                  (resources/tunl with DEV=lo), ready for LVS-DR.
#
# `napi` moves every lab veth's receive processing into threaded NAPI (GRO on, UDP GRO
# forwarding on, /sys/class/net/DEV/threaded = 1). By default a veth delivers a frame in the
# sender's system call: the bridge and the receiver's whole IP/UDP stack are billed to the
# sending process, which two real machines would never do. The failover benchmark measures
# idle CPU both ways. `napi off` restores the default.
#
# Each host's interface is eth0. `down` kills only the PIDs it recorded and deletes every
# hbdlab-* namespace it created; a failed `up` runs it before exiting, so the next `up` can
# start over. Run as root. HBD_LABWEB overrides the server binary (default:
# target/debug/examples/labweb, built with cargo when missing).

set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
RUN=/run/hbdlab
VIP=192.0.2.10
BR=hbdlab-br
# name address
HOSTS=(
    "dir1 192.0.2.11"
    "dir2 192.0.2.12"
    "client 192.0.2.100"
    "rs1 192.0.2.21"
    "rs2 192.0.2.22"
    "rs3 192.0.2.23"
)
LABWEB=${HBD_LABWEB:-$ROOT/target/debug/examples/labweb}

die() { echo "lab.sh: $*" >&2; exit 1; }
ns_exists() { ip netns list | awk '{print $1}' | grep -qx "$1"; }

up() {
    [ "$(id -u)" = 0 ] || die "must run as root"
    ns_exists "$BR" && die "lab already up (run: $0 down)"
    if [ ! -x "$LABWEB" ]; then
        (cd "$ROOT" && cargo build --quiet --example labweb) || die "cannot build examples/labweb"
    fi
    # From here on a failure tears the half-built lab down, so the next `up` can start over.
    trap 'rc=$?; [ "$rc" = 0 ] || { echo "lab.sh: up failed; removing the half-built lab" >&2; down >/dev/null 2>&1; }' EXIT
    mkdir -p "$RUN"
    ip netns add "$BR"
    ip -n "$BR" link set lo up
    ip -n "$BR" link add br0 type bridge
    ip -n "$BR" link set br0 up
    for h in "${HOSTS[@]}"; do
        set -- $h
        local name=$1 addr=$2 ns=hbdlab-$1
        ip netns add "$ns"
        ip -n "$ns" link set lo up
        ip -n "$BR" link add "$name" type veth peer name eth0 netns "$ns"
        ip -n "$BR" link set "$name" master br0
        ip -n "$BR" link set "$name" up
        ip -n "$ns" addr add "$addr/24" dev eth0
        ip -n "$ns" link set eth0 up
        case $name in
        rs*) ip netns exec "$ns" "$ROOT/resources/tunl" "$VIP" lo start >/dev/null ;;
        esac
        case $name in
        rs* | dir*)
            # Real servers answer with their name; directors too, on the VIP itself, so a
            # client sees which one holds it.
            ip netns exec "$ns" "$LABWEB" --listen 0.0.0.0:80 --name "$name" \
                >"$RUN/$name.log" 2>&1 &
            echo $! >"$RUN/$name.pid"
            ;;
        esac
    done
    # Wait (bounded) until every web server answers on its real address.
    for h in "${HOSTS[@]}"; do
        set -- $h
        case $1 in rs*) ;; *) continue ;; esac
        local ok=
        for _ in $(seq 50); do
            if ip netns exec hbdlab-client curl -s -m 1 "http://$2/" >/dev/null 2>&1; then ok=1; break; fi
            sleep 0.1
        done
        # (`down` removes the log with the rest of the lab: quote it here)
        [ -n "$ok" ] || die "$1 ($2) does not answer; its log: $(cat "$RUN/$1.log" 2>/dev/null)"
    done
    trap - EXIT
    echo "lab up: directors 192.0.2.11/.12, client .100, real servers .21-.23, VIP $VIP"
}

down() {
    if [ -d "$RUN" ]; then
        for f in "$RUN"/*.pid; do
            [ -e "$f" ] || continue
            kill "$(cat "$f")" 2>/dev/null || true
            rm -f "$f"
        done
        rm -f "$RUN"/*.log
        rmdir "$RUN" 2>/dev/null || true
    fi
    for h in "${HOSTS[@]}"; do
        set -- $h
        ns_exists "hbdlab-$1" && ip netns del "hbdlab-$1"
    done
    ns_exists "$BR" && ip netns del "$BR"
    echo "lab down"
}

status() {
    local rc=0
    for ns in "$BR" $(for h in "${HOSTS[@]}"; do set -- $h; echo "hbdlab-$1"; done); do
        if ns_exists "$ns"; then
            printf '%-14s up   %s\n' "$ns" "$(ip -n "$ns" -o -4 addr show scope global 2>/dev/null | awk '{print $4}' | paste -sd' ')"
        else
            printf '%-14s DOWN\n' "$ns"; rc=1
        fi
    done
    for h in "${HOSTS[@]}"; do
        set -- $h
        case $1 in rs*) ;; *) continue ;; esac
        if ns_exists hbdlab-client; then
            local got
            got=$(ip netns exec hbdlab-client curl -s -m 1 "http://$2/" 2>/dev/null || true)
            printf '%-14s http://%s/ -> %s\n' "$1" "$2" "${got:-NO ANSWER}"
            [ "$got" = "$1" ] || rc=1
        fi
    done
    return $rc
}

ha_dir() {
    local dir=${1:?ha-dir needs DIR HARESOURCES AUTHKEY} res=${2:?ha-dir needs a haresources line} key=${3:?ha-dir needs an auth key, e.g. "sha1 secret"}
    mkdir -p "$dir"
    cat >"$dir/ha.cf" <<CF
keepalive 10ms
deadtime 30ms
warntime 20ms
initdead 1
udpport 694
ucast eth0 192.0.2.11
ucast eth0 192.0.2.12
auto_failback on
node dir1
node dir2
CF
    echo "$res" >"$dir/haresources"
    printf 'auth 1\n1 %s\n' "$key" >"$dir/authkeys"
    chmod 600 "$dir/authkeys"
}

napi() {
    [ "$(id -u)" = 0 ] || die "must run as root"
    command -v ethtool >/dev/null || die "napi needs ethtool (apt-get install ethtool)"
    local mode=${1:-on} ns dev
    case $mode in on | off) ;; *) die "napi takes on or off, not '$mode'" ;; esac
    for ns in $(ip netns list | awk '{print $1}' | grep '^hbdlab-'); do
        for dev in $(ip -n "$ns" -o link show type veth | awk -F': ' '{print $2}' | cut -d@ -f1); do
            # NAPI exists only while GRO is on: threads go after `gro on`, before `gro off`.
            if [ "$mode" = off ]; then
                ip netns exec "$ns" sh -c "echo 0 > /sys/class/net/$dev/threaded" \
                    || die "threaded NAPI off on $dev in $ns failed"
            fi
            ip netns exec "$ns" ethtool -K "$dev" gro "$mode" rx-udp-gro-forwarding "$mode" >/dev/null \
                || die "ethtool -K $dev in $ns failed"
            if [ "$mode" = on ]; then
                ip netns exec "$ns" sh -c "echo 1 > /sys/class/net/$dev/threaded" \
                    || die "threaded NAPI on $dev in $ns failed"
            fi
        done
    done
}

case "${1:-}" in
up) up ;;
napi) napi "${2:-on}" ;;
down) down ;;
status) status ;;
ha-dir) shift; ha_dir "$@" ;;
*) echo "usage: $0 up|down|status|napi [on|off]|ha-dir DIR HARESOURCES AUTHKEY" >&2; exit 2 ;;
esac
