//! The I/O edge of VRRP: one raw IP protocol 112 socket per instance, bound to its interface.
//!
//! Sending: the kernel builds the IP header (TTL / hop limit 255, RFC 5798 §5.1.1.3 /
//! §5.1.2.3; TOS 0xc0 like keepalived), from the bound source address, to the multicast group
//! (joined on the interface, loopback off) or to each unicast peer. The payload comes from
//! [`crate::vrrp::packet::encode`], checksum included (also for IPv6: the socket has no
//! `IPV6_CHECKSUM`, so the codec's pseudo-header checksum is what goes out and what is
//! checked on receive).
//!
//! Receiving: IPv4 raw sockets hand over the IP header, whose TTL, source and destination
//! are read with [`Ipv4Header::parse`]; IPv6 raw sockets do not, so the hop limit and the
//! destination come from `IPV6_RECVHOPLIMIT` / `IPV6_RECVPKTINFO` control messages and the
//! source from the sender address. The receive checks themselves are
//! [`crate::vrrp::packet::Expect`]'s, so a packet this socket returns is counted and dropped
//! or accepted there, never here.

use std::io::{self, IoSlice, IoSliceMut};
use std::net::{IpAddr, Ipv6Addr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsRawFd;

use nix::sys::socket::{
    ControlMessage, ControlMessageOwned, MsgFlags, SockaddrIn, SockaddrIn6, recvmsg, sendmsg,
    setsockopt, sockopt,
};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::unix::AsyncFd;

use super::packet::{Envelope, IPPROTO_VRRP, Ipv4Header, TOS_INTERNETWORK_CONTROL, VRRP_TTL};

/// Why the socket could not be opened or used.
#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    /// The interface does not exist.
    #[error("VRRP on {ifname}: no such interface")]
    NoInterface {
        /// Interface name.
        ifname: String,
    },
    /// A system call failed.
    #[error("VRRP on {ifname}: {op}: {source}")]
    Io {
        /// Interface name.
        ifname: String,
        /// What was being done.
        op: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

/// One received packet: where it came from and the VRRP bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// Source, destination and TTL / hop limit.
    pub env: Envelope,
    /// The IP payload (the VRRP message).
    pub payload: Vec<u8>,
}

/// A raw VRRP socket on one interface.
pub struct VrrpSocket {
    fd: AsyncFd<Socket>,
    ifname: String,
    ifindex: u32,
    src: IpAddr,
}

impl VrrpSocket {
    /// Opens the socket on `ifname`, sending from `src` (the interface's primary address, or
    /// `unicast_src_ip`); joins `group` unless `group` is `None` (unicast peers only).
    pub fn open(
        ifname: &str,
        src: IpAddr,
        group: Option<IpAddr>,
    ) -> Result<VrrpSocket, SocketError> {
        let io = |op: &'static str| {
            let ifname = ifname.to_string();
            move |source: io::Error| SocketError::Io { ifname, op, source }
        };
        let ifindex =
            nix::net::if_::if_nametoindex(ifname).map_err(|_| SocketError::NoInterface {
                ifname: ifname.to_string(),
            })?;
        let v6 = src.is_ipv6();
        let domain = if v6 { Domain::IPV6 } else { Domain::IPV4 };
        let sock = Socket::new(
            domain,
            Type::RAW.cloexec(),
            Some(Protocol::from(i32::from(IPPROTO_VRRP))),
        )
        .map_err(io("socket"))?;
        sock.bind_device(Some(ifname.as_bytes()))
            .map_err(io("SO_BINDTODEVICE"))?;
        // Not bound to `src`: a raw socket bound to an address receives only packets sent to
        // that address, and adverts go to the group. The source is set per send instead.
        let ttl = u32::from(VRRP_TTL);
        match src {
            IpAddr::V4(a) => {
                sock.set_ttl_v4(ttl).map_err(io("IP_TTL"))?;
                sock.set_multicast_ttl_v4(ttl)
                    .map_err(io("IP_MULTICAST_TTL"))?;
                sock.set_tos_v4(u32::from(TOS_INTERNETWORK_CONTROL))
                    .map_err(io("IP_TOS"))?;
                sock.set_multicast_loop_v4(false)
                    .map_err(io("IP_MULTICAST_LOOP"))?;
                sock.set_multicast_if_v4(&a)
                    .map_err(io("IP_MULTICAST_IF"))?;
                sock.set_multicast_all_v4(false)
                    .map_err(io("IP_MULTICAST_ALL"))?;
                if let Some(IpAddr::V4(g)) = group {
                    sock.join_multicast_v4_n(&g, &socket2::InterfaceIndexOrAddress::Index(ifindex))
                        .map_err(io("IP_ADD_MEMBERSHIP"))?;
                }
            }
            IpAddr::V6(_) => {
                sock.set_unicast_hops_v6(ttl)
                    .map_err(io("IPV6_UNICAST_HOPS"))?;
                sock.set_multicast_hops_v6(ttl)
                    .map_err(io("IPV6_MULTICAST_HOPS"))?;
                sock.set_multicast_loop_v6(false)
                    .map_err(io("IPV6_MULTICAST_LOOP"))?;
                sock.set_multicast_if_v6(ifindex)
                    .map_err(io("IPV6_MULTICAST_IF"))?;
                sock.set_multicast_all_v6(false)
                    .map_err(io("IPV6_MULTICAST_ALL"))?;
                sock.set_recv_hoplimit_v6(true)
                    .map_err(io("IPV6_RECVHOPLIMIT"))?;
                setsockopt(&sock, sockopt::Ipv6RecvPacketInfo, &true)
                    .map_err(|e| io("IPV6_RECVPKTINFO")(e.into()))?;
                if let Some(IpAddr::V6(g)) = group {
                    sock.join_multicast_v6(&g, ifindex)
                        .map_err(io("IPV6_ADD_MEMBERSHIP"))?;
                }
            }
        }
        sock.set_nonblocking(true).map_err(io("O_NONBLOCK"))?;
        // SAFETY: `Socket` owns its descriptor: it stays open and is the same descriptor
        // until the `AsyncFd` (which owns the `Socket`) drops.
        let fd = unsafe { AsyncFd::register(sock) }
            .map_err(|e| io("register with the runtime")(io::Error::from(e)))?;
        Ok(VrrpSocket {
            fd,
            ifname: ifname.to_string(),
            ifindex,
            src,
        })
    }

    /// The source address adverts go out from (the v3 checksum's pseudo-header source).
    pub fn src(&self) -> IpAddr {
        self.src
    }

    /// Sends one VRRP payload to `dst` (the group or one peer). Never waits: a full send
    /// buffer is an error the caller counts; the next advert follows an interval later.
    pub fn send(&self, payload: &[u8], dst: IpAddr) -> Result<(), SocketError> {
        let fd = self.fd.get_ref().as_raw_fd();
        let iov = [IoSlice::new(payload)];
        let sent = match (self.src, dst) {
            (IpAddr::V4(src), IpAddr::V4(d)) => {
                // IP_PKTINFO: send from `src` on our interface (RFC 5798 §5.1.1.1).
                let info = nix::libc::in_pktinfo {
                    ipi_ifindex: i32::try_from(self.ifindex).unwrap_or(0),
                    ipi_spec_dst: nix::libc::in_addr {
                        s_addr: u32::from(src).to_be(),
                    },
                    ipi_addr: nix::libc::in_addr { s_addr: 0 },
                };
                let to = SockaddrIn::from(SocketAddrV4::new(d, 0));
                sendmsg(
                    fd,
                    &iov,
                    &[ControlMessage::Ipv4PacketInfo(&info)],
                    MsgFlags::MSG_DONTWAIT,
                    Some(&to),
                )
            }
            (IpAddr::V6(src), IpAddr::V6(d)) => {
                let info = nix::libc::in6_pktinfo {
                    ipi6_addr: nix::libc::in6_addr {
                        s6_addr: src.octets(),
                    },
                    ipi6_ifindex: self.ifindex,
                };
                let to = SockaddrIn6::from(SocketAddrV6::new(d, 0, 0, scope(&d, self.ifindex)));
                sendmsg(
                    fd,
                    &iov,
                    &[ControlMessage::Ipv6PacketInfo(&info)],
                    MsgFlags::MSG_DONTWAIT,
                    Some(&to),
                )
            }
            _ => Err(nix::errno::Errno::EAFNOSUPPORT),
        };
        sent.map(|_| ()).map_err(|e| SocketError::Io {
            ifname: self.ifname.clone(),
            op: "send advert",
            source: e.into(),
        })
    }

    /// Waits for the next packet. Packets whose IP header cannot be read come back as
    /// `Ok(Err(reason))`, for the caller to count like any other drop.
    pub async fn recv(&self) -> Result<Result<Received, super::packet::DropReason>, SocketError> {
        loop {
            let mut guard = self.fd.readable().await.map_err(|source| SocketError::Io {
                ifname: self.ifname.clone(),
                op: "wait for adverts",
                source,
            })?;
            match guard.try_io(|fd| self.read_one(fd.get_ref())) {
                Ok(Ok(r)) => return Ok(r),
                Ok(Err(source)) => {
                    return Err(SocketError::Io {
                        ifname: self.ifname.clone(),
                        op: "receive advert",
                        source,
                    });
                }
                Err(_would_block) => continue,
            }
        }
    }

    fn read_one(&self, sock: &Socket) -> io::Result<Result<Received, super::packet::DropReason>> {
        let mut buf = [0u8; 2048];
        if self.src.is_ipv4() {
            let n = nix::sys::socket::recv(sock.as_raw_fd(), &mut buf, MsgFlags::empty())
                .map_err(io::Error::from)?;
            let packet = &buf[..n];
            return Ok(Ipv4Header::parse(packet).map(|h| Received {
                env: Envelope {
                    src: IpAddr::V4(h.src),
                    dst: IpAddr::V4(h.dst),
                    ttl: h.ttl,
                },
                payload: packet[h.header_len..].to_vec(),
            }));
        }
        let mut cmsg = nix::cmsg_space!(libc_in6_pktinfo, i32);
        let mut iov = [IoSliceMut::new(&mut buf)];
        let msg = recvmsg::<SockaddrIn6>(
            sock.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::empty(),
        )
        .map_err(io::Error::from)?;
        let mut ttl = 0u8;
        let mut dst = Ipv6Addr::UNSPECIFIED;
        for c in msg.cmsgs().map_err(io::Error::from)? {
            match c {
                ControlMessageOwned::Ipv6HopLimit(h) => ttl = u8::try_from(h).unwrap_or(0),
                ControlMessageOwned::Ipv6PacketInfo(info) => {
                    dst = Ipv6Addr::from(info.ipi6_addr.s6_addr);
                }
                _ => {}
            }
        }
        let src = msg.address.map_or(Ipv6Addr::UNSPECIFIED, |a| a.ip());
        let n = msg.bytes;
        Ok(Ok(Received {
            env: Envelope {
                src: IpAddr::V6(src),
                dst: IpAddr::V6(dst),
                ttl,
            },
            payload: buf[..n].to_vec(),
        }))
    }
}

/// The scope id a link-local or link-scope multicast address needs on this interface.
fn scope(a: &Ipv6Addr, ifindex: u32) -> u32 {
    let link_local = a.segments()[0] & 0xffc0 == 0xfe80;
    let link_mcast = a.segments()[0] & 0xff0f == 0xff02;
    if link_local || link_mcast { ifindex } else { 0 }
}

/// `struct in6_pktinfo`, for sizing the control buffer.
#[allow(non_camel_case_types)]
type libc_in6_pktinfo = nix::libc::in6_pktinfo;
