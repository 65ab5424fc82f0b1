//! ICMP echo for `checktype = ping` (features §3.3), IPv4 (RFC 792) and IPv6 (RFC 4443 §4).
//!
//! An unprivileged "ping socket" (`SOCK_DGRAM`, `IPPROTO_ICMP`) is tried first; it needs the
//! process's group inside `net.ipv4.ping_group_range`, which is empty on most distributions.
//! A raw socket (root or `CAP_NET_RAW`) is the fallback. Which of the two works is learnt on
//! the first ping of each family and kept, so a refused ping socket costs one failed
//! `socket()` per process, not one per check. The socket is `connect`ed to the real
//! so the kernel only delivers that host's packets; replies are matched on sequence number and a
//! per-process payload token (and identifier on raw sockets; ping sockets rewrite it).
//! The caller bounds the wait with the check's deadline.

use std::net::{IpAddr, SocketAddr};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use socket2::{Domain, Protocol, Socket, Type};

/// ICMPv4 echo request / reply types (RFC 792).
const ECHO_V4: (u8, u8) = (8, 0);
/// ICMPv6 echo request / reply types (RFC 4443 §4.1, §4.2).
const ECHO_V6: (u8, u8) = (128, 129);

static SEQ: AtomicU64 = AtomicU64::new(1);

/// The Internet checksum (RFC 1071) of an ICMPv4 message.
pub fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for chunk in data.chunks(2) {
        let word = match chunk {
            [a, b] => u16::from_be_bytes([*a, *b]),
            [a] => u16::from_be_bytes([*a, 0]),
            _ => 0,
        };
        sum += u32::from(word);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    // The loop above leaves at most 16 bits.
    !u16::try_from(sum).unwrap_or(u16::MAX)
}

/// Builds an echo request: type, code 0, checksum (IPv4; the kernel fills it for IPv6),
/// identifier, sequence number and payload.
pub fn echo_request(v6: bool, id: u16, seq: u16, payload: &[u8]) -> Vec<u8> {
    let kind = if v6 { ECHO_V6.0 } else { ECHO_V4.0 };
    let mut p = vec![kind, 0, 0, 0];
    p.extend_from_slice(&id.to_be_bytes());
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(payload);
    if !v6 {
        let c = checksum(&p);
        p[2..4].copy_from_slice(&c.to_be_bytes());
    }
    p
}

/// An echo reply read from the wire (RFC 792 / RFC 4443 §4.2): identifier, sequence number
/// and the payload it echoes. Shared with the reachability prober.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EchoReply<'a> {
    /// Identifier (rewritten by the kernel on ping sockets).
    pub id: u16,
    /// Sequence number.
    pub seq: u16,
    /// Everything after the 8-byte header.
    pub payload: &'a [u8],
}

/// Reads `pkt` (an ICMP message, IPv4 header already stripped) as an echo reply; `None` for
/// anything else (a request, an error, a short packet). Never panics.
pub fn parse_echo_reply(v6: bool, pkt: &[u8]) -> Option<EchoReply<'_>> {
    let reply = if v6 { ECHO_V6.1 } else { ECHO_V4.1 };
    match pkt {
        [kind, 0, _, _, i0, i1, s0, s1, payload @ ..] if *kind == reply => Some(EchoReply {
            id: u16::from_be_bytes([*i0, *i1]),
            seq: u16::from_be_bytes([*s0, *s1]),
            payload,
        }),
        _ => None,
    }
}

/// True when `pkt` (an ICMP message, IPv4 header already stripped) is the reply to our
/// request. `id` is `None` on ping sockets, whose identifier the kernel rewrites.
pub fn is_reply(v6: bool, pkt: &[u8], id: Option<u16>, seq: u16, payload: &[u8]) -> bool {
    parse_echo_reply(v6, pkt).is_some_and(|r| {
        id.is_none_or(|i| r.id == i) && r.seq == seq && r.payload.starts_with(payload)
    })
}

/// Strips the IPv4 header a raw IPv4 socket delivers in front of the ICMP message.
pub(crate) fn strip_ipv4_header(buf: &[u8]) -> &[u8] {
    match buf.first() {
        Some(b) if b >> 4 == 4 => {
            let ihl = usize::from(b & 0x0f) * 4;
            buf.get(ihl..).unwrap_or(&[])
        }
        _ => buf,
    }
}

/// The kind of ICMP socket this process can open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IcmpSocket {
    /// Unprivileged ping socket (`SOCK_DGRAM`).
    Ping,
    /// Raw socket (root or `CAP_NET_RAW`).
    Raw,
}

/// What the first successful open found, per family (IPv4, IPv6), so a ping socket that the
/// system refuses is not tried again on every check. A ping socket that failed only for a
/// moment (no descriptors left) leaves `Raw` cached: that socket did open, and nothing in hbd
/// ever drops `CAP_NET_RAW`, so it keeps opening.
static KIND: [OnceLock<IcmpSocket>; 2] = [OnceLock::new(), OnceLock::new()];

/// Opens one ICMP socket of `kind` for the family of `v6`.
fn open_as(kind: IcmpSocket, v6: bool) -> std::io::Result<Socket> {
    let (domain, proto) = if v6 {
        (Domain::IPV6, Protocol::ICMPV6)
    } else {
        (Domain::IPV4, Protocol::ICMPV4)
    };
    let ty = match kind {
        IcmpSocket::Ping => Type::DGRAM,
        IcmpSocket::Raw => Type::RAW,
    };
    Socket::new(domain, ty, Some(proto))
}

/// Opens the cached kind of socket, or on the first ping of a family a ping socket and else a
/// raw one, caching whichever opened.
pub(crate) fn open(v6: bool) -> Result<(Socket, IcmpSocket), String> {
    let fail = |e: std::io::Error| format!("ping: cannot open ICMP socket: {e}");
    let known = &KIND[usize::from(v6)];
    if let Some(&kind) = known.get() {
        return open_as(kind, v6).map(|s| (s, kind)).map_err(fail);
    }
    let (sock, kind) = open_as(IcmpSocket::Ping, v6)
        .map(|s| (s, IcmpSocket::Ping))
        .or_else(|_| open_as(IcmpSocket::Raw, v6).map(|s| (s, IcmpSocket::Raw)))
        .map_err(fail)?;
    let _ = known.set(kind);
    Ok((sock, kind))
}

/// Sends one echo request to `ip` and waits (unbounded; the caller applies the deadline)
/// for the matching reply. Returns (up, reason).
pub async fn echo(ip: IpAddr) -> (bool, String) {
    let v6 = ip.is_ipv6();
    let (sock, kind) = match open(v6) {
        Ok(s) => s,
        Err(e) => return (false, e),
    };
    let raw = kind == IcmpSocket::Raw;
    if let Err(e) = sock.set_nonblocking(true) {
        return (false, format!("ping: {e}"));
    }
    let udp = match tokio::net::UdpSocket::from_std(std::net::UdpSocket::from(sock)) {
        Ok(u) => u,
        Err(e) => return (false, format!("ping: {e}")),
    };
    if let Err(e) = udp.connect(SocketAddr::new(ip, 0)).await {
        return (false, format!("ping: {e}"));
    }
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    let seq = (n & 0xffff) as u16;
    let id = (std::process::id() & 0xffff) as u16;
    let mut payload = *b"hbd-ping________";
    payload[8..].copy_from_slice(&n.to_be_bytes());
    let req = echo_request(v6, id, seq, &payload);
    if let Err(e) = udp.send(&req).await {
        return (false, format!("ping: {e}"));
    }
    let mut buf = [0u8; 1500];
    // Bounded by the caller's deadline; unrelated packets are skipped.
    loop {
        let len = match udp.recv(&mut buf).await {
            Ok(l) => l,
            Err(e) => return (false, format!("ping: {e}")),
        };
        let pkt = if raw && !v6 {
            strip_ipv4_header(&buf[..len])
        } else {
            &buf[..len]
        };
        if is_reply(v6, pkt, raw.then_some(id), seq, &payload) {
            return (true, "echo reply".into());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_of_a_known_echo_request() {
        // Type 8, code 0, id 0x1234, seq 1, no payload: ~(0x0800 + 0x1234 + 0x0001) = 0xe5ca.
        let p = echo_request(false, 0x1234, 1, &[]);
        assert_eq!(p, [8, 0, 0xe5, 0xca, 0x12, 0x34, 0, 1]);
        assert_eq!(checksum(&p), 0);
    }

    #[test]
    fn odd_length_checksum() {
        let p = echo_request(false, 1, 2, b"abc");
        assert_eq!(checksum(&p), 0);
    }

    #[test]
    fn replies_are_matched_exactly() {
        let payload = b"token123";
        let mut reply = echo_request(false, 7, 9, payload);
        reply[0] = 0;
        assert!(is_reply(false, &reply, Some(7), 9, payload));
        assert!(is_reply(false, &reply, None, 9, payload));
        assert!(!is_reply(false, &reply, Some(8), 9, payload));
        assert!(!is_reply(false, &reply, Some(7), 10, payload));
        assert!(!is_reply(false, &reply, Some(7), 9, b"token124"));
        assert!(!is_reply(false, &reply[..10], Some(7), 9, payload));
        let req = echo_request(false, 7, 9, payload);
        assert!(
            !is_reply(false, &req, Some(7), 9, payload),
            "own request is not a reply"
        );
        let mut r6 = echo_request(true, 7, 9, payload);
        r6[0] = 129;
        assert!(is_reply(true, &r6, Some(7), 9, payload));
    }

    #[test]
    fn echo_replies_are_parsed_and_odd_packets_refused() {
        let mut reply = echo_request(false, 0x0102, 0x0304, b"xy");
        reply[0] = 0;
        assert_eq!(
            parse_echo_reply(false, &reply),
            Some(EchoReply {
                id: 0x0102,
                seq: 0x0304,
                payload: b"xy"
            })
        );
        assert_eq!(
            parse_echo_reply(true, &reply),
            None,
            "family decides the type"
        );
        assert_eq!(parse_echo_reply(false, &reply[..7]), None);
        assert_eq!(parse_echo_reply(false, &[]), None);
        let mut code = reply.clone();
        code[1] = 1;
        assert_eq!(parse_echo_reply(false, &code), None);
        // Destination unreachable (type 3) is not a reply.
        assert_eq!(parse_echo_reply(false, &[3, 1, 0, 0, 0, 0, 0, 0]), None);
    }

    #[test]
    fn the_working_socket_kind_is_remembered() {
        // Root (tests run as root) can always open one of the two; after that it is known.
        let (_, kind) = open(false).unwrap();
        assert_eq!(KIND[0].get(), Some(&kind));
        let (_, again) = open(false).unwrap();
        assert_eq!(again, kind);
    }

    #[test]
    fn ipv4_header_is_stripped() {
        let mut pkt = vec![0x45u8; 20];
        pkt.extend_from_slice(&[0, 0, 1, 2]);
        assert_eq!(strip_ipv4_header(&pkt), [0, 0, 1, 2]);
        assert_eq!(strip_ipv4_header(&[0, 0, 1]), [0, 0, 1]);
        assert_eq!(strip_ipv4_header(&[0x4f]), [] as [u8; 0]);
    }
}
