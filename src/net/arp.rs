//! Gratuitous ARP: tell the LAN that a VIP now lives behind this director's MAC.
//!
//! The packet is an ARP *request* (RFC 5227 §2.3 "ARP Announcement", the form heartbeat's
//! `send_arp` and keepalived use) with sender = target = the VIP, sent to the Ethernet
//! broadcast address. Hosts and switches that already cache the VIP update their entry; the
//! target hardware address is zero, as RFC 5227 says it is ignored.
//!
//! [`frame`] is the pure builder. [`Announcer`] owns an `AF_PACKET` socket bound to one
//! interface; [`Announcer::announce`] sends the first frame before it ever awaits, so takeover
//! latency is the time to open one socket and write one frame.

use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Duration;

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
    /// The interface does not exist in this namespace.
    #[error("cannot announce {ip} on {ifname}: no such interface")]
    NoSuchInterface {
        /// Interface name.
        ifname: String,
        /// Address being announced.
        ip: String,
    },
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

/// The index and MAC of an interface, read with getifaddrs (no netlink handle needed).
pub fn interface_mac(ifname: &str) -> Option<(u32, [u8; 6])> {
    let addrs = nix::ifaddrs::getifaddrs().ok()?;
    for a in addrs {
        if a.interface_name != ifname {
            continue;
        }
        if let Some(link) = a.address.as_ref().and_then(|s| s.as_link_addr())
            && link.halen() == 6
        {
            let index = u32::try_from(link.ifindex()).ok()?;
            return link.addr().map(|mac| (index, mac));
        }
    }
    None
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

/// A raw socket ready to announce IPv4 addresses on one interface.
///
/// Closing an `AF_PACKET` socket waits for an RCU grace period in the kernel (about 10 ms
/// on a small VM). Dropping an `Announcer` therefore hands the socket to a short-lived thread
/// to close: on the daemon's single async thread that wait would stall heartbeats and, when
/// a stop aborts a burst, delay the release that ends a split brain.
pub struct Announcer {
    ifname: String,
    mac: [u8; 6],
    dest: LinkAddr,
    fd: Option<OwnedFd>,
}

impl Drop for Announcer {
    fn drop(&mut self) {
        if let Some(fd) = self.fd.take() {
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
}

impl Announcer {
    /// Resolves the interface and opens a send-only `AF_PACKET` socket (protocol 0, so the
    /// kernel never queues received frames on it).
    pub fn open(ifname: &str) -> Result<Announcer, AnnounceError> {
        let (index, mac) = interface_mac(ifname).ok_or_else(|| {
            if nix::net::if_::if_nametoindex(ifname).is_ok() {
                AnnounceError::NoMac {
                    ifname: ifname.to_string(),
                    ip: String::new(),
                }
            } else {
                AnnounceError::NoSuchInterface {
                    ifname: ifname.to_string(),
                    ip: String::new(),
                }
            }
        })?;
        Announcer::on_link(ifname, index, mac)
    }

    /// Opens the socket for an interface whose index and MAC the caller already has (from
    /// netlink), skipping the getifaddrs lookup on the takeover path.
    pub fn on_link(ifname: &str, index: u32, mac: [u8; 6]) -> Result<Announcer, AnnounceError> {
        let sock_err = |op, e: nix::Error| AnnounceError::Socket {
            ifname: ifname.to_string(),
            ip: String::new(),
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
            mac,
            dest,
            fd: Some(fd),
        })
    }

    /// The interface's MAC, as put in every frame.
    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    /// Sends one gratuitous ARP for `ip` now.
    pub fn send_once(&self, ip: Ipv4Addr) -> Result<(), AnnounceError> {
        let f = frame(self.mac, ip);
        let fd = self.fd.as_ref().map_or(-1, |fd| fd.as_raw_fd());
        sendto(fd, &f, &self.dest, MsgFlags::empty()).map_err(|e| AnnounceError::Socket {
            ifname: self.ifname.clone(),
            ip: ip.to_string(),
            op: "sendto",
            source: std::io::Error::from(e),
        })?;
        Ok(())
    }

    /// Sends `count` gratuitous ARPs `interval` apart; the first goes out before the first
    /// await. A failed send after the first is logged and the burst continues (a full
    /// queue must not cancel later announcements); a failed first send is returned.
    pub async fn announce(
        &self,
        ip: Ipv4Addr,
        count: u32,
        interval: Duration,
    ) -> Result<(), AnnounceError> {
        for i in 0..count {
            if i > 0 {
                tokio::time::sleep(interval).await;
            }
            match self.send_once(ip) {
                Ok(()) => {}
                Err(e) if i == 0 => return Err(e),
                Err(e) => tracing::warn!(%e, "gratuitous ARP {} of {count} not sent", i + 1),
            }
        }
        tracing::debug!(ifname = %self.ifname, %ip, count, "gratuitous ARP burst sent");
        Ok(())
    }
}

/// Opens an [`Announcer`] on `ifname` and sends `count` gratuitous ARPs for `ip`,
/// `interval` apart, the first immediately.
pub async fn announce_ipv4(
    ifname: &str,
    ip: Ipv4Addr,
    count: u32,
    interval: Duration,
) -> Result<(), AnnounceError> {
    let announcer = Announcer::open(ifname).map_err(|e| with_ip(e, ip))?;
    announcer.announce(ip, count, interval).await
}

/// Fills in the address in an error raised before it was known.
fn with_ip(e: AnnounceError, addr: Ipv4Addr) -> AnnounceError {
    let a = addr.to_string();
    match e {
        AnnounceError::NoSuchInterface { ifname, .. } => {
            AnnounceError::NoSuchInterface { ifname, ip: a }
        }
        AnnounceError::NoMac { ifname, .. } => AnnounceError::NoMac { ifname, ip: a },
        AnnounceError::Socket {
            ifname, op, source, ..
        } => AnnounceError::Socket {
            ifname,
            ip: a,
            op,
            source,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let announcer = match Announcer::on_link("lo", 1, [0; 6]) {
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
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while open_fd_targets().contains(&target) {
            assert!(
                std::time::Instant::now() < deadline,
                "{target} still open 5 s after the drop"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn unknown_interface_is_a_typed_error() {
        let e = Announcer::open("nosuchif0").err().unwrap();
        assert!(matches!(e, AnnounceError::NoSuchInterface { .. }), "{e}");
    }
}
