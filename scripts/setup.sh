#!/usr/bin/env bash
# Installs what hbd needs to build, test and run its demo on a fresh Debian 12 machine (as root).
# Idempotent: only missing pieces are installed.
set -euo pipefail

need_pkgs=()
for pair in ip:iproute2 nft:nftables socat:socat; do
  cmd=${pair%%:*}; pkg=${pair#*:}
  command -v "$cmd" >/dev/null 2>&1 || need_pkgs+=("$pkg")
done
command -v cc >/dev/null 2>&1 || need_pkgs+=(gcc libc6-dev)
command -v curl >/dev/null 2>&1 || need_pkgs+=(curl ca-certificates)
# The package tests: systemd-analyze verifies the unit.
command -v systemd-analyze >/dev/null 2>&1 || need_pkgs+=(systemd)
# The VRRP interop tests run Debian's keepalived as the peer; the director's tests read
# conntrack with the conntrack tool as the oracle.
command -v keepalived >/dev/null 2>&1 || need_pkgs+=(keepalived)
command -v conntrack >/dev/null 2>&1 || need_pkgs+=(conntrack)
# The conntrackd resource runs Debian's conntrackd (conntrack-tools); tests/e2e/conntrackd.rs.
[ -x /usr/sbin/conntrackd ] || need_pkgs+=(conntrackd)
# ha.cf's stonith/stonith_host drive cluster-glue's stonith(8); a test runs its null plugin.
[ -x /usr/sbin/stonith ] || need_pkgs+=(cluster-glue)
# The mixed-pair tests (tests/e2e/mixed.rs) run Debian's heartbeat 3.0.6 as the peer.
[ -x /usr/libexec/heartbeat/heartbeat ] || need_pkgs+=(heartbeat)
# The IPVS tier (scripts/vm-ipvs.sh): Debian's kernel under qemu with a busybox initramfs;
# the script downloads linux-image-amd64 itself (unpacked, never installed).
for pair in qemu-system-x86_64:qemu-system-x86 busybox:busybox-static depmod:kmod cpio:cpio \
  ipvsadm:ipvsadm; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || need_pkgs+=("${pair#*:}")
done
# The service-check tests (tests/e2e/services.rs) run the real servers ldirectord users
# check, each in its own namespace; policy-rc.d below keeps their packages from starting them.
for pair in dnsmasq:dnsmasq-base vsftpd:vsftpd exim4:exim4-daemon-light dovecot:dovecot-imapd \
  slapd:slapd mariadbd:mariadb-server freeradius:freeradius; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || need_pkgs+=("${pair#*:}")
done
[ -e /usr/lib/dovecot/pop3 ] || need_pkgs+=(dovecot-pop3d)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need_pkgs+=(postgresql)
apt_updated=
if [ ${#need_pkgs[@]} -gt 0 ]; then
  echo "setup: installing ${need_pkgs[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt_updated=1
  # Install only: no service of these packages (keepalived, heartbeat) is started here; the tests
  # start their own peers in namespaces.
  policy=/usr/sbin/policy-rc.d
  [ -e "$policy" ] || { printf '#!/bin/sh\nexit 101\n' >"$policy"; chmod 755 "$policy"; added_policy=1; }
  apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
  [ -z "${added_policy:-}" ] || rm -f "$policy"
fi

# promtool validates the metrics in the tests. Debian ships it only inside the prometheus
# package, whose installation would start a Prometheus server: unpack the binary instead.
if ! command -v promtool >/dev/null 2>&1 && [ ! -x /opt/hbd-tools/usr/bin/promtool ]; then
  echo "setup: unpacking promtool from Debian's prometheus package into /opt/hbd-tools"
  tmp=$(mktemp -d)
  [ -n "$apt_updated" ] || apt-get update -qq
  (cd "$tmp" && apt-get download prometheus >/dev/null)
  mkdir -p /opt/hbd-tools
  dpkg-deb -x "$tmp"/prometheus_*.deb "$tmp/x"
  install -D -m 0755 "$tmp/x/usr/bin/promtool" /opt/hbd-tools/usr/bin/promtool
  rm -rf "$tmp"
fi

if ! command -v cargo >/dev/null 2>&1; then
  if [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
  else
    echo "setup: installing the Rust toolchain with rustup"
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal -c rustfmt,clippy
    export PATH="$HOME/.cargo/bin:$PATH"
  fi
fi
