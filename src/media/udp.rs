#![allow(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_possible_wrap
)]
//! UDP media: `ucast`, `mcast` and `bcast`, as heartbeat's plugins (HEARTBEAT-WIRE.md §1).
//!
//! * Every socket is bound to its interface (`SO_BINDTODEVICE`), so a heartbeat path is
//!   really that cable and not whatever route the kernel picks.
//! * `ucast` and `bcast` media on the same interface and port share one receive socket
//!   bound to `INADDR_ANY:port` (several sockets with `SO_REUSEPORT` would split the
//!   datagrams between them); a frame is attributed to the `ucast` link whose peer sent it,
//!   else to the `bcast` link. `IP_MULTICAST_ALL` is cleared on it so multicast heartbeats on
//!   the same port are not counted twice.
//! * `mcast` receives on a socket bound to `group:port` that joins the group on its
//!   interface; the send socket sets the interface, TTL and loop.
//! * A `ucast` line whose peer address is one of ours is skipped, so both nodes can share
//!   one ha.cf (heartbeat does the same).
//!
//! Receiving is the node thread's job: it waits on every [`ReceiveSocket`] at once and reads
//! them without blocking, so a frame costs one wakeup and no hand-over between tasks.
//!
//! **Answers wait.** A heartbeat sent only to answer the peer's, saying nothing new, leaves
//! with the IP TOS byte [`ANSWER_TOS`] instead of heartbeat's `IPTOS_LOWDELAY`. Every IPv4
//! receive socket has a twin bound to the same port (`SO_REUSEPORT`): classic BPF filters
//! (a reuseport selector for unicast, a socket filter on each twin for the copies that
//! broadcast and multicast deliver to both) send answers to the twin and everything else to
//! the socket the node waits on. The node reads the twin when it wakes anyway, with each
//! frame's kernel receive time (`SO_TIMESTAMPNS`), so liveness stays exact while the answer
//! costs no wakeup. A peer that does not mark its answers (heartbeat), or a network that
//! rewrites the TOS, only costs the wakeups the split saves; if the twin cannot be set up,
//! the medium runs with one socket.
//!
//! Sending never blocks: [`Transmit::send`] uses `send_to` on a non-blocking socket; a full
//! socket buffer drops
//! the frame, which is what a late heartbeat amounts to anyway.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use std::io::IoSliceMut;
use std::net::UdpSocket;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::time::Duration;

use nix::sys::socket::{
    ControlMessageOwned, MsgFlags, SockaddrStorage, recvmsg, setsockopt, sockopt,
};
use socket2::{Domain, Protocol, SockFilter, Socket, Type};

use super::{InboundRef, Medium, Transmit};
use crate::config::MediumSpec;

/// IP TOS of ordinary heartbeats: `IPTOS_LOWDELAY`, as heartbeat's UDP plugins send.
const HEARTBEAT_TOS: u8 = 0x10;

/// IP TOS of an answer that says nothing new (`IPTOS_LOWDELAY | IPTOS_RELIABILITY`): the
/// receiver's filters queue it on the twin socket, read without a wakeup (module doc).
pub const ANSWER_TOS: u8 = 0x14;

/// Largest datagram read; heartbeat's MAXMSG is 256 KiB, our frames are ~300 bytes. A
/// receive buffer must be this long.
pub const RECV_BUFFER: usize = 64 * 1024;

/// Why a medium could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    /// The interface does not exist.
    #[error("medium {medium}: no interface named '{interface}'")]
    NoSuchInterface {
        /// Link name.
        medium: String,
        /// Interface name.
        interface: String,
    },
    /// The interface has no IPv4 broadcast address.
    #[error("medium {medium}: interface '{interface}' has no IPv4 broadcast address")]
    NoBroadcast {
        /// Link name.
        medium: String,
        /// Interface name.
        interface: String,
    },
    /// A socket operation failed.
    #[error("medium {medium}: {what}: {source}")]
    Socket {
        /// Link name.
        medium: String,
        /// What was being done.
        what: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
    /// The medium type is not built yet.
    #[error("medium {medium}: {reason}")]
    Unsupported {
        /// Link name.
        medium: String,
        /// Why.
        reason: String,
    },
}

/// The outcome of opening every configured medium.
pub struct OpenedMedia {
    /// Open media, in config order; a frame's `link` indexes this list.
    pub media: Vec<Medium>,
    /// Non-blocking receive sockets, read by the node's own thread.
    pub receivers: Vec<ReceiveSocket>,
    /// Media skipped on purpose, with the reason (e.g. a ucast line to ourselves).
    pub skipped: Vec<(String, String)>,
}

/// Opens every UDP medium of `specs`, skipping `ucast` lines whose peer is in `local_addrs`
/// (reported in `skipped`). Serial lines are left out here: the daemon opens them after the
/// UDP media (media::serial).
pub fn open_all(specs: &[MediumSpec], local_addrs: &[IpAddr]) -> Result<OpenedMedia, MediaError> {
    let mut media = Vec::new();
    let mut receivers = Vec::new();
    let mut skipped = Vec::new();
    // (interface, port, is_v6) -> attribution table for the shared receive socket.
    let mut shared: BTreeMap<(String, u16, bool), Attribution> = BTreeMap::new();

    for spec in specs {
        let name = spec.link_name();
        match spec {
            MediumSpec::Ucast {
                interface,
                peer,
                port,
            } => {
                if local_addrs.contains(peer) {
                    skipped.push((name, format!("{peer} is a local address")));
                    continue;
                }
                let link = media.len();
                let tx = open_tx(
                    &name,
                    interface,
                    SendKind::Unicast,
                    SocketAddr::new(*peer, *port),
                )?;
                media.push(Medium {
                    name: name.clone(),
                    tx: Box::new(tx),
                });
                shared
                    .entry((interface.clone(), *port, peer.is_ipv6()))
                    .or_default()
                    .ucast
                    .push((*peer, link));
            }
            MediumSpec::Bcast { interface, port } => {
                let broadcast =
                    broadcast_address(interface).ok_or_else(|| MediaError::NoBroadcast {
                        medium: name.clone(),
                        interface: interface.clone(),
                    })?;
                let link = media.len();
                let tx = open_tx(
                    &name,
                    interface,
                    SendKind::Broadcast,
                    SocketAddr::new(IpAddr::V4(broadcast), *port),
                )?;
                media.push(Medium {
                    name: name.clone(),
                    tx: Box::new(tx),
                });
                shared
                    .entry((interface.clone(), *port, false))
                    .or_default()
                    .bcast = Some(link);
            }
            MediumSpec::Mcast {
                interface,
                group,
                port,
                ttl,
                loopback,
            } => {
                let link = media.len();
                let tx = open_tx(
                    &name,
                    interface,
                    SendKind::Multicast {
                        ttl: *ttl,
                        loopback: *loopback,
                    },
                    SocketAddr::new(*group, *port),
                )?;
                media.push(Medium {
                    name: name.clone(),
                    tx: Box::new(tx),
                });
                let (socket, answers) = open_mcast_receive(&name, interface, *group, *port)?;
                receivers.push(ReceiveSocket {
                    socket,
                    answers,
                    attribution: Attribution {
                        ucast: Vec::new(),
                        bcast: Some(link),
                    },
                });
            }
            // Not UDP: the daemon opens serial lines itself (`media::serial`).
            MediumSpec::Serial { .. } => {}
        }
    }

    for ((interface, port, v6), attribution) in shared {
        let medium = format!("udp:{interface}:{port}");
        let (socket, answers) = open_shared_receive(&medium, &interface, port, v6)?;
        receivers.push(ReceiveSocket {
            socket,
            answers,
            attribution,
        });
    }

    Ok(OpenedMedia {
        media,
        receivers,
        skipped,
    })
}

/// Every address configured on this host (in this network namespace).
pub fn local_addresses() -> Vec<IpAddr> {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    addrs
        .filter_map(|a| a.address)
        .filter_map(|sa| {
            if let Some(v4) = sa.as_sockaddr_in() {
                Some(IpAddr::V4(v4.ip()))
            } else {
                sa.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip()))
            }
        })
        .collect()
}

fn interface_ipv4(interface: &str) -> Option<Ipv4Addr> {
    nix::ifaddrs::getifaddrs()
        .ok()?
        .filter(|a| a.interface_name == interface)
        .filter_map(|a| a.address)
        .find_map(|b| b.as_sockaddr_in().map(|s| s.ip()))
}

/// The interface's IPv4 broadcast address: the configured one, else computed from its first
/// address and netmask (`ip addr add` without `brd +` configures none, and getifaddrs then
/// reports the local address itself), else 255.255.255.255, which still leaves only through
/// this interface because the socket is bound to it.
fn broadcast_address(interface: &str) -> Option<Ipv4Addr> {
    let addrs: Vec<_> = nix::ifaddrs::getifaddrs()
        .ok()?
        .filter(|a| a.interface_name == interface)
        .collect();
    if addrs.is_empty() {
        return None;
    }
    for a in &addrs {
        let Some(ip) = a.address.and_then(|s| s.as_sockaddr_in().map(|s| s.ip())) else {
            continue;
        };
        let configured = a
            .broadcast
            .and_then(|b| b.as_sockaddr_in().map(|s| s.ip()))
            .filter(|b| !b.is_unspecified() && *b != ip);
        if let Some(b) = configured {
            return Some(b);
        }
        if let Some(mask) = a.netmask.and_then(|s| s.as_sockaddr_in().map(|s| s.ip()))
            && mask != Ipv4Addr::BROADCAST
        {
            return Some(directed_broadcast(ip, mask));
        }
    }
    Some(Ipv4Addr::BROADCAST)
}

fn directed_broadcast(ip: Ipv4Addr, mask: Ipv4Addr) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(ip) | !u32::from(mask))
}

/// Which link a frame received on a shared socket belongs to.
#[derive(Debug, Default, Clone)]
struct Attribution {
    ucast: Vec<(IpAddr, usize)>,
    bcast: Option<usize>,
}

impl Attribution {
    fn link_for(&self, from: IpAddr) -> Option<usize> {
        self.ucast
            .iter()
            .find(|(peer, _)| *peer == from)
            .map(|(_, link)| *link)
            .or(self.bcast)
            .or_else(|| self.ucast.first().map(|(_, link)| *link))
    }
}

/// The receive half of one or more media: a non-blocking socket and which link each
/// sender's frames belong to. The node's thread waits on [`ReceiveSocket::fd`] and reads
/// with [`ReceiveSocket::try_recv`]; answers queue on the twin (module doc), read with
/// [`ReceiveSocket::try_recv_answer`] whenever the thread is awake anyway.
#[derive(Debug)]
pub struct ReceiveSocket {
    socket: UdpSocket,
    answers: Option<UdpSocket>,
    attribution: Attribution,
}

impl ReceiveSocket {
    /// The socket, to wait on for readability.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }

    /// Whether answers are split off to a twin socket.
    pub fn splits_answers(&self) -> bool {
        self.answers.is_some()
    }

    /// Reads one datagram into `buf` ([`RECV_BUFFER`] long) without blocking:
    /// `Ok(None)` for a datagram from an address no link accepts (dropped), an error of
    /// kind `WouldBlock` when nothing is queued.
    pub fn try_recv<'b>(&self, buf: &'b mut [u8]) -> std::io::Result<Option<InboundRef<'b>>> {
        let (len, from) = self.socket.recv_from(buf)?;
        Ok(self.inbound(&buf[..len], from))
    }

    /// Reads one queued answer like [`ReceiveSocket::try_recv`], with the kernel's receive
    /// time (since the Unix epoch) when it has one; `WouldBlock` when none is queued or
    /// there is no twin.
    pub fn try_recv_answer<'b>(
        &self,
        buf: &'b mut [u8],
    ) -> std::io::Result<Option<(InboundRef<'b>, Option<Duration>)>> {
        let Some(answers) = &self.answers else {
            return Err(std::io::ErrorKind::WouldBlock.into());
        };
        // Room for one SCM_TIMESTAMPNS (32 bytes), aligned for cmsghdr, on the stack.
        #[repr(C, align(8))]
        struct ControlBuffer([u8; 64]);
        let mut control = ControlBuffer([0; 64]);
        let mut iov = [IoSliceMut::new(buf)];
        let (len, from, stamp) = {
            let msg = recvmsg::<SockaddrStorage>(
                answers.as_raw_fd(),
                &mut iov,
                Some(&mut control.0),
                MsgFlags::MSG_DONTWAIT,
            )?;
            let stamp = msg.cmsgs().ok().and_then(|mut c| {
                c.find_map(|m| match m {
                    ControlMessageOwned::ScmTimestampns(ts) => Some(Duration::from(ts)),
                    _ => None,
                })
            });
            let from = msg.address.and_then(|a: SockaddrStorage| {
                a.as_sockaddr_in()
                    .map(|v4| SocketAddr::from((v4.ip(), v4.port())))
            });
            (msg.bytes, from, stamp)
        };
        Ok(from
            .and_then(|from| self.inbound(&buf[..len], from))
            .map(|inbound| (inbound, stamp)))
    }

    /// `frame` from `from` on the link it belongs to; `None` when no link accepts it.
    fn inbound<'b>(&self, frame: &'b [u8], from: SocketAddr) -> Option<InboundRef<'b>> {
        self.attribution.link_for(from.ip()).map(|link| InboundRef {
            link,
            frame,
            from: Some(from),
        })
    }
}

/// Classic BPF that returns `on_answer` for a datagram marked [`ANSWER_TOS`] and
/// `otherwise` for any other. The TOS byte is read relative to the IP header
/// (`SKF_NET_OFF`), so the program does not depend on the frame's layout. As a socket
/// filter, `u32::MAX` keeps a datagram and 0 drops it; as a reuseport selector, the value
/// is the index of the socket in the group.
fn answer_split(on_answer: u32, otherwise: u32) -> [nix::libc::sock_filter; 4] {
    const LD_B_ABS: u16 = 0x30; // BPF_LD | BPF_B | BPF_ABS
    const JEQ_K: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
    const RET_K: u16 = 0x06; // BPF_RET | BPF_K
    const SKF_NET_OFF: i32 = -0x10_0000;
    let op = |code, jt, jf, k| nix::libc::sock_filter { code, jt, jf, k };
    [
        op(LD_B_ABS, 0, 0, (SKF_NET_OFF + 1) as u32),
        op(JEQ_K, 0, 1, u32::from(ANSWER_TOS)),
        op(RET_K, 0, 0, on_answer),
        op(RET_K, 0, 0, otherwise),
    ]
}

/// Attaches [`answer_split`] as a socket filter.
fn filter_answers(socket: &Socket, on_answer: u32, otherwise: u32) -> std::io::Result<()> {
    let program =
        answer_split(on_answer, otherwise).map(|f| SockFilter::new(f.code, f.jt, f.jf, f.k));
    socket.attach_filter(&program)
}

/// The reuseport selector of a twin pair: answers to the twin (bound second, index 1),
/// everything else to the socket the node waits on (index 0).
fn attach_answer_selector(socket: &Socket) -> nix::Result<()> {
    let mut program = answer_split(1, 0);
    let fprog = nix::libc::sock_fprog {
        len: program.len() as u16,
        filter: program.as_mut_ptr(),
    };
    setsockopt(socket, sockopt::AttachReusePortCbpf, &fprog)
}

/// Opens a receive socket on `interface` bound to `addr` and, for IPv4, its twin for
/// answers; `join` runs on each after binding (multicast membership). When the twin cannot
/// be set up the medium runs with the one socket.
fn bind_with_answer_twin(
    medium: &str,
    interface: &str,
    addr: SocketAddr,
    join: impl Fn(&Socket) -> Result<(), MediaError>,
) -> Result<(UdpSocket, Option<UdpSocket>), MediaError> {
    let open = || -> Result<Socket, MediaError> {
        let socket = open_receive_socket(medium, interface, addr.is_ipv6())?;
        socket
            .bind(&addr.into())
            .map_err(sock_err(medium, "binding receive socket"))?;
        join(&socket)?;
        Ok(socket)
    };
    let socket = open()?;
    if addr.is_ipv6() {
        return Ok((socket.into(), None));
    }
    let nix_err = |what: &'static str| {
        move |e: nix::Error| MediaError::Socket {
            medium: medium.to_string(),
            what,
            source: e.into(),
        }
    };
    let twin = open().and_then(|twin| {
        setsockopt(&twin, sockopt::ReceiveTimestampns, &true)
            .map_err(nix_err("enabling receive timestamps"))?;
        attach_answer_selector(&socket).map_err(nix_err("attaching the answer selector"))?;
        filter_answers(&twin, u32::MAX, 0)
            .map_err(sock_err(medium, "filtering the answer socket"))?;
        filter_answers(&socket, 0, u32::MAX)
            .map_err(sock_err(medium, "filtering the receive socket"))?;
        Ok(twin)
    });
    match twin {
        Ok(twin) => Ok((socket.into(), Some(twin.into()))),
        Err(e) => {
            // Without a working twin every frame must reach the one socket.
            let _ = socket.detach_filter();
            tracing::warn!("{e}: answers to our heartbeats will wake the node");
            Ok((socket.into(), None))
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum SendKind {
    Unicast,
    Broadcast,
    Multicast { ttl: u8, loopback: bool },
}

fn sock_err(medium: &str, what: &'static str) -> impl FnOnce(std::io::Error) -> MediaError {
    let medium = medium.to_string();
    move |source| MediaError::Socket {
        medium,
        what,
        source,
    }
}

fn if_index(medium: &str, interface: &str) -> Result<u32, MediaError> {
    nix::net::if_::if_nametoindex(interface).map_err(|_| MediaError::NoSuchInterface {
        medium: medium.to_string(),
        interface: interface.to_string(),
    })
}

fn new_socket(medium: &str, interface: &str, v6: bool) -> Result<Socket, MediaError> {
    if_index(medium, interface)?;
    let domain = if v6 { Domain::IPV6 } else { Domain::IPV4 };
    let socket = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))
        .map_err(sock_err(medium, "creating socket"))?;
    socket
        .bind_device(Some(interface.as_bytes()))
        .map_err(sock_err(medium, "binding to device"))?;
    socket
        .set_nonblocking(true)
        .map_err(sock_err(medium, "setting non-blocking"))?;
    Ok(socket)
}

/// The transmit half of a medium sending to `dest`: a socket for heartbeats and, for
/// IPv4, one for answers that say nothing new (marked [`ANSWER_TOS`]). Unicast sockets are
/// connected to the peer, so a send skips the route lookup (the kernel re-routes when the
/// routes change).
fn open_tx(
    medium: &str,
    interface: &str,
    kind: SendKind,
    dest: SocketAddr,
) -> Result<UdpTx, MediaError> {
    let v6 = dest.is_ipv6();
    let open = |tos: u8| -> Result<TxSocket, MediaError> {
        let socket = open_send(medium, interface, v6, kind, tos)?;
        // Unconnected (send_to) if the peer is unreachable right now.
        let connected = matches!(kind, SendKind::Unicast) && socket.connect(dest).is_ok();
        Ok(TxSocket { socket, connected })
    };
    let answer_socket = if v6 { None } else { Some(open(ANSWER_TOS)?) };
    Ok(UdpTx {
        socket: open(HEARTBEAT_TOS)?,
        answer_socket,
        dest,
    })
}

fn open_send(
    medium: &str,
    interface: &str,
    v6: bool,
    kind: SendKind,
    tos: u8,
) -> Result<UdpSocket, MediaError> {
    let socket = new_socket(medium, interface, v6)?;
    if !v6 {
        socket
            .set_tos_v4(u32::from(tos))
            .map_err(sock_err(medium, "setting TOS"))?;
    }
    match kind {
        SendKind::Unicast => {}
        SendKind::Broadcast => socket
            .set_broadcast(true)
            .map_err(sock_err(medium, "enabling broadcast"))?,
        SendKind::Multicast { ttl, loopback } => {
            let index = if_index(medium, interface)?;
            if v6 {
                socket
                    .set_multicast_if_v6(index)
                    .map_err(sock_err(medium, "setting multicast interface"))?;
                socket
                    .set_multicast_hops_v6(u32::from(ttl))
                    .map_err(sock_err(medium, "setting multicast hops"))?;
                socket
                    .set_multicast_loop_v6(loopback)
                    .map_err(sock_err(medium, "setting multicast loop"))?;
            } else {
                // SO_BINDTODEVICE already picks the output device; also name the interface
                // address where there is one, for kernels that consult IP_MULTICAST_IF first.
                if let Some(addr) = interface_ipv4(interface) {
                    socket
                        .set_multicast_if_v4(&addr)
                        .map_err(sock_err(medium, "setting multicast interface"))?;
                }
                socket
                    .set_multicast_ttl_v4(u32::from(ttl))
                    .map_err(sock_err(medium, "setting multicast TTL"))?;
                socket
                    .set_multicast_loop_v4(loopback)
                    .map_err(sock_err(medium, "setting multicast loop"))?;
            }
        }
    }
    Ok(socket.into())
}

/// A receive socket bound to its device, ready to share its port with its answer twin
/// (`SO_REUSEPORT`), and for IPv4 deaf to multicast groups it did not join.
fn open_receive_socket(medium: &str, interface: &str, v6: bool) -> Result<Socket, MediaError> {
    let socket = new_socket(medium, interface, v6)?;
    socket
        .set_reuse_address(true)
        .map_err(sock_err(medium, "setting SO_REUSEADDR"))?;
    socket
        .set_reuse_port(true)
        .map_err(sock_err(medium, "setting SO_REUSEPORT"))?;
    if !v6 {
        socket
            .set_multicast_all_v4(false)
            .map_err(sock_err(medium, "clearing IP_MULTICAST_ALL"))?;
    }
    Ok(socket)
}

fn open_shared_receive(
    medium: &str,
    interface: &str,
    port: u16,
    v6: bool,
) -> Result<(UdpSocket, Option<UdpSocket>), MediaError> {
    let any: IpAddr = if v6 {
        Ipv6Addr::UNSPECIFIED.into()
    } else {
        Ipv4Addr::UNSPECIFIED.into()
    };
    bind_with_answer_twin(medium, interface, SocketAddr::new(any, port), |_| Ok(()))
}

fn open_mcast_receive(
    medium: &str,
    interface: &str,
    group: IpAddr,
    port: u16,
) -> Result<(UdpSocket, Option<UdpSocket>), MediaError> {
    let index = if_index(medium, interface)?;
    let join = |socket: &Socket| -> Result<(), MediaError> {
        match group {
            IpAddr::V4(g) => socket
                .join_multicast_v4_n(&g, &socket2::InterfaceIndexOrAddress::Index(index))
                .map_err(sock_err(medium, "joining multicast group")),
            IpAddr::V6(g) => socket
                .join_multicast_v6(&g, index)
                .map_err(sock_err(medium, "joining multicast group")),
        }
    };
    bind_with_answer_twin(medium, interface, SocketAddr::new(group, port), join)
}

/// A send socket, connected to the medium's destination when it could be.
struct TxSocket {
    socket: UdpSocket,
    /// Whether `socket` is connected to the destination (`send`, not `send_to`).
    connected: bool,
}

impl TxSocket {
    fn send(&self, frame: &[u8], dest: SocketAddr) -> std::io::Result<()> {
        if !self.connected {
            return self.socket.send_to(frame, dest).map(|_| ());
        }
        match self.socket.send(frame) {
            // A connected socket reports an earlier ICMP error (the peer's port was closed)
            // on the next send, which it then drops: send again, the error is consumed.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                self.socket.send(frame).map(|_| ())
            }
            other => other.map(|_| ()),
        }
    }
}

/// Transmit half of one UDP medium.
struct UdpTx {
    /// Heartbeats.
    socket: TxSocket,
    /// Answers marked [`ANSWER_TOS`]; `None` (IPv6) sends them as heartbeats.
    answer_socket: Option<TxSocket>,
    dest: SocketAddr,
}

impl Transmit for UdpTx {
    fn send(&self, frame: &[u8]) -> std::io::Result<()> {
        self.socket.send(frame, self.dest)
    }

    fn send_answer(&self, frame: &[u8]) -> std::io::Result<()> {
        self.answer_socket
            .as_ref()
            .unwrap_or(&self.socket)
            .send(frame, self.dest)
    }

    fn describe(&self) -> String {
        format!("sending to {}", self.dest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attribution_prefers_ucast_peer_then_bcast() {
        let a = Attribution {
            ucast: vec![("192.0.2.12".parse().unwrap(), 0)],
            bcast: Some(1),
        };
        assert_eq!(a.link_for("192.0.2.12".parse().unwrap()), Some(0));
        assert_eq!(a.link_for("192.0.2.13".parse().unwrap()), Some(1));
        let only_ucast = Attribution {
            ucast: vec![("192.0.2.12".parse().unwrap(), 2)],
            bcast: None,
        };
        assert_eq!(only_ucast.link_for("192.0.2.99".parse().unwrap()), Some(2));
    }

    #[test]
    fn directed_broadcast_from_mask() {
        assert_eq!(
            directed_broadcast(
                "192.0.2.11".parse().unwrap(),
                "255.255.255.0".parse().unwrap()
            ),
            "192.0.2.255".parse::<Ipv4Addr>().unwrap()
        );
    }

    #[test]
    fn unknown_interface_is_a_clear_error() {
        let spec = MediumSpec::Ucast {
            interface: "nosuchif0".into(),
            peer: "192.0.2.12".parse().unwrap(),
            port: 694,
        };
        let err = open_all(&[spec], &[]).err().expect("must fail");
        assert!(
            err.to_string().contains("no interface named 'nosuchif0'"),
            "{err}"
        );
    }
}
