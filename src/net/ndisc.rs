//! Unsolicited neighbour advertisements: the IPv6 counterpart of gratuitous ARP.
//!
//! RFC 4861 §7.2.6: a node whose link-layer address for a target changed may send up to
//! `MAX_NEIGHBOR_ADVERTISEMENT` (3) unsolicited NAs to the all-nodes group `ff02::1`, with the
//! Solicited flag clear and the Override flag set, carrying the Target Link-Layer Address
//! option. Receivers only accept NDP packets whose hop limit is 255 (§7.1.2). keepalived adds
//! a configurable Router flag (its PR #200): [`NaFlags::router`].
//!
//! [`advertisement`] is the pure builder (checksum left zero: for raw ICMPv6 sockets Linux
//! always computes it, RFC 3542 §3.1). [`NaAnnouncer`] owns the raw socket.

use std::net::{Ipv6Addr, SocketAddrV6};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

/// ICMPv6 type Neighbor Advertisement (RFC 4861 §4.4).
pub const ND_NEIGHBOR_ADVERT: u8 = 136;
/// NDP option Target Link-Layer Address (RFC 4861 §4.6.1).
pub const ND_OPT_TARGET_LINKADDR: u8 = 2;
/// Hop limit every NDP packet must carry (RFC 4861 §7.1.2).
pub const NDP_HOP_LIMIT: u32 = 255;
/// All-nodes link-local multicast group (RFC 4291 §2.7.1).
pub const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
/// Length of an NA with one link-layer option: 24-byte body + 8-byte option.
pub const NA_LEN: usize = 32;

/// The R/S/O flags of an advertisement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NaFlags {
    /// Router flag: the sender is a router (needed when the VIP is a default gateway).
    pub router: bool,
    /// Solicited flag: always false for unsolicited announcements.
    pub solicited: bool,
    /// Override flag: replace cached link-layer addresses.
    pub override_: bool,
}

impl NaFlags {
    /// Flags of a takeover announcement: unsolicited, override, router as configured.
    pub fn unsolicited(router: bool) -> NaFlags {
        NaFlags {
            router,
            solicited: false,
            override_: true,
        }
    }
}

/// Why an advertisement could not be sent.
#[derive(Debug, thiserror::Error)]
#[error("cannot advertise {ip} on {ifname}: {op}: {source}")]
pub struct NdiscError {
    /// Interface name.
    pub ifname: String,
    /// Address being announced.
    pub ip: Ipv6Addr,
    /// The step that failed.
    pub op: &'static str,
    /// The OS error.
    #[source]
    pub source: std::io::Error,
}

/// Builds the ICMPv6 part of an unsolicited NA (checksum zero, filled by the kernel).
pub fn advertisement(target: Ipv6Addr, mac: [u8; 6], flags: NaFlags) -> [u8; NA_LEN] {
    let mut p = [0u8; NA_LEN];
    p[0] = ND_NEIGHBOR_ADVERT;
    // p[1] code 0, p[2..4] checksum.
    p[4] = (u8::from(flags.router) << 7)
        | (u8::from(flags.solicited) << 6)
        | (u8::from(flags.override_) << 5);
    // p[5..8] reserved.
    p[8..24].copy_from_slice(&target.octets());
    p[24] = ND_OPT_TARGET_LINKADDR;
    p[25] = 1; // option length in units of 8 octets
    p[26..32].copy_from_slice(&mac);
    p
}

/// A raw ICMPv6 socket on one interface, sourced from the VIP itself.
pub struct NaAnnouncer {
    ifname: String,
    target: Ipv6Addr,
    packet: [u8; NA_LEN],
    socket: Socket,
    dest: SockAddr,
}

impl NaAnnouncer {
    /// Opens the socket: bound to the interface and to `target` as source (the VIP is added
    /// without DAD, so it is usable at once, unlike a still-tentative link-local), hop limit
    /// 255, multicast out of `ifindex`.
    pub fn open(
        ifname: &str,
        ifindex: u32,
        mac: [u8; 6],
        target: Ipv6Addr,
        router: bool,
    ) -> Result<NaAnnouncer, NdiscError> {
        let err = |op, source| NdiscError {
            ifname: ifname.to_string(),
            ip: target,
            op,
            source,
        };
        let socket = Socket::new(Domain::IPV6, Type::RAW, Some(Protocol::ICMPV6))
            .map_err(|e| err("socket(ICMPv6)", e))?;
        socket
            .bind_device(Some(ifname.as_bytes()))
            .map_err(|e| err("SO_BINDTODEVICE", e))?;
        socket
            .set_multicast_hops_v6(NDP_HOP_LIMIT)
            .map_err(|e| err("IPV6_MULTICAST_HOPS", e))?;
        socket
            .set_unicast_hops_v6(NDP_HOP_LIMIT)
            .map_err(|e| err("IPV6_UNICAST_HOPS", e))?;
        socket
            .set_multicast_if_v6(ifindex)
            .map_err(|e| err("IPV6_MULTICAST_IF", e))?;
        socket
            .set_multicast_loop_v6(false)
            .map_err(|e| err("IPV6_MULTICAST_LOOP", e))?;
        let scope = if target.is_unicast_link_local() {
            ifindex
        } else {
            0
        };
        socket
            .bind(&SockAddr::from(SocketAddrV6::new(target, 0, 0, scope)))
            .map_err(|e| err("bind to VIP", e))?;
        socket
            .set_nonblocking(true)
            .map_err(|e| err("O_NONBLOCK", e))?;
        Ok(NaAnnouncer {
            ifname: ifname.to_string(),
            target,
            packet: advertisement(target, mac, NaFlags::unsolicited(router)),
            socket,
            dest: SockAddr::from(SocketAddrV6::new(ALL_NODES, 0, 0, ifindex)),
        })
    }

    /// Sends one advertisement now.
    pub fn send_once(&self) -> Result<(), NdiscError> {
        self.socket
            .send_to(&self.packet, &self.dest)
            .map(|_| ())
            .map_err(|source| NdiscError {
                ifname: self.ifname.clone(),
                ip: self.target,
                op: "sendto ff02::1",
                source,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advertisement_is_byte_exact() {
        let target: Ipv6Addr = "2001:db8::10".parse().unwrap();
        let p = advertisement(
            target,
            [2, 0, 0, 0xaa, 0xbb, 0xcc],
            NaFlags::unsolicited(false),
        );
        let mut expected = vec![136u8, 0, 0, 0, 0x20, 0, 0, 0];
        expected.extend_from_slice(&target.octets());
        expected.extend_from_slice(&[2, 1, 2, 0, 0, 0xaa, 0xbb, 0xcc]);
        assert_eq!(p.to_vec(), expected);
    }

    #[test]
    fn router_and_solicited_flags_are_the_top_bits() {
        let t = Ipv6Addr::LOCALHOST;
        let all = NaFlags {
            router: true,
            solicited: true,
            override_: true,
        };
        assert_eq!(advertisement(t, [0; 6], all)[4], 0xe0);
        assert_eq!(
            advertisement(t, [0; 6], NaFlags::unsolicited(true))[4],
            0xa0
        );
    }
}
