//! Gratuitous ARP: tell the LAN that a VIP now lives behind this director's MAC.
//!
//! The packet is an ARP *request* (RFC 5227 §2.3 "ARP Announcement", the form heartbeat's
//! `send_arp` and keepalived use) with sender = target = the VIP, sent to the Ethernet
//! broadcast address. Hosts and switches that already cache the VIP update their entry; the
//! target hardware address is zero, as RFC 5227 says it is ignored.
//!
//! [`frame`] is the pure builder. [`Announcer`] owns an `AF_PACKET` socket on one interface
//! for one address; [`Announcer::send_once`] never awaits, so the first frame of a takeover
//! costs opening one socket and writing one frame (the rest of the burst is paced by the VIP
//! resource, [`crate::resources::ipaddr`]).

use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, OwnedFd};

use nix::libc;
use nix::sys::socket::{
    AddressFamily, LinkAddr, MsgFlags, SockFlag, SockType, SockaddrLike, sendto, socket,
};

/// EtherType of ARP (IEEE 802 numbers).
pub const ETH_P_ARP: u16 = 0x0806;
/// EtherType of IPv4.
pub const ETH_P_IP: u16 = 0x0800;
/// ARP hardware type Ethernet (RFC 826).
pub const ARPHRD_ETHER: u16 = 1;
/// ARP opcode "request" (RFC 826).
pub const ARPOP_REQUEST: u16 = 1;
/// Length of a gratuitous ARP frame: 14-byte Ethernet header + 28-byte ARP body.
pub const FRAME_LEN: usize = 42;
/// Ethernet broadcast address.
pub const BROADCAST_MAC: [u8; 6] = [0xff; 6];

/// Why an announcement could not be sent.
#[derive(Debug, thiserror::Error)]
pub enum AnnounceError {
    /// The interface has no Ethernet address (e.g. `lo`, a tunnel).
    #[error("cannot announce {ip} on {ifname}: the interface has no Ethernet address")]
    NoMac {
        /// Interface name.
        ifname: String,
        /// Address being announced.
        ip: String,
    },
    /// Opening or using the raw socket failed.
    #[error("cannot announce {ip} on {ifname}: {op}: {source}")]
    Socket {
        /// Interface name.
        ifname: String,
        /// Address being announced.
        ip: String,
        /// The system call that failed.
        op: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// Builds one gratuitous ARP request frame (Ethernet + ARP), byte for byte.
pub fn frame(mac: [u8; 6], ip: Ipv4Addr) -> [u8; FRAME_LEN] {
    let mut f = [0u8; FRAME_LEN];
    f[0..6].copy_from_slice(&BROADCAST_MAC);
    f[6..12].copy_from_slice(&mac);
    f[12..14].copy_from_slice(&ETH_P_ARP.to_be_bytes());
    f[14..16].copy_from_slice(&ARPHRD_ETHER.to_be_bytes());
    f[16..18].copy_from_slice(&ETH_P_IP.to_be_bytes());
    f[18] = 6; // hardware address length
    f[19] = 4; // protocol address length
    f[20..22].copy_from_slice(&ARPOP_REQUEST.to_be_bytes());
    f[22..28].copy_from_slice(&mac); // sender hardware address
    f[28..32].copy_from_slice(&ip.octets()); // sender protocol address
    // f[32..38]: target hardware address, zero (RFC 5227 §2.3).
    f[38..42].copy_from_slice(&ip.octets()); // target protocol address
    f
}

/// Builds the `sockaddr_ll` a frame is sent to: broadcast on one interface.
fn destination(ifindex: u32) -> Option<LinkAddr> {
    // SAFETY: sockaddr_ll is a plain C struct; all-zero is a valid value.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = u16::try_from(libc::AF_PACKET).ok()?;
    sll.sll_protocol = ETH_P_ARP.to_be();
    sll.sll_ifindex = i32::try_from(ifindex).ok()?;
    sll.sll_halen = 6;
    sll.sll_addr[..6].copy_from_slice(&BROADCAST_MAC);
    let len = libc::socklen_t::try_from(std::mem::size_of::<libc::sockaddr_ll>()).ok()?;
    // SAFETY: the pointer refers to a live, fully initialised sockaddr_ll of `len` bytes
    // whose family is AF_PACKET, which is exactly what LinkAddr::from_raw checks and copies.
    unsafe { LinkAddr::from_raw((&raw const sll).cast::<libc::sockaddr>(), Some(len)) }
}

/// A raw socket ready to announce one IPv4 address on one interface.
///
/// Closing an `AF_PACKET` socket waits for an RCU grace period in the kernel (about 10 ms
/// on a small VM). Dropping an `Announcer` therefore hands the socket to a short-lived thread
/// to close: on the daemon's single async thread that wait would stall heartbeats and, when
/// a stop aborts a burst, delay the release that ends a split brain.
pub struct Announcer {
    ifname: String,
    ip: Ipv4Addr,
    frame: [u8; FRAME_LEN],
    dest: LinkAddr,
    /// Always `Some` until [`Drop`] takes it to be closed on another thread.
    fd: Option<OwnedFd>,
}

impl Drop for Announcer {
    fn drop(&mut self) {
        let Some(fd) = self.fd.take() else { return };
        let spawned = std::thread::Builder::new()
            .name("hbd-close-arp".into())
            .spawn(move || drop(fd));
        // Without a thread the socket is closed here (the closure, and so the fd, is
        // dropped with the error): slower, never leaked.
        if let Err(e) = spawned {
            tracing::debug!(%e, "closing the ARP socket inline");
        }
    }
}

impl Announcer {
    /// Opens a send-only `AF_PACKET` socket (protocol 0, so the kernel never queues received
    /// frames on it) to announce `ip` on the interface whose index and MAC the caller has
    /// (from netlink).
    pub fn on_link(
        ifname: &str,
        index: u32,
        mac: [u8; 6],
        ip: Ipv4Addr,
    ) -> Result<Announcer, AnnounceError> {
        let sock_err = |op, e: nix::Error| AnnounceError::Socket {
            ifname: ifname.to_string(),
            ip: ip.to_string(),
            op,
            source: std::io::Error::from(e),
        };
        let fd = socket(
            AddressFamily::Packet,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            None,
        )
        .map_err(|e| sock_err("socket(AF_PACKET)", e))?;
        let dest = destination(index).ok_or_else(|| sock_err("sockaddr_ll", nix::Error::EINVAL))?;
        Ok(Announcer {
            ifname: ifname.to_string(),
            ip,
            frame: frame(mac, ip),
            dest,
            fd: Some(fd),
        })
    }

    /// Sends one gratuitous ARP now, without awaiting.
    pub fn send_once(&self) -> Result<(), AnnounceError> {
        // `fd` is only `None` inside `drop`; -1 would fail as EBADF, never panic.
        let fd = self.fd.as_ref().map_or(-1, AsRawFd::as_raw_fd);
        sendto(fd, &self.frame, &self.dest, MsgFlags::empty()).map_err(|e| {
            AnnounceError::Socket {
                ifname: self.ifname.clone(),
                ip: self.ip.to_string(),
                op: "sendto",
                source: std::io::Error::from(e),
            }
        })?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock;

    #[test]
    fn frame_is_byte_exact() {
        let mac = [0x02, 0x00, 0x5e, 0x10, 0x20, 0x30];
        let f = frame(mac, Ipv4Addr::new(192, 0, 2, 10));
        let expected: [u8; FRAME_LEN] = [
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // dst: broadcast
            0x02, 0x00, 0x5e, 0x10, 0x20, 0x30, // src: our MAC
            0x08, 0x06, // EtherType ARP
            0x00, 0x01, // htype Ethernet
            0x08, 0x00, // ptype IPv4
            0x06, 0x04, // hlen, plen
            0x00, 0x01, // op request
            0x02, 0x00, 0x5e, 0x10, 0x20, 0x30, // sha
            192, 0, 2, 10, // spa = VIP
            0, 0, 0, 0, 0, 0, // tha zero
            192, 0, 2, 10, // tpa = VIP
        ];
        assert_eq!(f, expected);
    }

    #[test]
    fn destination_is_broadcast_arp_on_the_interface() {
        let d = destination(7).unwrap();
        assert_eq!(d.ifindex(), 7);
        assert_eq!(d.addr(), Some(BROADCAST_MAC));
        assert_eq!(u16::from_be(d.protocol()), ETH_P_ARP);
    }

    /// Every open descriptor's link target ("socket:[inode]" for sockets).
    fn open_fd_targets() -> Vec<String> {
        std::fs::read_dir("/proc/self/fd")
            .map(|dir| {
                dir.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                    .map(|t| t.to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    #[test]
    fn dropping_an_announcer_closes_its_socket_off_thread() {
        let announcer = match Announcer::on_link("lo", 1, [0; 6], Ipv4Addr::new(192, 0, 2, 10)) {
            Ok(a) => a,
            Err(e) => {
                eprintln!("skipped: an AF_PACKET socket needs CAP_NET_RAW ({e})");
                return;
            }
        };
        let fd = announcer.fd.as_ref().unwrap().as_raw_fd();
        let target = std::fs::read_link(format!("/proc/self/fd/{fd}"))
            .unwrap()
            .to_string_lossy()
            .into_owned();
        assert!(target.starts_with("socket:["), "{target}");
        drop(announcer);
        // The closing thread needs one RCU grace period; give it up to 5 s.
        let deadline = clock::now() + std::time::Duration::from_secs(5);
        while open_fd_targets().contains(&target) {
            assert!(
                clock::now() < deadline,
                "{target} still open 5 s after the drop"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }
}
