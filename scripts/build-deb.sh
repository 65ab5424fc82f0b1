#!/usr/bin/env bash
# Builds the hbd Debian package from this repository with dpkg-deb (no other packaging
# tool): target/deb/hbd_VERSION_ARCH.deb.
#
#   bash scripts/build-deb.sh                    # release build, then the package
#   bash scripts/build-deb.sh --prebuilt DIR     # package binaries already built in DIR
#                                                # (e.g. target/debug, as the tests do)
#   bash scripts/build-deb.sh --out DIR          # write the .deb (and its staging tree) to DIR
#   bash scripts/build-deb.sh --compression none # xz (default), gzip or none (the tests: fast)
#
# DIR for --prebuilt must hold hbd, hactl, cl_status and examples/gen-manpages (built by
# `cargo build --bins --example gen-manpages`, as scripts/test.sh does).
# The package layout is described in docs/operations.md, "Installing the package".
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

prebuilt=""
out="$repo/target/deb"
compression=xz
while [ $# -gt 0 ]; do
  case "$1" in
    --prebuilt) prebuilt=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --compression) compression=$2; shift 2 ;;
    *) echo "usage: $0 [--prebuilt DIR] [--out DIR] [--compression xz|gzip|none]" >&2; exit 2 ;;
  esac
done

if [ -z "$prebuilt" ]; then
  [ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
  cargo build --locked --release --bin hbd --bin hactl --bin cl_status --example gen-manpages
  bins="$repo/target/release"
else
  bins=$(cd "$prebuilt" && pwd)
fi
for f in hbd hactl cl_status examples/gen-manpages; do
  [ -x "$bins/$f" ] || { echo "build-deb: $bins/$f is missing; build it first" >&2; exit 1; }
done

version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
arch=$(dpkg --print-architecture)
name="hbd_${version}_${arch}"
stage="$out/$name"
rm -rf "$stage"
mkdir -p "$stage/DEBIAN"

# Binaries and heartbeat's command names.
install -D -m 0755 "$bins/hbd" "$stage/usr/sbin/hbd"
install -D -m 0755 "$bins/hactl" "$stage/usr/sbin/hactl"
install -D -m 0755 "$bins/cl_status" "$stage/usr/bin/cl_status"
install -D -m 0755 packaging/hb_standby "$stage/usr/sbin/hb_standby"
install -D -m 0755 packaging/hb_takeover "$stage/usr/sbin/hb_takeover"
strip --strip-unneeded "$stage/usr/sbin/hbd" "$stage/usr/sbin/hactl" "$stage/usr/bin/cl_status"

# Resource scripts, in the first system directory hbd searches (src/resources/script.rs).
for r in resources/*; do
  install -D -m 0755 "$r" "$stage/usr/lib/hbd/resources/$(basename "$r")"
done

# Configuration: the example YAML is a conffile; it holds a key, hence 0600.
install -D -m 0600 conf/hbd.yaml "$stage/etc/hbd/hbd.yaml"
install -D -m 0644 packaging/hbd.service "$stage/lib/systemd/system/hbd.service"

# Documentation and examples.
doc="$stage/usr/share/doc/hbd"
install -D -m 0644 README.md "$doc/README.md"
for d in docs/*.md; do install -D -m 0644 "$d" "$doc/$(basename "$d")"; done
for f in ha.cf haresources ldirectord.cf; do
  install -D -m 0644 "conf/$f" "$doc/examples/ha.d/$f"
done
install -D -m 0644 conf/authkeys "$doc/examples/ha.d/authkeys"
install -D -m 0644 packaging/hardening.conf "$doc/examples/hardening.conf"
cat > "$doc/copyright" <<COPYRIGHT
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: hbd

Files: *
License: GPL-2.0-or-later
 On Debian systems the full text is in /usr/share/common-licenses/GPL-2.
COPYRIGHT

# Man pages (hbd.8 and hactl.8 from the clap definitions) and completions.
gen=$(mktemp -d)
trap 'rm -rf "$gen"' EXIT
"$bins/examples/gen-manpages" "$gen" >/dev/null
man="$stage/usr/share/man"
for p in "$gen"/*.8 packaging/cl_status.8 packaging/hb_standby.8; do
  install -D -m 0644 "$p" "$man/man8/$(basename "$p")"
done
install -D -m 0644 packaging/hbd.yaml.5 "$man/man5/hbd.yaml.5"
gzip -9n "$man"/man8/*.8 "$man"/man5/*.5
ln -s hb_standby.8.gz "$man/man8/hb_takeover.8.gz"
install -D -m 0644 "$gen/hbd.bash" "$stage/usr/share/bash-completion/completions/hbd"
install -D -m 0644 "$gen/hactl.bash" "$stage/usr/share/bash-completion/completions/hactl"
install -D -m 0644 "$gen/_hbd" "$stage/usr/share/zsh/vendor-completions/_hbd"
install -D -m 0644 "$gen/_hactl" "$stage/usr/share/zsh/vendor-completions/_hactl"

# Control files.
install -m 0644 packaging/debian/conffiles "$stage/DEBIAN/conffiles"
for s in postinst prerm postrm; do install -m 0755 "packaging/debian/$s" "$stage/DEBIAN/$s"; done
size=$(du -sk --exclude=DEBIAN "$stage" | cut -f1)
cat > "$stage/DEBIAN/control" <<CONTROL
Package: hbd
Version: $version
Architecture: $arch
Maintainer: hbd developers <hbd@example.org>
Installed-Size: $size
Depends: libc6 (>= 2.34), libgcc-s1
Recommends: iproute2
Suggests: ipvsadm, nftables, prometheus
Conflicts: heartbeat
Section: admin
Priority: optional
Description: cluster resource manager for LVS director pairs
 hbd replaces Linux-HA heartbeat 3.0.6 and ldirectord on a pair of LVS directors:
 authenticated heartbeats over several media, haresources-style resource groups,
 real-server health checks driving IPVS or nftables, and hactl to steer it. It reads
 an unchanged /etc/ha.d or its own YAML. Ships heartbeat's cl_status, hb_standby and
 hb_takeover, a systemd unit (not enabled on install) and an optional Prometheus
 endpoint.
CONTROL
(cd "$stage" && find . -path ./DEBIAN -prune -o -type f -print0 | sort -z \
  | xargs -0 md5sum | sed 's| \./| |') > "$stage/DEBIAN/md5sums"

dpkg-deb --root-owner-group "-Z$compression" --build "$stage" "$out/$name.deb" >/dev/null
echo "$out/$name.deb"
