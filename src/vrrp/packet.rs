//! The VRRP advertisement codec: VRRPv2 (RFC 3768) and VRRPv3 (RFC 5798, IPv4 and IPv6).
//!
//! Pure: bytes in, [`Advert`] out, and back. [`decode`] checks what the packet says about
//! itself (version, type, length against the address count, checksum); [`Expect::check`]
//! then applies the receiving instance's rules (RFC 5798 §7.1, keepalived's
//! `vrrp_check_packet`): TTL/hop limit 255, the same version, the same address count, v2
//! authentication and advertisement interval. Every refusal is a typed [`DropReason`] that
//! the socket task counts in [`DropCounters`] and logs; no input makes the codec panic.
//!
//! The byte layout is the one keepalived 2.2.7 puts on the wire (shared/wire/VRRP-WIRE.md):
//! v2 always carries the 8 authentication bytes, zero without authentication; v3 has none
//! and its checksum covers the IPv4 or IPv6 pseudo-header.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// IP protocol number of VRRP. RFC 3768 §5.2.4, RFC 5798 §5.1.1.4 / §5.1.2.4.
pub const IPPROTO_VRRP: u8 = 112;
/// TTL / hop limit an advertisement is sent with and must arrive with.
/// RFC 3768 §5.2.3, RFC 5798 §5.1.1.3 / §5.1.2.3.
pub const VRRP_TTL: u8 = 255;
/// IPv4 multicast group of VRRP. RFC 3768 §5.2.2, RFC 5798 §5.1.1.2.
pub const MCAST_V4: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 18);
/// IPv6 multicast group of VRRP. RFC 5798 §5.1.2.2.
pub const MCAST_V6: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 0x12);
/// The only message type, ADVERTISEMENT. RFC 3768 §5.3.2, RFC 5798 §5.2.2.
pub const TYPE_ADVERTISEMENT: u8 = 1;
/// Priority of the router that owns the virtual addresses. RFC 5798 §5.2.4.
pub const PRIORITY_OWNER: u8 = 255;
/// Priority a stopping master sends so a backup takes over at once. RFC 5798 §5.2.4.
pub const PRIORITY_STOP: u8 = 0;
/// Fixed part of a VRRP message: version/type, VRID, priority, count, auth/interval, checksum.
/// RFC 3768 §5.1, RFC 5798 §5.1.
pub const HEADER_LEN: usize = 8;
/// Length of the v2 authentication data, present even without authentication.
/// RFC 3768 §5.3.10 (keepalived `VRRP_AUTH_LEN`).
pub const AUTH_DATA_LEN: usize = 8;
/// v2 auth type: none. RFC 3768 §5.3.6.
pub const AUTH_NONE: u8 = 0;
/// v2 auth type: simple text password. RFC 2338 §5.3.6.1 (kept for compatibility by RFC 3768).
pub const AUTH_PASS: u8 = 1;
/// v2 auth type: IPsec AH. RFC 2338 §5.3.6.2 (not supported by hbd).
pub const AUTH_AH: u8 = 2;
/// Largest v3 advertisement interval: 12 bits of centiseconds. RFC 5798 §5.2.7.
pub const MAX_INTERVAL_CS: u16 = 0x0fff;
/// Length of an IPv4 header without options, as keepalived sends it.
pub const IPV4_HEADER_LEN: usize = 20;
/// TOS keepalived sends adverts with: internetwork control (`vrrp_build_ip4`).
pub const TOS_INTERNETWORK_CONTROL: u8 = 0xc0;

/// Protocol version of an advertisement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Version {
    /// RFC 3768: IPv4 only, interval in seconds, 8 authentication bytes.
    V2,
    /// RFC 5798: IPv4 or IPv6, interval in centiseconds, pseudo-header checksum.
    V3,
}

impl Version {
    /// The number in the high nibble of the first byte.
    pub fn number(self) -> u8 {
        match self {
            Version::V2 => 2,
            Version::V3 => 3,
        }
    }
}

/// One decoded advertisement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advert {
    /// v2 or v3.
    pub version: Version,
    /// Virtual router id (1–255; RFC 5798 §5.2.3).
    pub vrid: u8,
    /// Sender's priority: 0 = stopping, 255 = owner.
    pub priority: u8,
    /// Advertisement interval in centiseconds (v2's whole seconds × 100).
    pub interval_cs: u16,
    /// The virtual addresses, all of one family.
    pub addrs: Vec<IpAddr>,
    /// v2 authentication type (0 for v3).
    pub auth_type: u8,
    /// v2 authentication data (zero for v3 and for v2 without authentication).
    pub auth_data: [u8; AUTH_DATA_LEN],
}

/// The addresses around a message: the checksum's pseudo-header (v3) and the receive checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Envelope {
    /// IP source.
    pub src: IpAddr,
    /// IP destination (the multicast group or our unicast address).
    pub dst: IpAddr,
    /// TTL (IPv4) or hop limit (IPv6) the packet arrived with.
    pub ttl: u8,
}

/// Why a received packet was dropped. Each is counted ([`DropCounters`]) and logged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DropReason {
    /// Shorter than a VRRP header.
    #[error("packet of {0} bytes is shorter than a VRRP header")]
    TooShort(usize),
    /// Version neither 2 nor 3, or not the one this instance speaks.
    #[error("VRRP version {got}, expected {expected}")]
    BadVersion {
        /// Version in the packet.
        got: u8,
        /// Version configured (0 when the packet's is unknown).
        expected: u8,
    },
    /// Type other than ADVERTISEMENT.
    #[error("VRRP type {0} is not ADVERTISEMENT (1)")]
    BadType(u8),
    /// Length does not match the header's address count.
    #[error("length {got} does not match {naddr} addresses (expected {expected})")]
    WrongLength {
        /// Bytes received.
        got: usize,
        /// Bytes the count implies.
        expected: usize,
        /// Address count in the header.
        naddr: u8,
    },
    /// Checksum does not verify.
    #[error("bad checksum")]
    BadChecksum,
    /// TTL / hop limit not 255: the packet crossed a router (RFC 5798 §7.1).
    #[error("TTL/hop limit {0}, expected 255")]
    BadTtl(u8),
    /// The address count differs from ours (RFC 3768 §7.1, keepalived).
    #[error("{theirs} addresses advertised, {ours} configured")]
    AddressCountMismatch {
        /// Count in the packet.
        theirs: usize,
        /// Count configured.
        ours: usize,
    },
    /// v2 authentication type differs from ours.
    #[error("auth type {theirs}, configured {ours}")]
    AuthTypeMismatch {
        /// Type in the packet.
        theirs: u8,
        /// Type configured.
        ours: u8,
    },
    /// v2 PASS: the 8 bytes differ.
    #[error("authentication password does not match")]
    AuthMismatch,
    /// v2: advertisement interval differs from ours (RFC 3768 §7.1).
    #[error("advertisement interval {theirs_cs} cs, configured {ours_cs} cs")]
    IntervalMismatch {
        /// Interval in the packet.
        theirs_cs: u16,
        /// Interval configured.
        ours_cs: u16,
    },
    /// Address family of the packet differs from the instance's, or v2 over IPv6.
    #[error("address family does not match the instance")]
    FamilyMismatch,
    /// Another virtual router on the same segment: not for this instance (not an error).
    #[error("virtual router id {0} is not ours")]
    OtherVrid(u8),
    /// IPv4 header unusable (raw IPv4 receive).
    #[error("bad IPv4 header: {0}")]
    BadIpHeader(&'static str),
}

/// How many packets were dropped, by reason (shown by `hactl status`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DropCounters {
    /// Too short, bad IP header, wrong length.
    pub malformed: u64,
    /// Bad version or type.
    pub version: u64,
    /// Bad checksum.
    pub checksum: u64,
    /// TTL / hop limit not 255.
    pub ttl: u64,
    /// Address count mismatch or family mismatch.
    pub addresses: u64,
    /// Auth type or password mismatch.
    pub auth: u64,
    /// v2 interval mismatch.
    pub interval: u64,
    /// Adverts of other virtual routers (normal on a shared segment).
    pub other_vrid: u64,
}

impl DropCounters {
    /// Counts one drop.
    pub fn count(&mut self, reason: &DropReason) {
        let c = match reason {
            DropReason::TooShort(_)
            | DropReason::WrongLength { .. }
            | DropReason::BadIpHeader(_) => &mut self.malformed,
            DropReason::BadVersion { .. } | DropReason::BadType(_) => &mut self.version,
            DropReason::BadChecksum => &mut self.checksum,
            DropReason::BadTtl(_) => &mut self.ttl,
            DropReason::AddressCountMismatch { .. } | DropReason::FamilyMismatch => {
                &mut self.addresses
            }
            DropReason::AuthTypeMismatch { .. } | DropReason::AuthMismatch => &mut self.auth,
            DropReason::IntervalMismatch { .. } => &mut self.interval,
            DropReason::OtherVrid(_) => &mut self.other_vrid,
        };
        *c = c.saturating_add(1);
    }

    /// All drops except other virtual routers' adverts.
    pub fn total(&self) -> u64 {
        self.malformed
            + self.version
            + self.checksum
            + self.ttl
            + self.addresses
            + self.auth
            + self.interval
    }
}

/// Why an advertisement cannot be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// More than 255 addresses.
    #[error("{0} virtual addresses; one advertisement carries at most 255")]
    TooManyAddresses(usize),
    /// Addresses of both families, or of the other family than the envelope.
    #[error("virtual addresses and the IP envelope must be of one family")]
    MixedFamilies,
    /// v2 over IPv6.
    #[error("VRRPv2 is IPv4 only (RFC 3768); use version 3 for IPv6")]
    V2OverIpv6,
    /// v2 interval not whole seconds in 1–255, or v3 interval above 4095 cs.
    #[error("advertisement interval {0} cs cannot be encoded in this version")]
    BadInterval(u16),
}

/// RFC 1071 internet checksum over the concatenation of `parts`.
pub fn inet_checksum(parts: &[&[u8]]) -> u16 {
    let mut sum: u32 = 0;
    let mut odd: Option<u8> = None;
    for part in parts {
        for &b in *part {
            match odd.take() {
                Some(hi) => sum += u32::from(u16::from_be_bytes([hi, b])),
                None => odd = Some(b),
            }
        }
    }
    if let Some(hi) = odd {
        sum += u32::from(u16::from_be_bytes([hi, 0]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    // The loop above leaves sum <= 0xffff.
    !(u16::try_from(sum).unwrap_or(u16::MAX))
}

/// The pseudo-header a v3 checksum covers. RFC 5798 §5.2.8 (IPv4 per RFC 768, IPv6 per
/// RFC 8200 §8.1).
fn pseudo_header(src: IpAddr, dst: IpAddr, len: usize) -> Vec<u8> {
    let mut p = Vec::with_capacity(40);
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            p.extend_from_slice(&s.octets());
            p.extend_from_slice(&d.octets());
            p.push(0);
            p.push(IPPROTO_VRRP);
            p.extend_from_slice(&u16::try_from(len).unwrap_or(u16::MAX).to_be_bytes());
        }
        (s, d) => {
            p.extend_from_slice(&ipv6_of(s).octets());
            p.extend_from_slice(&ipv6_of(d).octets());
            p.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes());
            p.extend_from_slice(&[0, 0, 0, IPPROTO_VRRP]);
        }
    }
    p
}

fn ipv6_of(a: IpAddr) -> Ipv6Addr {
    match a {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

/// Length of a message of `version` with `naddr` addresses of `v6` family.
pub fn message_len(version: Version, naddr: usize, v6: bool) -> usize {
    let per = if v6 { 16 } else { 4 };
    let auth = if version == Version::V2 {
        AUTH_DATA_LEN
    } else {
        0
    };
    HEADER_LEN + naddr * per + auth
}

/// Encodes `advert` as the IP payload sent from `src` to `dst`, checksum included.
pub fn encode(advert: &Advert, src: IpAddr, dst: IpAddr) -> Result<Vec<u8>, EncodeError> {
    let v6 = dst.is_ipv6();
    if src.is_ipv6() != v6 || advert.addrs.iter().any(|a| a.is_ipv6() != v6) {
        return Err(EncodeError::MixedFamilies);
    }
    let naddr = u8::try_from(advert.addrs.len())
        .map_err(|_| EncodeError::TooManyAddresses(advert.addrs.len()))?;
    let mut m = Vec::with_capacity(message_len(advert.version, advert.addrs.len(), v6));
    m.push((advert.version.number() << 4) | TYPE_ADVERTISEMENT);
    m.push(advert.vrid);
    m.push(advert.priority);
    m.push(naddr);
    match advert.version {
        Version::V2 => {
            if v6 {
                return Err(EncodeError::V2OverIpv6);
            }
            let secs = advert.interval_cs / 100;
            if !advert.interval_cs.is_multiple_of(100) || secs == 0 || secs > 255 {
                return Err(EncodeError::BadInterval(advert.interval_cs));
            }
            m.push(advert.auth_type);
            m.push(u8::try_from(secs).unwrap_or(u8::MAX));
        }
        Version::V3 => {
            if advert.interval_cs == 0 || advert.interval_cs > MAX_INTERVAL_CS {
                return Err(EncodeError::BadInterval(advert.interval_cs));
            }
            m.extend_from_slice(&advert.interval_cs.to_be_bytes());
        }
    }
    m.extend_from_slice(&[0, 0]);
    for a in &advert.addrs {
        match a {
            IpAddr::V4(v4) => m.extend_from_slice(&v4.octets()),
            IpAddr::V6(v6) => m.extend_from_slice(&v6.octets()),
        }
    }
    let csum = match advert.version {
        Version::V2 => {
            m.extend_from_slice(&advert.auth_data);
            inet_checksum(&[&m])
        }
        Version::V3 => inet_checksum(&[&pseudo_header(src, dst, m.len()), &m]),
    };
    m[6..8].copy_from_slice(&csum.to_be_bytes());
    Ok(m)
}

/// Decodes and checks the self-consistency of one IP payload that arrived in `env`.
///
/// v3 unicast adverts whose checksum fails with the real destination are retried with
/// 224.0.0.18 in the pseudo-header, as keepalived 2.2.7 does for older peers
/// (`OLD_CHKSUM_COMPAT`, VRRP-WIRE.md §3).
pub fn decode(payload: &[u8], env: &Envelope) -> Result<Advert, DropReason> {
    if payload.len() < HEADER_LEN {
        return Err(DropReason::TooShort(payload.len()));
    }
    let version = match payload[0] >> 4 {
        2 => Version::V2,
        3 => Version::V3,
        other => {
            return Err(DropReason::BadVersion {
                got: other,
                expected: 0,
            });
        }
    };
    let kind = payload[0] & 0x0f;
    if kind != TYPE_ADVERTISEMENT {
        return Err(DropReason::BadType(kind));
    }
    let v6 = env.dst.is_ipv6();
    if env.src.is_ipv6() != v6 || (v6 && version == Version::V2) {
        return Err(DropReason::FamilyMismatch);
    }
    let naddr = payload[3];
    let expected = message_len(version, usize::from(naddr), v6);
    if payload.len() != expected {
        return Err(DropReason::WrongLength {
            got: payload.len(),
            expected,
            naddr,
        });
    }
    let ok = match version {
        Version::V2 => inet_checksum(&[payload]) == 0,
        Version::V3 => {
            inet_checksum(&[&pseudo_header(env.src, env.dst, payload.len()), payload]) == 0
                || (!v6
                    && env.dst != IpAddr::V4(MCAST_V4)
                    && inet_checksum(&[
                        &pseudo_header(env.src, IpAddr::V4(MCAST_V4), payload.len()),
                        payload,
                    ]) == 0)
        }
    };
    if !ok {
        return Err(DropReason::BadChecksum);
    }
    let (interval_cs, auth_type) = match version {
        Version::V2 => (u16::from(payload[5]) * 100, payload[4]),
        Version::V3 => (
            u16::from_be_bytes([payload[4], payload[5]]) & MAX_INTERVAL_CS,
            0,
        ),
    };
    let per = if v6 { 16 } else { 4 };
    let body = &payload[HEADER_LEN..HEADER_LEN + usize::from(naddr) * per];
    let addrs = body
        .chunks_exact(per)
        .map(|c| match <[u8; 16]>::try_from(c) {
            Ok(b) => IpAddr::V6(Ipv6Addr::from(b)),
            Err(_) => IpAddr::V4(Ipv4Addr::new(c[0], c[1], c[2], c[3])),
        })
        .collect();
    let mut auth_data = [0u8; AUTH_DATA_LEN];
    if version == Version::V2 {
        auth_data.copy_from_slice(&payload[payload.len() - AUTH_DATA_LEN..]);
    }
    Ok(Advert {
        version,
        vrid: payload[1],
        priority: payload[2],
        interval_cs,
        addrs,
        auth_type,
        auth_data,
    })
}

/// v2 authentication as configured (`authentication { auth_type PASS; auth_pass … }`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    /// No authentication: type 0, 8 zero bytes.
    None,
    /// Simple text password, zero-padded and cut at 8 bytes (keepalived).
    Pass([u8; AUTH_DATA_LEN]),
}

impl Auth {
    /// The PASS form of a configured password: its first 8 bytes, zero-padded.
    pub fn pass(password: &str) -> Auth {
        let mut b = [0u8; AUTH_DATA_LEN];
        for (d, s) in b.iter_mut().zip(password.bytes()) {
            *d = s;
        }
        Auth::Pass(b)
    }

    /// Type and data as sent.
    pub fn wire(&self) -> (u8, [u8; AUTH_DATA_LEN]) {
        match self {
            Auth::None => (AUTH_NONE, [0; AUTH_DATA_LEN]),
            Auth::Pass(b) => (AUTH_PASS, *b),
        }
    }
}

/// What a receiving instance requires of an advert (RFC 5798 §7.1, keepalived
/// `vrrp_check_packet`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expect {
    /// Our version.
    pub version: Version,
    /// Our virtual router id.
    pub vrid: u8,
    /// Our number of virtual addresses (the adverts must carry as many).
    pub naddr: usize,
    /// v2: our authentication.
    pub auth: Auth,
    /// v2: our interval (v3 learns the master's instead).
    pub interval_cs: u16,
    /// Unicast instance: keepalived skips the TTL check for unicast peers.
    pub unicast: bool,
}

impl Expect {
    /// Applies the receive rules to an advert [`decode`] accepted.
    pub fn check(&self, advert: &Advert, env: &Envelope) -> Result<(), DropReason> {
        if !self.unicast && env.ttl != VRRP_TTL {
            return Err(DropReason::BadTtl(env.ttl));
        }
        if advert.version != self.version {
            return Err(DropReason::BadVersion {
                got: advert.version.number(),
                expected: self.version.number(),
            });
        }
        if advert.vrid != self.vrid {
            return Err(DropReason::OtherVrid(advert.vrid));
        }
        if self.version == Version::V2 {
            let (ours, data) = self.auth.wire();
            if advert.auth_type != ours {
                return Err(DropReason::AuthTypeMismatch {
                    theirs: advert.auth_type,
                    ours,
                });
            }
            if ours == AUTH_PASS
                && !bool::from(subtle::ConstantTimeEq::ct_eq(
                    &advert.auth_data[..],
                    &data[..],
                ))
            {
                return Err(DropReason::AuthMismatch);
            }
            if advert.interval_cs != self.interval_cs {
                return Err(DropReason::IntervalMismatch {
                    theirs_cs: advert.interval_cs,
                    ours_cs: self.interval_cs,
                });
            }
        }
        if advert.addrs.len() != self.naddr {
            return Err(DropReason::AddressCountMismatch {
                theirs: advert.addrs.len(),
                ours: self.naddr,
            });
        }
        Ok(())
    }

    /// [`decode`] then [`Expect::check`]: the advert, or why it is dropped.
    pub fn accept(&self, payload: &[u8], env: &Envelope) -> Result<Advert, DropReason> {
        let advert = decode(payload, env)?;
        self.check(&advert, env)?;
        Ok(advert)
    }
}

/// The IPv4 header fields a raw IPv4 socket hands over with each packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Header {
    /// Header length in bytes (IHL × 4).
    pub header_len: usize,
    /// Total length field.
    pub total_len: usize,
    /// TTL.
    pub ttl: u8,
    /// Protocol.
    pub protocol: u8,
    /// Source.
    pub src: Ipv4Addr,
    /// Destination.
    pub dst: Ipv4Addr,
}

impl Ipv4Header {
    /// Reads the header at the start of `packet` (as a raw IPv4 socket returns it) and checks
    /// it holds VRRP and fits the bytes received.
    pub fn parse(packet: &[u8]) -> Result<Ipv4Header, DropReason> {
        if packet.len() < IPV4_HEADER_LEN {
            return Err(DropReason::BadIpHeader("shorter than 20 bytes"));
        }
        if packet[0] >> 4 != 4 {
            return Err(DropReason::BadIpHeader("not IPv4"));
        }
        let header_len = usize::from(packet[0] & 0x0f) * 4;
        if header_len < IPV4_HEADER_LEN || header_len > packet.len() {
            return Err(DropReason::BadIpHeader("header length out of range"));
        }
        let total_len = usize::from(u16::from_be_bytes([packet[2], packet[3]]));
        // keepalived checks the same (VRRP-WIRE.md §7 rule 8): a truncated read is refused.
        if total_len != packet.len() {
            return Err(DropReason::BadIpHeader(
                "total length differs from bytes received",
            ));
        }
        Ok(Ipv4Header {
            header_len,
            total_len,
            ttl: packet[8],
            protocol: packet[9],
            src: Ipv4Addr::new(packet[12], packet[13], packet[14], packet[15]),
            dst: Ipv4Addr::new(packet[16], packet[17], packet[18], packet[19]),
        })
    }
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation)] // random test input: truncation is the point
mod tests {
    use super::*;

    /// Ethernet frames of a little-endian microsecond pcap (linktype 1), in order.
    fn pcap_frames(bytes: &[u8]) -> Vec<Vec<u8>> {
        assert_eq!(&bytes[0..4], &[0xd4, 0xc3, 0xb2, 0xa1], "pcap magic");
        assert_eq!(u32::from_le_bytes(bytes[20..24].try_into().unwrap()), 1);
        let mut out = Vec::new();
        let mut at = 24;
        while at + 16 <= bytes.len() {
            let incl = u32::from_le_bytes(bytes[at + 8..at + 12].try_into().unwrap()) as usize;
            out.push(bytes[at + 16..at + 16 + incl].to_vec());
            at += 16 + incl;
        }
        out
    }

    /// The IPv4 packets carrying VRRP in a capture (Ethernet type 0x0800, protocol 112).
    fn vrrp_packets(pcap: &[u8]) -> Vec<Vec<u8>> {
        pcap_frames(pcap)
            .into_iter()
            .filter(|f| f.len() > 34 && f[12..14] == [0x08, 0x00] && f[14 + 9] == IPPROTO_VRRP)
            .map(|f| f[14..].to_vec())
            .collect()
    }

    const V2: &[u8] = include_bytes!("../../tests/fixtures/vrrp/v2/vrrp_v2.pcap");
    const V3: &[u8] = include_bytes!("../../tests/fixtures/vrrp/v3/vrrp_v3.pcap");

    fn env_of(h: &Ipv4Header) -> Envelope {
        Envelope {
            src: IpAddr::V4(h.src),
            dst: IpAddr::V4(h.dst),
            ttl: h.ttl,
        }
    }

    fn roundtrip_capture(pcap: &[u8], expect: &Expect) -> usize {
        let packets = vrrp_packets(pcap);
        for p in &packets {
            let h = Ipv4Header::parse(p).expect("captured IPv4 header");
            assert_eq!(h.ttl, VRRP_TTL);
            assert_eq!(h.protocol, IPPROTO_VRRP);
            assert_eq!(h.dst, MCAST_V4);
            assert_eq!(p[1], TOS_INTERNETWORK_CONTROL);
            let payload = &p[h.header_len..];
            let env = env_of(&h);
            let advert = expect
                .accept(payload, &env)
                .expect("captured advert accepted");
            let again = encode(&advert, env.src, env.dst).unwrap();
            assert_eq!(again, payload, "re-encoded advert differs from the capture");
        }
        packets.len()
    }

    #[test]
    fn every_captured_v2_advert_decodes_and_reencodes_byte_for_byte() {
        let expect = Expect {
            version: Version::V2,
            vrid: 51,
            naddr: 1,
            auth: Auth::pass("wire1234"),
            interval_cs: 100,
            unicast: false,
        };
        assert_eq!(roundtrip_capture(V2, &expect), 23);
    }

    #[test]
    fn every_captured_v3_advert_decodes_and_reencodes_byte_for_byte() {
        let expect = Expect {
            version: Version::V3,
            vrid: 52,
            naddr: 2,
            auth: Auth::None,
            interval_cs: 100,
            unicast: false,
        };
        assert_eq!(roundtrip_capture(V3, &expect), 23);
    }

    #[test]
    fn captured_frames_decode_to_the_documented_fields() {
        let p = &vrrp_packets(V2)[0];
        let h = Ipv4Header::parse(p).unwrap();
        let a = decode(&p[20..], &env_of(&h)).unwrap();
        assert_eq!(h.src, Ipv4Addr::new(192, 0, 2, 21));
        assert_eq!((a.version, a.vrid, a.priority), (Version::V2, 51, 150));
        assert_eq!(a.addrs, vec![IpAddr::V4(Ipv4Addr::new(192, 0, 2, 100))]);
        assert_eq!((a.auth_type, &a.auth_data), (AUTH_PASS, b"wire1234"));
        assert_eq!(
            &p[20..28],
            &[0x21, 0x33, 0x96, 0x01, 0x01, 0x01, 0x37, 0x30]
        );

        let p = &vrrp_packets(V3)[0];
        let h = Ipv4Header::parse(p).unwrap();
        let a = decode(&p[20..], &env_of(&h)).unwrap();
        assert_eq!(
            (a.version, a.vrid, a.priority, a.interval_cs),
            (Version::V3, 52, 150, 100)
        );
        assert_eq!(
            &p[20..28],
            &[0x31, 0x34, 0x96, 0x02, 0x00, 0x64, 0x10, 0xf0]
        );
        // The last adverts of both captures are the shutdown adverts (priority 0).
        for pcap in [V2, V3] {
            let p = vrrp_packets(pcap).pop().unwrap();
            assert_eq!(p[22], PRIORITY_STOP);
        }
    }

    #[test]
    fn v3_checksum_depends_on_the_source_address() {
        // VRRP-WIRE.md §3: 192.0.2.21 sends priority 0 with a6f0, 192.0.2.22 with a6ef.
        let advert = Advert {
            version: Version::V3,
            vrid: 52,
            priority: 0,
            interval_cs: 100,
            addrs: vec![
                "192.0.2.101".parse().unwrap(),
                "192.0.2.102".parse().unwrap(),
            ],
            auth_type: 0,
            auth_data: [0; 8],
        };
        let dst = IpAddr::V4(MCAST_V4);
        let a = encode(&advert, "192.0.2.21".parse().unwrap(), dst).unwrap();
        let b = encode(&advert, "192.0.2.22".parse().unwrap(), dst).unwrap();
        assert_eq!(&a[6..8], &[0xa6, 0xf0]);
        assert_eq!(&b[6..8], &[0xa6, 0xef]);
    }

    fn v6_advert() -> (Advert, Envelope) {
        let advert = Advert {
            version: Version::V3,
            vrid: 7,
            priority: 200,
            interval_cs: 5,
            addrs: vec!["2001:db8::100".parse().unwrap(), "fe80::1".parse().unwrap()],
            auth_type: 0,
            auth_data: [0; 8],
        };
        let env = Envelope {
            src: "fe80::2".parse().unwrap(),
            dst: IpAddr::V6(MCAST_V6),
            ttl: 255,
        };
        (advert, env)
    }

    #[test]
    fn v3_ipv6_round_trips_with_its_pseudo_header() {
        let (advert, env) = v6_advert();
        let bytes = encode(&advert, env.src, env.dst).unwrap();
        assert_eq!(bytes.len(), 8 + 32);
        assert_eq!(decode(&bytes, &env).unwrap(), advert);
        // Another source breaks the checksum: the pseudo-header is covered.
        let other = Envelope {
            src: "fe80::3".parse().unwrap(),
            ..env
        };
        assert_eq!(decode(&bytes, &other), Err(DropReason::BadChecksum));
    }

    #[test]
    fn v3_unicast_accepts_the_old_multicast_pseudo_header() {
        let advert = Advert {
            version: Version::V3,
            vrid: 9,
            priority: 100,
            interval_cs: 100,
            addrs: vec!["192.0.2.50".parse().unwrap()],
            auth_type: 0,
            auth_data: [0; 8],
        };
        let src: IpAddr = "192.0.2.1".parse().unwrap();
        let old = encode(&advert, src, IpAddr::V4(MCAST_V4)).unwrap();
        let env = Envelope {
            src,
            dst: "192.0.2.2".parse().unwrap(),
            ttl: 64,
        };
        assert_eq!(decode(&old, &env).unwrap(), advert);
    }

    #[test]
    fn encode_refuses_what_the_wire_cannot_carry() {
        let (mut advert, env) = v6_advert();
        advert.interval_cs = 4096;
        assert_eq!(
            encode(&advert, env.src, env.dst),
            Err(EncodeError::BadInterval(4096))
        );
        advert.interval_cs = 100;
        advert.version = Version::V2;
        assert_eq!(
            encode(&advert, env.src, env.dst),
            Err(EncodeError::V2OverIpv6)
        );
        advert.version = Version::V3;
        advert.addrs.push("192.0.2.1".parse().unwrap());
        assert_eq!(
            encode(&advert, env.src, env.dst),
            Err(EncodeError::MixedFamilies)
        );
        let v2 = Advert {
            version: Version::V2,
            vrid: 1,
            priority: 1,
            interval_cs: 150,
            addrs: vec![],
            auth_type: 0,
            auth_data: [0; 8],
        };
        let v4: IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(
            encode(&v2, v4, IpAddr::V4(MCAST_V4)),
            Err(EncodeError::BadInterval(150))
        );
    }

    fn captured_v2() -> (Vec<u8>, Envelope) {
        let p = &vrrp_packets(V2)[0];
        let h = Ipv4Header::parse(p).unwrap();
        (p[20..].to_vec(), env_of(&h))
    }

    fn v2_expect() -> Expect {
        Expect {
            version: Version::V2,
            vrid: 51,
            naddr: 1,
            auth: Auth::pass("wire1234"),
            interval_cs: 100,
            unicast: false,
        }
    }

    #[test]
    fn each_receive_rule_has_its_drop_reason() {
        let (payload, env) = captured_v2();
        let e = v2_expect();
        assert!(e.accept(&payload, &env).is_ok());
        let low_ttl = Envelope { ttl: 254, ..env };
        assert_eq!(e.accept(&payload, &low_ttl), Err(DropReason::BadTtl(254)));
        let unicast = Expect {
            unicast: true,
            ..e.clone()
        };
        assert!(unicast.accept(&payload, &low_ttl).is_ok());
        let wrong_pass = Expect {
            auth: Auth::pass("wire12345"),
            ..e.clone()
        };
        assert!(wrong_pass.accept(&payload, &env).is_ok(), "cut at 8 bytes");
        let wrong_pass = Expect {
            auth: Auth::pass("wire4321"),
            ..e.clone()
        };
        assert_eq!(
            wrong_pass.accept(&payload, &env),
            Err(DropReason::AuthMismatch)
        );
        let no_auth = Expect {
            auth: Auth::None,
            ..e.clone()
        };
        assert_eq!(
            no_auth.accept(&payload, &env),
            Err(DropReason::AuthTypeMismatch { theirs: 1, ours: 0 })
        );
        let slower = Expect {
            interval_cs: 200,
            ..e.clone()
        };
        assert!(matches!(
            slower.accept(&payload, &env),
            Err(DropReason::IntervalMismatch { .. })
        ));
        let two = Expect {
            naddr: 2,
            ..e.clone()
        };
        assert!(matches!(
            two.accept(&payload, &env),
            Err(DropReason::AddressCountMismatch { .. })
        ));
        let v3 = Expect {
            version: Version::V3,
            ..e.clone()
        };
        assert!(matches!(
            v3.accept(&payload, &env),
            Err(DropReason::BadVersion {
                got: 2,
                expected: 3
            })
        ));
        let other = Expect {
            vrid: 52,
            ..e.clone()
        };
        assert_eq!(other.accept(&payload, &env), Err(DropReason::OtherVrid(51)));

        let mut bad = payload.clone();
        bad[9] ^= 1;
        assert_eq!(e.accept(&bad, &env), Err(DropReason::BadChecksum));
        assert!(matches!(
            e.accept(&payload[..payload.len() - 1], &env),
            Err(DropReason::WrongLength { .. })
        ));
        let mut t = payload.clone();
        t[0] = 0x22;
        assert_eq!(e.accept(&t, &env), Err(DropReason::BadType(2)));
        t[0] = 0x41;
        assert!(matches!(
            e.accept(&t, &env),
            Err(DropReason::BadVersion { got: 4, .. })
        ));
        assert_eq!(e.accept(&payload[..3], &env), Err(DropReason::TooShort(3)));
    }

    #[test]
    fn drop_counters_sort_reasons() {
        let mut c = DropCounters::default();
        c.count(&DropReason::BadChecksum);
        c.count(&DropReason::BadTtl(1));
        c.count(&DropReason::OtherVrid(3));
        assert_eq!((c.checksum, c.ttl, c.other_vrid, c.total()), (1, 1, 1, 2));
    }

    /// A small deterministic generator (xorshift), so the random tests repeat exactly.
    fn xorshift(seed: &mut u64) -> u64 {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        *seed
    }

    #[test]
    fn random_bytes_are_dropped_never_panic() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let envs = [
            captured_v2().1,
            v6_advert().1,
            Envelope {
                src: "192.0.2.1".parse().unwrap(),
                dst: "192.0.2.2".parse().unwrap(),
                ttl: 1,
            },
        ];
        let mut counters = DropCounters::default();
        let mut accepted = 0;
        for i in 0..20_000 {
            let len = (xorshift(&mut seed) % 96) as usize;
            let mut bytes: Vec<u8> = (0..len).map(|_| xorshift(&mut seed) as u8).collect();
            if i % 2 == 0 && len > 0 {
                bytes[0] = if i % 4 == 0 { 0x21 } else { 0x31 };
            }
            let env = &envs[i % envs.len()];
            match v2_expect().accept(&bytes, env) {
                Ok(_) => accepted += 1,
                Err(r) => counters.count(&r),
            }
            let _ = Ipv4Header::parse(&bytes);
        }
        assert!(counters.total() + counters.other_vrid + accepted == 20_000);
        assert!(counters.malformed > 0 && counters.version > 0);
    }

    #[test]
    fn random_adverts_round_trip() {
        let mut seed = 42u64;
        for _ in 0..2_000 {
            let v6 = xorshift(&mut seed).is_multiple_of(2);
            let version = if v6 || xorshift(&mut seed).is_multiple_of(2) {
                Version::V3
            } else {
                Version::V2
            };
            let n = (xorshift(&mut seed) % 20) as usize;
            let addrs: Vec<IpAddr> = (0..n)
                .map(|_| {
                    let r = xorshift(&mut seed);
                    if v6 {
                        IpAddr::V6(Ipv6Addr::from(u128::from(r) << 64 | u128::from(r)))
                    } else {
                        IpAddr::V4(Ipv4Addr::from(r as u32))
                    }
                })
                .collect();
            let interval_cs = match version {
                Version::V2 => (xorshift(&mut seed) % 255 + 1) as u16 * 100,
                Version::V3 => (xorshift(&mut seed) % 4095 + 1) as u16,
            };
            let mut auth_data = [0u8; 8];
            if version == Version::V2 {
                auth_data = xorshift(&mut seed).to_be_bytes();
            }
            let advert = Advert {
                version,
                vrid: xorshift(&mut seed) as u8,
                priority: xorshift(&mut seed) as u8,
                interval_cs,
                addrs,
                auth_type: if version == Version::V2 { 1 } else { 0 },
                auth_data,
            };
            let env = if v6 { v6_advert().1 } else { captured_v2().1 };
            let bytes = encode(&advert, env.src, env.dst).unwrap();
            assert_eq!(decode(&bytes, &env).unwrap(), advert);
        }
    }
}
