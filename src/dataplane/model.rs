//! The dataplane's data model: virtual services and their real servers, as IPVS knows them
//! (`ipvsadm -A/-a`, ldirectord `virtual=` / `real=` lines, features §3.2).
//!
//! The same model describes the desired state (from configuration and checks) and the
//! actual state read back from the kernel, so [`super::diff`] can compare them.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;

/// Address family of a fwmark service (a mark alone does not say which family it serves).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    /// IPv4 (`AF_INET`).
    V4,
    /// IPv6 (`AF_INET6`).
    V6,
}

impl Family {
    /// The family of an address.
    pub fn of(ip: &IpAddr) -> Family {
        match ip {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }
}

/// What identifies a virtual service in the kernel: protocol + VIP:port, or a firewall mark.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ServiceKey {
    /// `ipvsadm -t vip:port`.
    Tcp(SocketAddr),
    /// `ipvsadm -u vip:port`.
    Udp(SocketAddr),
    /// `ipvsadm -f mark` (ldirectord `virtual = <fwmark>`), with its address family.
    Fwmark(u32, Family),
}

impl ServiceKey {
    /// The address family the service serves.
    pub fn family(&self) -> Family {
        match self {
            ServiceKey::Tcp(a) | ServiceKey::Udp(a) => Family::of(&a.ip()),
            ServiceKey::Fwmark(_, f) => *f,
        }
    }
}

impl fmt::Display for ServiceKey {
    /// ipvsadm notation: `TCP  192.0.2.10:80`, `UDP  [2001:db8::1]:53`, `FWM  7`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServiceKey::Tcp(a) => write!(f, "TCP  {a}"),
            ServiceKey::Udp(a) => write!(f, "UDP  {a}"),
            ServiceKey::Fwmark(m, Family::V4) => write!(f, "FWM  {m}"),
            ServiceKey::Fwmark(m, Family::V6) => write!(f, "FWM  {m} IPv6"),
        }
    }
}

/// IPVS scheduling algorithms (`ip_vs_<name>.ko`); ldirectord's default is `wrr`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scheduler {
    /// Round robin.
    Rr,
    /// Weighted round robin (ldirectord default).
    Wrr,
    /// Least connections.
    Lc,
    /// Weighted least connections (ipvsadm default).
    Wlc,
    /// Locality-based least connections.
    Lblc,
    /// Locality-based least connections with replication.
    Lblcr,
    /// Destination hashing.
    Dh,
    /// Source hashing.
    Sh,
    /// Shortest expected delay.
    Sed,
    /// Never queue.
    Nq,
    /// Maglev hashing.
    Mh,
    /// Weighted failover (`ip_vs_fo`): every new connection to the live real of highest
    /// weight.
    Fo,
    /// Weighted overflow (`ip_vs_ovf`): the live real of highest weight until its active
    /// connections exceed its weight, then the next.
    Ovf,
}

impl Scheduler {
    /// Every scheduler, for parsing and tests.
    pub const ALL: [Scheduler; 13] = [
        Scheduler::Rr,
        Scheduler::Wrr,
        Scheduler::Lc,
        Scheduler::Wlc,
        Scheduler::Lblc,
        Scheduler::Lblcr,
        Scheduler::Dh,
        Scheduler::Sh,
        Scheduler::Sed,
        Scheduler::Nq,
        Scheduler::Mh,
        Scheduler::Fo,
        Scheduler::Ovf,
    ];

    /// The kernel's name (`IPVS_SVC_ATTR_SCHED_NAME`, `ipvsadm -s`).
    pub fn name(&self) -> &'static str {
        match self {
            Scheduler::Rr => "rr",
            Scheduler::Wrr => "wrr",
            Scheduler::Lc => "lc",
            Scheduler::Wlc => "wlc",
            Scheduler::Lblc => "lblc",
            Scheduler::Lblcr => "lblcr",
            Scheduler::Dh => "dh",
            Scheduler::Sh => "sh",
            Scheduler::Sed => "sed",
            Scheduler::Nq => "nq",
            Scheduler::Mh => "mh",
            Scheduler::Fo => "fo",
            Scheduler::Ovf => "ovf",
        }
    }
}

impl fmt::Display for Scheduler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A scheduler name hbd does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown scheduler {0:?} (known: rr wrr lc wlc lblc lblcr dh sh sed nq mh fo ovf)")]
pub struct UnknownScheduler(pub String);

impl FromStr for Scheduler {
    type Err = UnknownScheduler;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Scheduler::ALL
            .into_iter()
            .find(|x| x.name() == s)
            .ok_or_else(|| UnknownScheduler(s.to_string()))
    }
}

/// Persistence (`ipvsadm -p timeout -M netmask`, ldirectord `persistent=` / `netmask=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Persistence {
    /// How long a client stays on its real server after its last connection.
    pub timeout: Duration,
    /// Granularity: clients in the same prefix share a real server.
    pub netmask: Netmask,
}

/// A persistence granularity as a prefix length of the service's family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Netmask {
    /// Prefix length in bits (0..=32 for IPv4, 0..=128 for IPv6).
    pub prefix: u8,
}

impl Netmask {
    /// The whole address (`/32` or `/128`): one client per template.
    pub fn host(family: Family) -> Netmask {
        Netmask {
            prefix: match family {
                Family::V4 => 32,
                Family::V6 => 128,
            },
        }
    }

    /// The mask as an IPv4 address (`255.255.255.0` for /24); prefixes above 32 saturate.
    pub fn to_v4(self) -> std::net::Ipv4Addr {
        let p = u32::from(self.prefix.min(32));
        let bits = if p == 0 { 0 } else { u32::MAX << (32 - p) };
        std::net::Ipv4Addr::from(bits)
    }

    /// The prefix length of a contiguous IPv4 mask; `None` for a non-contiguous one.
    pub fn from_v4(mask: std::net::Ipv4Addr) -> Option<Netmask> {
        let bits = u32::from(mask);
        let ones = bits.leading_ones();
        let prefix = u8::try_from(ones).ok()?;
        (bits.checked_shl(ones).unwrap_or(0) == 0).then_some(Netmask { prefix })
    }
}

/// How the director forwards packets to a real server (ldirectord `gate|masq|ipip`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Forwarding {
    /// Direct routing (`gate`, `-g`): the real answers the client itself.
    Gate,
    /// NAT (`masq`, `-m`): the director rewrites the destination and sees the replies.
    Masq,
    /// IP-in-IP tunnel (`ipip`, `-i`).
    Ipip,
}

impl Forwarding {
    /// ldirectord's word for it.
    pub fn name(&self) -> &'static str {
        match self {
            Forwarding::Gate => "gate",
            Forwarding::Masq => "masq",
            Forwarding::Ipip => "ipip",
        }
    }
}

impl FromStr for Forwarding {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "gate" => Ok(Forwarding::Gate),
            "masq" => Ok(Forwarding::Masq),
            "ipip" => Ok(Forwarding::Ipip),
            other => Err(format!(
                "unknown forwarding method {other:?} (gate, masq, ipip)"
            )),
        }
    }
}

/// One real server of a virtual service (`ipvsadm -a -r addr:port -w weight -x u -y l`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RealServer {
    /// Address and port of the real server.
    pub addr: SocketAddr,
    /// Forwarding method.
    pub forwarding: Forwarding,
    /// Weight; 0 = quiescent: established connections continue, no new ones (features §3.4).
    pub weight: u32,
    /// Upper connection threshold (`-x`), 0 = none.
    pub upper_threshold: u32,
    /// Lower connection threshold (`-y`), 0 = none.
    pub lower_threshold: u32,
}

impl RealServer {
    /// A real server with weight 1 and no thresholds (ldirectord's default).
    pub fn new(addr: SocketAddr, forwarding: Forwarding) -> RealServer {
        RealServer {
            addr,
            forwarding,
            weight: 1,
            upper_threshold: 0,
            lower_threshold: 0,
        }
    }

    /// Quiescent reals stay in the table but receive no new connections.
    pub fn is_quiescent(&self) -> bool {
        self.weight == 0
    }
}

/// A virtual service and its real servers, desired or observed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VirtualService {
    /// What identifies the service in the kernel.
    pub key: ServiceKey,
    /// Scheduling algorithm.
    pub scheduler: Scheduler,
    /// Client persistence, if any.
    pub persistence: Option<Persistence>,
    /// Real servers (order is irrelevant; each address appears once).
    pub reals: Vec<RealServer>,
}

impl VirtualService {
    /// A service with no reals and no persistence.
    pub fn new(key: ServiceKey, scheduler: Scheduler) -> VirtualService {
        VirtualService {
            key,
            scheduler,
            persistence: None,
            reals: Vec::new(),
        }
    }

    /// The real with this address, if present.
    pub fn real(&self, addr: &SocketAddr) -> Option<&RealServer> {
        self.reals.iter().find(|r| r.addr == *addr)
    }

    /// True when the service-level parameters (not the reals) are equal.
    pub fn same_params(&self, other: &VirtualService) -> bool {
        self.scheduler == other.scheduler && self.persistence == other.persistence
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scheduler_parse_display_round_trip() {
        for s in Scheduler::ALL {
            assert_eq!(s.name().parse::<Scheduler>(), Ok(s));
            assert_eq!(s.to_string(), s.name());
        }
        assert_eq!(
            "sip".parse::<Scheduler>(),
            Err(UnknownScheduler("sip".into()))
        );
    }

    #[test]
    fn netmask_v4_conversions() {
        assert_eq!(Netmask { prefix: 24 }.to_v4().to_string(), "255.255.255.0");
        assert_eq!(Netmask { prefix: 0 }.to_v4().to_string(), "0.0.0.0");
        assert_eq!(
            Netmask { prefix: 32 }.to_v4().to_string(),
            "255.255.255.255"
        );
        assert_eq!(
            Netmask::from_v4("255.255.240.0".parse().unwrap()),
            Some(Netmask { prefix: 20 })
        );
        assert_eq!(Netmask::from_v4("255.0.255.0".parse().unwrap()), None);
        assert_eq!(
            Netmask::from_v4("255.255.255.255".parse().unwrap()),
            Some(Netmask { prefix: 32 })
        );
    }

    #[test]
    fn key_display() {
        let k = ServiceKey::Tcp("192.0.2.10:80".parse().unwrap());
        assert_eq!(k.to_string(), "TCP  192.0.2.10:80");
        assert_eq!(ServiceKey::Fwmark(7, Family::V4).to_string(), "FWM  7");
    }
}

/// Connections of one real server, as `ipvsadm -Ln` counts them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RealConnections {
    /// TCP connections in ESTABLISHED (`ActiveConn`).
    pub active: u32,
    /// Every other connection (`InActConn`).
    pub inactive: u32,
    /// Persistence templates pointing at this real (`PersistConn` of `ipvsadm -Ln
    /// --persistent-conn`; for nftables the persistence map's live entries).
    pub persistent: u32,
}

/// Connection counts by (service, real).
pub type Connections = std::collections::HashMap<(ServiceKey, SocketAddr), RealConnections>;
