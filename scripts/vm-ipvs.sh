#!/usr/bin/env bash
# vm-ipvs.sh: the IPVS tier (issue 16). This machine's kernel has no IPVS, so hbd's IPVS
# backend runs on Debian's own kernel in a virtual machine, booted once for every check:
#
#   * Debian packages only: linux-image-amd64 (downloaded with apt-get, unpacked, never
#     installed; the kernel and the modules the guest needs are cached in
#     /var/cache/hbd-vm), qemu-system-x86 (TCG: software emulation), busybox-static, kmod
#     (depmod), cpio, ipvsadm, iproute2 (`ip netns`). scripts/setup.sh installs them.
#   * An initramfs: busybox, the kernel's netfilter/IPVS/tunnel/bridge modules with a
#     modules.dep built by depmod, hbd, hactl, ipvsadm and ip with the shared libraries ldd
#     lists, the guest scripts of scripts/vm/ in /vm, and scripts/vm/init as /init. The
#     guest has no network card: nothing leaves it.
#   * In the guest (scripts/vm/init runs each in turn):
#       rules.sh    one director (`--dataplane ipvs`): services by VIP:port:proto and fwmark,
#                   every scheduler hbd knows, gate/ipip/masq, weights, persistence and
#                   netmask, thresholds; ipvsadm agrees with what hbd meant and with `hactl
#                   ipvs`; reload; a rule deleted or changed by hand is put back; a restart
#                   adopts the rules; stop removes only what hbd created.
#       packets.sh  a director pair and three real servers in namespaces on one bridge:
#                   a client reaches the reals through the VIP in DR and TUN mode, weights
#                   honoured; a real whose check fails gets no new connections; the rules
#                   follow the VIP to the other director; with the `ipvssync` resource a
#                   long-lived TCP connection survives the failover.
#
# Every check prints `VM-CHECK name PASS|FAIL`; the script exits 0 only when every check
# passed and the guest finished. Run as root: bash scripts/vm-ipvs.sh. The guest has
# HBD_VM_TIMEOUT seconds (default 300). tests/e2e/vm.rs runs it and names every check.
# The whole script is one function, read before it runs: editing the file during a run
# cannot change what the run does.
main() {
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "vm-ipvs.sh: must run as root" >&2; exit 1; }
[ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
stamp() { echo "$(date +%T) == $*"; }

WORK=$(mktemp -d /tmp/hbd-vm.XXXXXX)
trap 'rm -rf "$WORK"' EXIT

need=()
for p in qemu-system-x86_64:qemu-system-x86 busybox:busybox-static depmod:kmod cpio:cpio \
  ipvsadm:ipvsadm ip:iproute2; do
  command -v "${p%%:*}" >/dev/null || need+=("${p#*:}")
done
# The guest runs busybox without libraries: it must be busybox-static's.
if command -v busybox >/dev/null && ldd "$(command -v busybox)" >/dev/null 2>&1; then
  need+=(busybox-static)
fi
if [ ${#need[@]} -gt 0 ]; then
  stamp "installing ${need[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${need[@]}" >/dev/null
fi

stamp "Debian's kernel"
KPKG=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
if [ -z "$KPKG" ]; then
  apt-get update -qq
  KPKG=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
fi
[ -n "$KPKG" ] || { echo "vm-ipvs.sh: no linux-image-amd64 in the apt sources" >&2; exit 1; }
CACHE=/var/cache/hbd-vm/$KPKG
if [ ! -e "$CACHE/done" ]; then
  rm -rf "$CACHE"; mkdir -p "$CACHE"
  (cd "$WORK" && apt-get download "$KPKG" 2>/dev/null >/dev/null)
  dpkg-deb -x "$WORK"/"$KPKG"_*.deb "$WORK/k"
  KVER=$(ls "$WORK/k/lib/modules")
  M=$WORK/k/lib/modules/$KVER
  R=$CACHE/lib/modules/$KVER
  for d in kernel/net/netfilter kernel/net/ipv4 kernel/net/ipv6 kernel/net/bridge \
    kernel/net/802 kernel/net/llc kernel/lib kernel/crypto kernel/drivers/net/veth.ko; do
    [ -e "$M/$d" ] || continue
    mkdir -p "$R/$(dirname "$d")"
    cp -r "$M/$d" "$R/$(dirname "$d")/"
  done
  cp "$M"/modules.order "$M"/modules.builtin* "$R/" 2>/dev/null || true
  cp "$WORK/k/boot/vmlinuz-$KVER" "$CACHE/vmlinuz"
  echo "$KVER" >"$CACHE/done"
  rm -rf "$WORK/k" "$WORK"/*.deb
fi
KVER=$(cat "$CACHE/done")
echo "   $KPKG ($KVER)"

stamp "building hbd"
cargo build --quiet --bin hbd --bin hactl
case "${HBD_VM_ONLY:-}" in *bench*) cargo build --quiet --example ipvs_bench ;; esac
BIN=$PWD/target/debug

stamp "initramfs"
ROOT=$WORK/root
mkdir -p "$ROOT"/{bin,sbin,proc,sys,dev,tmp,run,var,vm}
ln -s ../run "$ROOT/var/run"
cp "$(command -v busybox)" "$ROOT/bin/"
cp -r "$CACHE/lib" "$ROOT/"
depmod -b "$ROOT" "$KVER"
strip -o "$ROOT/bin/hbd" "$BIN/hbd"
strip -o "$ROOT/bin/hactl" "$BIN/hactl"
cp "$(command -v ipvsadm)" "$ROOT/bin/"
case "${HBD_VM_ONLY:-}" in *bench*) strip -o "$ROOT/bin/ipvs_bench" "$BIN/examples/ipvs_bench" ;; esac
# iproute2's ip (busybox's has no netns); busybox's shell prefers its own applets, so the
# guest scripts call it by its path (lib.sh).
mkdir -p "$ROOT/usr/sbin"
cp "$(command -v ip)" "$ROOT/usr/sbin/ip"
for lib in $(ldd "$ROOT/bin/hbd" "$ROOT/bin/hactl" "$ROOT/bin/ipvsadm" "$ROOT/usr/sbin/ip" \
  $(ls "$ROOT/bin/ipvs_bench" 2>/dev/null) |
  awk '/=>/ {print $3} /ld-linux/ {print $1}' | sort -u); do
  mkdir -p "$ROOT$(dirname "$lib")"
  cp -L "$lib" "$ROOT$lib"
done
cp scripts/vm/*.sh "$ROOT/vm/"
cp scripts/vm/init "$ROOT/init"
chmod +x "$ROOT/init" "$ROOT"/vm/*.sh
(cd "$ROOT" && find . | cpio -o -H newc --quiet | gzip -1) >"$WORK/initrd.gz"

stamp "booting $KVER under qemu (TCG)"
set +e
timeout "${HBD_VM_TIMEOUT:-300}" qemu-system-x86_64 -accel tcg -m 1024 -smp 1 -nographic \
  -no-reboot -nic none -kernel "$CACHE/vmlinuz" -initrd "$WORK/initrd.gz" \
  -append "console=ttyS0 panic=-1 quiet${HBD_VM_ONLY:+ hbd.only=$HBD_VM_ONLY}" </dev/null >"$WORK/console.log" 2>&1
rc=$?
set -e
stamp "guest finished (qemu exit $rc)"
# HBD_VM_CONSOLE=FILE keeps the guest's whole console (kernel messages, hbd's logs on failure).
[ -z "${HBD_VM_CONSOLE:-}" ] || cp "$WORK/console.log" "$HBD_VM_CONSOLE"
# The guest's report, one clean line each (the console puts terminal codes before the
# first line and ends lines with CR).
tr -d '\r' <"$WORK/console.log" |
  grep -ao 'VM-\(CHECK\|STEP\|FIGURE\) .*\|^diff.*\|^[-+][-+]* .*\|^[-+]-[Aa] .*\|^[A-Z]* spread.*\|^d[12]: .*' || true
if [ $rc -ne 0 ] || ! grep -aq VM-DONE "$WORK/console.log"; then
  echo "vm-ipvs.sh: the guest did not finish (qemu exit $rc); console:" >&2
  tail -n 80 "$WORK/console.log" >&2
  exit 1
fi
if grep -aq 'VM-CHECK .* FAIL' "$WORK/console.log"; then
  echo "vm-ipvs.sh: a check failed; console:" >&2
  tail -n 120 "$WORK/console.log" >&2
  exit 1
fi
stamp "every IPVS check passed on $KVER"
}
main "$@"
exit
