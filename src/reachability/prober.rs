//! The ICMP edge: one echo request per target address every probe interval, and the replies
//! that come back, dated by their arrival.
//!
//! The codec is [`crate::director::ping`]'s (RFC 792, RFC 4443 §4), and so is the socket
//! choice: an unprivileged ping socket when the system allows it, else a raw socket. One
//! socket per family serves every target (unconnected; `send_to` each address). A reply
//! counts when it comes from a probed address, carries this prober's random token, echoes a
//! probe sent no longer than `max_age` ago (a reply slower than `deadping` does not keep a
//! target up) and, on a raw socket, carries our identifier. Everything else on the socket
//! (other processes' replies on a raw socket, errors, neighbour discovery) is skipped and
//! counted; nothing received can panic the prober.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::time::Instant;

use crate::director::ping::{IcmpSocket, echo_request, open, parse_echo_reply, strip_ipv4_header};

/// Echo payload: 8 bytes of token, then the probe's send time (µs since the prober started).
const PAYLOAD_LEN: usize = 16;

/// A reply from a probed address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeReply {
    /// The address that answered.
    pub from: IpAddr,
    /// When the reply arrived.
    pub at: Instant,
}

/// What the prober did, for logs and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProberCounters {
    /// Echo requests sent.
    pub sent: u64,
    /// Requests the kernel refused (no route, filtered, no buffer).
    pub send_errors: u64,
    /// Replies that counted.
    pub replies: u64,
    /// Replies to a probe older than `max_age`.
    pub late: u64,
    /// Packets that were not our replies.
    pub skipped: u64,
}

/// One family's socket.
#[derive(Debug)]
struct FamilySocket {
    socket: UdpSocket,
    /// Raw sockets deliver every ICMP packet (and IPv4 headers); ping sockets only ours.
    raw: bool,
}

/// Sends echo requests to a set of addresses and reads their replies.
#[derive(Debug)]
pub struct Prober {
    addresses: Vec<IpAddr>,
    max_age: Duration,
    token: [u8; 8],
    id: u16,
    seq: u16,
    started: Instant,
    v4: Option<FamilySocket>,
    v6: Option<FamilySocket>,
    /// Why the last open of a family failed, so it is logged once, not every round.
    open_error: [Option<String>; 2],
    counters: ProberCounters,
}

impl Prober {
    /// A prober for `addresses` that ignores replies to probes older than `max_age`. Sockets
    /// open at the first [`send_round`](Self::send_round).
    pub fn new(addresses: Vec<IpAddr>, max_age: Duration) -> Prober {
        let mut token = [0u8; 8];
        if getrandom::fill(&mut token).is_err() {
            // Only the filtering of other processes' replies on a raw socket depends on it.
            token = u64::from(std::process::id()).to_be_bytes();
        }
        let id = u16::from_be_bytes([token[0], token[1]]);
        Prober {
            addresses,
            max_age,
            token,
            id,
            seq: 0,
            started: crate::clock::now(),
            v4: None,
            v6: None,
            open_error: [None, None],
            counters: ProberCounters::default(),
        }
    }

    /// Probes these addresses from now on (reload).
    pub fn set_addresses(&mut self, addresses: Vec<IpAddr>, max_age: Duration) {
        self.addresses = addresses;
        self.max_age = max_age;
    }

    /// What it did so far.
    pub fn counters(&self) -> ProberCounters {
        self.counters
    }

    /// Sends one echo request to every address, opening the sockets it needs. Never blocks:
    /// a request the kernel does not take at once is counted as a send error.
    pub fn send_round(&mut self) {
        let now = crate::clock::now();
        let sent_us = u64::try_from(now.duration_since(self.started).as_micros()).unwrap_or(0);
        let mut payload = [0u8; PAYLOAD_LEN];
        payload[..8].copy_from_slice(&self.token);
        payload[8..].copy_from_slice(&sent_us.to_be_bytes());
        for i in 0..self.addresses.len() {
            let ip = self.addresses[i];
            let v6 = ip.is_ipv6();
            if self.socket(v6).is_none() {
                self.open_family(v6);
            }
            let Some(fs) = self.socket(v6) else {
                self.counters.send_errors += 1;
                continue;
            };
            let request = echo_request(v6, self.id, self.seq, &payload);
            // A direct non-blocking send: tokio's try_send_to refuses until the runtime has
            // seen the socket writable once.
            let to = socket2::SockAddr::from(SocketAddr::new(ip, 0));
            match socket2::SockRef::from(&fs.socket).send_to(&request, &to) {
                Ok(_) => self.counters.sent += 1,
                Err(e) => {
                    self.counters.send_errors += 1;
                    tracing::debug!(target = %ip, "ping target: echo request not sent: {e}");
                }
            }
        }
        self.seq = self.seq.wrapping_add(1);
    }

    /// The next reply that counts. Cancel-safe (it only reads); unrelated packets are skipped
    /// inside. A receive error closes that family's socket (reopened at the next round) and
    /// is returned.
    pub async fn recv(&mut self) -> io::Result<ProbeReply> {
        let mut buf4 = [0u8; 1500];
        let mut buf6 = [0u8; 1500];
        loop {
            let (v6, got) = tokio::select! {
                r = recv_from(self.v4.as_ref(), &mut buf4) => (false, r),
                r = recv_from(self.v6.as_ref(), &mut buf6) => (true, r),
            };
            let at = crate::clock::now();
            let (len, from) = match got {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!("ping targets: ICMP receive failed, reopening the socket: {e}");
                    *self.slot(v6) = None;
                    return Err(e);
                }
            };
            let buf = if v6 { &buf6[..len] } else { &buf4[..len] };
            if let Some(reply) = self.accept(v6, buf, from.ip(), at) {
                return Ok(reply);
            }
        }
    }

    /// Checks one received packet; `Some` when it is a timely reply to one of our probes.
    fn accept(&mut self, v6: bool, buf: &[u8], from: IpAddr, at: Instant) -> Option<ProbeReply> {
        let raw = self.socket(v6).is_some_and(|fs| fs.raw);
        let pkt = if raw && !v6 {
            strip_ipv4_header(buf)
        } else {
            buf
        };
        // An IPv4-mapped source (never on an ICMPv4 socket, but cheap to normalise).
        let from = match from {
            IpAddr::V6(a) => a.to_ipv4_mapped().map_or(from, IpAddr::V4),
            v4 => v4,
        };
        let ours = parse_echo_reply(v6, pkt).filter(|r| {
            (!raw || r.id == self.id)
                && r.payload.len() >= PAYLOAD_LEN
                && r.payload[..8] == self.token
                && self.addresses.contains(&from)
        });
        let Some(reply) = ours else {
            self.counters.skipped += 1;
            return None;
        };
        let mut sent = [0u8; 8];
        sent.copy_from_slice(&reply.payload[8..PAYLOAD_LEN]);
        let sent = self.started + Duration::from_micros(u64::from_be_bytes(sent));
        if sent > at || at.duration_since(sent) > self.max_age {
            self.counters.late += 1;
            return None;
        }
        self.counters.replies += 1;
        Some(ProbeReply { from, at })
    }

    fn socket(&self, v6: bool) -> Option<&FamilySocket> {
        if v6 {
            self.v6.as_ref()
        } else {
            self.v4.as_ref()
        }
    }

    fn slot(&mut self, v6: bool) -> &mut Option<FamilySocket> {
        if v6 { &mut self.v6 } else { &mut self.v4 }
    }

    /// Opens the family's socket; a failure is logged when it first happens (or changes) and
    /// when the socket opens again.
    fn open_family(&mut self, v6: bool) {
        let family = if v6 { "IPv6" } else { "IPv4" };
        let opened = open(v6).and_then(|(sock, kind)| {
            sock.set_nonblocking(true)
                .map_err(|e| format!("ping: {e}"))?;
            let socket = UdpSocket::from_std(std::net::UdpSocket::from(sock))
                .map_err(|e| format!("ping: {e}"))?;
            Ok(FamilySocket {
                socket,
                raw: kind == IcmpSocket::Raw,
            })
        });
        let last = &mut self.open_error[usize::from(v6)];
        match opened {
            Ok(fs) => {
                if last.take().is_some() {
                    tracing::info!("ping targets: {family} ICMP socket open again");
                }
                *self.slot(v6) = Some(fs);
            }
            Err(e) => {
                if last.as_deref() != Some(e.as_str()) {
                    tracing::error!(
                        "ping targets: cannot probe {family} targets, they will be dead: {e}"
                    );
                    *last = Some(e);
                }
            }
        }
    }
}

/// Receives on `socket`, or waits forever when there is none.
async fn recv_from(
    socket: Option<&FamilySocket>,
    buf: &mut [u8],
) -> io::Result<(usize, SocketAddr)> {
    match socket {
        Some(fs) => fs.socket.recv_from(buf).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// A reply as the target would send it to `p`'s probe sent `sent_us` after its start.
    fn reply_to(p: &Prober, v6: bool, sent_us: u64, id: u16) -> Vec<u8> {
        let mut payload = p.token.to_vec();
        payload.extend_from_slice(&sent_us.to_be_bytes());
        let mut pkt = echo_request(v6, id, 1, &payload);
        pkt[0] = if v6 { 129 } else { 0 };
        pkt
    }

    #[tokio::test(start_paused = true)]
    async fn replies_are_accepted_only_when_they_are_ours_and_timely() {
        let target = ip("203.0.113.1");
        let mut p = Prober::new(vec![target], Duration::from_millis(100));
        let at = p.started + Duration::from_millis(50);
        let good = reply_to(&p, false, 10_000, 7);
        assert_eq!(
            p.accept(false, &good, target, at),
            Some(ProbeReply { from: target, at })
        );
        // From an address we did not probe.
        assert_eq!(p.accept(false, &good, ip("203.0.113.9"), at), None);
        // Another token.
        let mut other = good.clone();
        other[8] ^= 1;
        assert_eq!(p.accept(false, &other, target, at), None);
        // Older than max_age, or claiming to come from the future.
        let old = reply_to(&p, false, 0, 7);
        assert_eq!(
            p.accept(false, &old, target, at + Duration::from_millis(101)),
            None
        );
        let future = reply_to(&p, false, 60_000, 7);
        assert_eq!(p.accept(false, &future, target, at), None);
        // Our own request, short packets, garbage.
        let mut request = good.clone();
        request[0] = 8;
        for bad in [&request[..], &good[..10], &[][..], &[0xff; 64][..]] {
            assert_eq!(p.accept(false, bad, target, at), None);
        }
        let c = p.counters();
        assert_eq!((c.replies, c.late, c.skipped), (1, 2, 6));
    }

    #[tokio::test(start_paused = true)]
    async fn raw_sockets_check_the_identifier_and_strip_the_ipv4_header() {
        let target = ip("203.0.113.1");
        let mut p = Prober::new(vec![target], Duration::from_millis(100));
        let (sock, _) = open(false).expect("tests run as root");
        sock.set_nonblocking(true).unwrap();
        p.v4 = Some(FamilySocket {
            socket: UdpSocket::from_std(std::net::UdpSocket::from(sock)).unwrap(),
            raw: true,
        });
        let at = p.started + Duration::from_millis(1);
        let mut ipv4 = vec![0x45u8];
        ipv4.resize(20, 0);
        let mut ours = ipv4.clone();
        ours.extend(reply_to(&p, false, 0, p.id));
        assert!(p.accept(false, &ours, target, at).is_some());
        let mut theirs = ipv4;
        theirs.extend(reply_to(&p, false, 0, p.id.wrapping_add(1)));
        assert!(p.accept(false, &theirs, target, at).is_none());
        // A truncated header never panics.
        assert!(p.accept(false, &[0x4f, 1, 2], target, at).is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn random_packets_never_panic_and_never_count() {
        let target = ip("203.0.113.1");
        let mut p = Prober::new(vec![target], Duration::from_millis(100));
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for round in 0..5_000usize {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let len = round % 64;
            let mut pkt: Vec<u8> = (0..len)
                .map(|i| {
                    seed.rotate_left(u32::try_from(i % 64).unwrap_or(0))
                        .to_le_bytes()[0]
                })
                .collect();
            if round % 2 == 0 && !pkt.is_empty() {
                pkt[0] = 0; // an echo reply type, so the rest is looked at
            }
            assert!(p.accept(round % 3 == 0, &pkt, target, p.started).is_none());
        }
        assert_eq!(p.counters().replies, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn ipv6_replies_are_read() {
        let target = ip("2001:db8::1");
        let mut p = Prober::new(vec![target], Duration::from_millis(100));
        let good = reply_to(&p, true, 0, 3);
        assert!(p.accept(true, &good, target, p.started).is_some());
        let v4_reply = reply_to(&p, false, 0, 3);
        assert!(p.accept(true, &v4_reply, target, p.started).is_none());
    }

    #[tokio::test]
    async fn loopback_answers_a_round() {
        let target = ip("127.0.0.1");
        let mut p = Prober::new(vec![target], Duration::from_secs(5));
        p.send_round();
        assert_eq!(p.counters().sent, 1, "{:?}", p.counters());
        let reply = tokio::time::timeout(Duration::from_secs(5), p.recv())
            .await
            .expect("loopback answers")
            .unwrap();
        assert_eq!(reply.from, target);
    }
}
