//! The built-in VIP resource: heartbeat's `IPaddr` / `IPaddr2` (and a bare address).
//!
//! Argument grammar (heartbeat `resource.d/IPaddr` and `IPaddr2` wrappers):
//! `ADDRESS[/PREFIX[/IFACE[/BCAST]]]`, where a third field starting with a digit is the
//! broadcast address, otherwise the interface; the interface may be `iface:label` (IPaddr2).
//! PREFIX may be a length or, for IPv4, a dotted netmask. When IFACE or PREFIX is missing they
//! come from the connected route that covers the address, as heartbeat's `findif` does, so
//! that route must exist.
//!
//! Start adds the address, sends the first gratuitous ARP (IPv4) or unsolicited NA (IPv6)
//! immediately, and the rest of the burst in the background (heartbeat `arp_bg`). Stop aborts
//! a burst still running and removes the address if present: the VIP belongs to hbd by
//! definition, so an address found there at stop time is removed even if someone else added
//! it (heartbeat does the same; a VIP left behind is the worse failure, see kube-vip#588).
//! IPaddr2's `lvs_support` (moving the VIP to `lo` on stop) is not implemented.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::OnceCell;
use tokio::task::AbortHandle;

use crate::net::addr::{AddOutcome, DelOutcome, LinkInfo, MAX_IFNAME_LEN, NetError, Netlink};
use crate::net::arp::{AnnounceError, Announcer};
use crate::net::ndisc::{NaAnnouncer, NdiscError};

/// Gratuitous ARPs / NAs per takeover (heartbeat IPaddr2 `arp_count` default).
pub const DEFAULT_ANNOUNCE_COUNT: u32 = 5;
/// Interval between them (heartbeat IPaddr2 `arp_interval` default, 200 ms).
pub const DEFAULT_ANNOUNCE_INTERVAL: Duration = Duration::from_millis(200);

/// A parsed `IPaddr` argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VipSpec {
    /// The virtual address.
    pub ip: IpAddr,
    /// Prefix length; `None` = from the covering route.
    pub prefix_len: Option<u8>,
    /// Interface; `None` = from the covering route.
    pub ifname: Option<String>,
    /// Full IPv4 label (`eth0:vip`), when `iface:label` was given.
    pub label: Option<String>,
    /// Explicit IPv4 broadcast address.
    pub broadcast: Option<Ipv4Addr>,
}

/// Why an `IPaddr` argument is invalid; each message quotes the argument and says the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VipSpecError {
    /// Not exactly one argument.
    #[error(
        "IPaddr takes one argument ADDRESS[/PREFIX[/IFACE[/BCAST]]], got {0} (e.g. IPaddr::192.0.2.10/24/eth0)"
    )]
    ArgCount(usize),
    /// The address does not parse.
    #[error("{spec:?}: {field:?} is not an IPv4 or IPv6 address")]
    BadAddress {
        /// The whole argument.
        spec: String,
        /// The offending field.
        field: String,
    },
    /// The prefix is not a length (0–32 / 0–128) or contiguous IPv4 netmask.
    #[error(
        "{spec:?}: {field:?} is not a prefix length (0-{max}) or a contiguous netmask (e.g. 24 or 255.255.255.0)"
    )]
    BadPrefix {
        /// The whole argument.
        spec: String,
        /// The offending field.
        field: String,
        /// 32 or 128.
        max: u8,
    },
    /// The broadcast field does not parse or is given for IPv6.
    #[error("{spec:?}: {field:?} is not a valid broadcast address (IPv4 only)")]
    BadBroadcast {
        /// The whole argument.
        spec: String,
        /// The offending field.
        field: String,
    },
    /// Interface or label empty, too long, or a label on an IPv6 address.
    #[error(
        "{spec:?}: interface {field:?} is invalid: names and iface:label must be 1-15 characters, labels are IPv4 only"
    )]
    BadInterface {
        /// The whole argument.
        spec: String,
        /// The offending field.
        field: String,
    },
    /// More than four `/`-separated fields.
    #[error("{spec:?}: too many '/' fields; the form is ADDRESS[/PREFIX[/IFACE[/BCAST]]]")]
    TooManyFields {
        /// The whole argument.
        spec: String,
    },
}

fn parse_prefix(spec: &str, field: &str, ip: IpAddr) -> Result<u8, VipSpecError> {
    let max: u8 = if ip.is_ipv4() { 32 } else { 128 };
    let bad = || VipSpecError::BadPrefix {
        spec: spec.to_string(),
        field: field.to_string(),
        max,
    };
    if let Ok(n) = field.parse::<u8>() {
        return if n <= max { Ok(n) } else { Err(bad()) };
    }
    if ip.is_ipv4()
        && let Ok(mask) = field.parse::<Ipv4Addr>()
    {
        let m = u32::from(mask);
        let ones = m.leading_ones();
        if m.checked_shl(ones).unwrap_or(0) == 0 {
            return u8::try_from(ones).map_err(|_| bad());
        }
    }
    Err(bad())
}

/// Parses one `IPaddr`/`IPaddr2` argument (`ADDRESS[/PREFIX[/IFACE[/BCAST]]]`).
pub fn parse_vip(spec: &str) -> Result<VipSpec, VipSpecError> {
    let fields: Vec<&str> = spec.split('/').collect();
    if fields.len() > 4 {
        return Err(VipSpecError::TooManyFields {
            spec: spec.to_string(),
        });
    }
    let ip: IpAddr = fields[0].parse().map_err(|_| VipSpecError::BadAddress {
        spec: spec.to_string(),
        field: fields[0].to_string(),
    })?;
    let mut vip = VipSpec {
        ip,
        prefix_len: None,
        ifname: None,
        label: None,
        broadcast: None,
    };
    if let Some(p) = fields.get(1) {
        vip.prefix_len = Some(parse_prefix(spec, p, ip)?);
    }
    let parse_bcast = |field: &str| -> Result<Ipv4Addr, VipSpecError> {
        match (ip, field.parse::<Ipv4Addr>()) {
            (IpAddr::V4(_), Ok(b)) => Ok(b),
            _ => Err(VipSpecError::BadBroadcast {
                spec: spec.to_string(),
                field: field.to_string(),
            }),
        }
    };
    if let Some(f3) = fields.get(2) {
        if f3.starts_with(|c: char| c.is_ascii_digit()) {
            vip.broadcast = Some(parse_bcast(f3)?);
            if fields.len() == 4 {
                // heartbeat: a digit in field 3 means broadcast; a fourth field has no meaning.
                return Err(VipSpecError::TooManyFields {
                    spec: spec.to_string(),
                });
            }
        } else {
            let bad = || VipSpecError::BadInterface {
                spec: spec.to_string(),
                field: f3.to_string(),
            };
            let (ifname, label) = match f3.split_once(':') {
                Some((i, l)) if !l.is_empty() && ip.is_ipv4() => (i, Some(f3.to_string())),
                Some(_) => return Err(bad()),
                None => (*f3, None),
            };
            if ifname.is_empty() || ifname.len() > MAX_IFNAME_LEN || f3.len() > MAX_IFNAME_LEN {
                return Err(bad());
            }
            vip.ifname = Some(ifname.to_string());
            vip.label = label;
        }
    }
    if let Some(f4) = fields.get(3) {
        vip.broadcast = Some(parse_bcast(f4)?);
    }
    Ok(vip)
}

/// How a VIP announces itself after being added.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AnnounceConfig {
    /// Number of gratuitous ARPs / NAs (0 = none).
    pub count: u32,
    /// Interval between them; the first goes out at once.
    pub interval: Duration,
    /// Set the Router flag in IPv6 NAs (when the VIP is a gateway).
    pub ipv6_router: bool,
}

impl Default for AnnounceConfig {
    fn default() -> Self {
        AnnounceConfig {
            count: DEFAULT_ANNOUNCE_COUNT,
            interval: DEFAULT_ANNOUNCE_INTERVAL,
            ipv6_router: false,
        }
    }
}

/// Why a VIP operation failed.
#[derive(Debug, thiserror::Error)]
pub enum VipError {
    /// Interface or prefix were omitted and no connected route covers the address.
    #[error(
        "VIP {ip}: no interface/prefix given and no connected route covers it; \
         write ADDRESS/PREFIX/IFACE or configure an address in that subnet first"
    )]
    NoRoute {
        /// The VIP.
        ip: IpAddr,
    },
    /// rtnetlink failed.
    #[error("VIP {ip}: {source}")]
    Netlink {
        /// The VIP.
        ip: IpAddr,
        /// The netlink error.
        #[source]
        source: NetError,
    },
    /// The address was deleted but a re-read still shows it (something re-added it).
    #[error("VIP {ip} is still on {ifname} after removal; something else keeps adding it")]
    StillPresent {
        /// The VIP.
        ip: IpAddr,
        /// Where it was seen.
        ifname: String,
    },
    /// The first gratuitous ARP could not be sent.
    #[error(transparent)]
    Arp(#[from] AnnounceError),
    /// The first neighbour advertisement could not be sent.
    #[error(transparent)]
    Ndisc(#[from] NdiscError),
}

/// A virtual IP address resource.
pub struct Vip {
    spec: VipSpec,
    announce: AnnounceConfig,
    netlink: OnceCell<Netlink>,
    burst: Mutex<Option<AbortHandle>>,
}

impl std::fmt::Debug for Vip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vip")
            .field("spec", &self.spec)
            .field("announce", &self.announce)
            .finish_non_exhaustive()
    }
}

impl Vip {
    /// A VIP with its announcement policy; no I/O until started.
    pub fn new(spec: VipSpec, announce: AnnounceConfig) -> Vip {
        Vip {
            spec,
            announce,
            netlink: OnceCell::new(),
            burst: Mutex::new(None),
        }
    }

    /// The parsed specification.
    pub fn spec(&self) -> &VipSpec {
        &self.spec
    }

    async fn nl(&self) -> Result<&Netlink, VipError> {
        self.netlink
            .get_or_try_init(|| async { Netlink::connect() })
            .await
            .map_err(|source| VipError::Netlink {
                ip: self.spec.ip,
                source,
            })
    }

    fn nl_err(&self) -> impl Fn(NetError) -> VipError + '_ {
        |source| VipError::Netlink {
            ip: self.spec.ip,
            source,
        }
    }

    /// Interface and prefix, from the spec or the covering connected route.
    async fn placement(&self, nl: &Netlink) -> Result<(String, u8), VipError> {
        if let (Some(i), Some(p)) = (&self.spec.ifname, self.spec.prefix_len) {
            return Ok((i.clone(), p));
        }
        let route = nl.route_for(self.spec.ip).await.map_err(self.nl_err())?;
        match (route, &self.spec.ifname, self.spec.prefix_len) {
            (Some((ri, rp)), i, p) => Ok((i.clone().unwrap_or(ri), p.unwrap_or(rp))),
            (None, Some(i), None) => Ok((i.clone(), if self.spec.ip.is_ipv4() { 32 } else { 128 })),
            (None, _, _) => Err(VipError::NoRoute { ip: self.spec.ip }),
        }
    }

    fn abort_burst(&self) {
        if let Some(h) = self.burst.lock().unwrap_or_else(|e| e.into_inner()).take() {
            h.abort();
        }
    }

    /// Adds the address (with label/broadcast), sends the first announcement immediately and
    /// the rest in a background task. Idempotent: an address already present is announced
    /// again (that is also how a re-announce after a competing owner is done).
    pub async fn start(&self) -> Result<AddOutcome, VipError> {
        let nl = self.nl().await?;
        let (ifname, prefix) = self.placement(nl).await?;
        let link = nl.link(&ifname).await.map_err(self.nl_err())?;
        let outcome = nl
            .add_address_at(
                link.index,
                &ifname,
                self.spec.ip,
                prefix,
                self.spec.label.as_deref(),
                self.spec.broadcast,
            )
            .await
            .map_err(self.nl_err())?;
        self.announce_on(&ifname, link).await?;
        tracing::info!(vip = %self.spec.ip, %ifname, prefix, ?outcome, "VIP up");
        Ok(outcome)
    }

    async fn announce_on(&self, ifname: &str, link: LinkInfo) -> Result<(), VipError> {
        self.abort_burst();
        let AnnounceConfig {
            count,
            interval,
            ipv6_router,
        } = self.announce;
        if count == 0 {
            return Ok(());
        }
        let Some(mac) = link.mac else {
            return Err(VipError::Arp(AnnounceError::NoMac {
                ifname: ifname.to_string(),
                ip: self.spec.ip.to_string(),
            }));
        };
        let announcer = match self.spec.ip {
            IpAddr::V4(ip) => Burst::Arp(Announcer::on_link(ifname, link.index, mac, ip)?),
            IpAddr::V6(ip) => {
                Burst::Na(NaAnnouncer::open(ifname, link.index, mac, ip, ipv6_router)?)
            }
        };
        // The first frame goes out before any await: takeover latency is this one send.
        announcer.send_once()?;
        let vip = self.spec.ip;
        let handle = tokio::spawn(async move {
            follow_up(|| announcer.send_once(), count - 1, interval).await;
            tracing::debug!(%vip, count, "announcement burst sent");
        });
        *self.burst.lock().unwrap_or_else(|e| e.into_inner()) = Some(handle.abort_handle());
        Ok(())
    }

    /// Announces the VIP again (after evidence of a competing owner) without touching the
    /// address.
    pub async fn reannounce(&self) -> Result<(), VipError> {
        let nl = self.nl().await?;
        let ifname = match self.locate(nl).await? {
            Some(i) => i,
            None => self.placement(nl).await?.0,
        };
        let link = nl.link(&ifname).await.map_err(self.nl_err())?;
        self.announce_on(&ifname, link).await
    }

    /// The interface currently carrying the VIP, if any.
    async fn locate(&self, nl: &Netlink) -> Result<Option<String>, VipError> {
        self.locate_at(nl, self.scope(nl).await?).await
    }

    /// Where the VIP is looked for: the index of its interface when the spec names one, every
    /// interface (`None`) otherwise.
    async fn scope(&self, nl: &Netlink) -> Result<Option<u32>, VipError> {
        match &self.spec.ifname {
            Some(i) => nl.link_index(i).await.map(Some).map_err(self.nl_err()),
            None => Ok(None),
        }
    }

    /// The interface carrying the VIP within `scope`, from one dump (named `#index` if its
    /// name cannot be read: the address was seen, whatever the interface is called).
    async fn locate_at(
        &self,
        nl: &Netlink,
        scope: Option<u32>,
    ) -> Result<Option<String>, VipError> {
        let found = nl
            .address_index(scope, self.spec.ip)
            .await
            .map_err(self.nl_err())?;
        let Some(at) = found else { return Ok(None) };
        Ok(Some(match &self.spec.ifname {
            Some(i) => i.clone(),
            None => nl.link_name(at).await.unwrap_or_else(|_| format!("#{at}")),
        }))
    }

    /// Stops any announcement burst, removes the address wherever it is present and checks
    /// that it is gone.
    pub async fn stop(&self) -> Result<DelOutcome, VipError> {
        self.abort_burst();
        let nl = self.nl().await?;
        let ip = self.spec.ip;
        // On the path that ends a split brain: the interface's index (when named), one dump
        // that finds and deletes every entry of the VIP, and one dump to verify.
        let scope = self.scope(nl).await?;
        let outcome = nl.del_address_at(scope, ip).await.map_err(self.nl_err())?;
        // Release is verified, not assumed (a VIP left behind is how two directors end up
        // answering for it). When nothing was deleted, the dump just showed it absent.
        if outcome == DelOutcome::Removed
            && let Some(ifname) = self.locate_at(nl, scope).await?
        {
            return Err(VipError::StillPresent { ip, ifname });
        }
        let ifname = self.spec.ifname.as_deref().unwrap_or("any interface");
        tracing::info!(vip = %ip, %ifname, ?outcome, "VIP down");
        Ok(outcome)
    }

    /// Whether the address is configured (on its interface, or anywhere when none is given).
    pub async fn is_present(&self) -> Result<bool, VipError> {
        let nl = self.nl().await?;
        Ok(self.locate(nl).await?.is_some())
    }
}

impl Drop for Vip {
    fn drop(&mut self) {
        self.abort_burst();
    }
}

/// An open announcer of either family, for one VIP on one interface.
enum Burst {
    /// Gratuitous ARP (IPv4).
    Arp(Announcer),
    /// Unsolicited neighbour advertisement (IPv6).
    Na(NaAnnouncer),
}

impl Burst {
    fn send_once(&self) -> Result<(), VipError> {
        match self {
            Burst::Arp(a) => a.send_once().map_err(VipError::from),
            Burst::Na(a) => a.send_once().map_err(VipError::from),
        }
    }
}

/// The rest of a burst after its first frame: `remaining` more sends, each after sleeping
/// `interval`, so the last leaves `remaining × interval` after the first. A failed send is
/// logged and the burst goes on (a full queue must not cancel later announcements).
async fn follow_up<E: std::fmt::Display>(
    send: impl Fn() -> Result<(), E>,
    remaining: u32,
    interval: Duration,
) {
    for i in 0..remaining {
        tokio::time::sleep(interval).await;
        if let Err(e) = send() {
            tracing::warn!(%e, "announcement {} of {} not sent", i + 2, remaining + 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock;

    fn v(s: &str) -> VipSpec {
        parse_vip(s).unwrap()
    }

    #[test]
    fn heartbeat_sample_forms() {
        assert_eq!(
            v("135.9.216.110"),
            VipSpec {
                ip: "135.9.216.110".parse().unwrap(),
                prefix_len: None,
                ifname: None,
                label: None,
                broadcast: None
            }
        );
        assert_eq!(v("135.9.8.7/24").prefix_len, Some(24));
        let b = v("135.9.8.7/24/135.9.8.210");
        assert_eq!(b.broadcast, Some("135.9.8.210".parse().unwrap()));
        assert_eq!(b.ifname, None);
        let i = v("135.9.8.7/24/eth0");
        assert_eq!(i.ifname.as_deref(), Some("eth0"));
        let all = v("135.9.8.7/24/eth0/135.9.8.210");
        assert_eq!(all.ifname.as_deref(), Some("eth0"));
        assert_eq!(all.broadcast, Some("135.9.8.210".parse().unwrap()));
    }

    #[test]
    fn labels_netmasks_and_ipv6() {
        let l = v("192.0.2.10/24/eth0:vip");
        assert_eq!(l.ifname.as_deref(), Some("eth0"));
        assert_eq!(l.label.as_deref(), Some("eth0:vip"));
        assert_eq!(v("192.0.2.10/255.255.255.0").prefix_len, Some(24));
        assert_eq!(v("192.0.2.10/0.0.0.0").prefix_len, Some(0));
        let six = v("2001:db8::10/64/eth1");
        assert_eq!(six.ip, "2001:db8::10".parse::<IpAddr>().unwrap());
        assert_eq!(six.prefix_len, Some(64));
        assert_eq!(six.ifname.as_deref(), Some("eth1"));
    }

    #[test]
    fn errors_name_the_spec() {
        let cases = [
            ("192.0.2.300", "not an IPv4 or IPv6"),
            ("192.0.2.10/33", "prefix length"),
            ("192.0.2.10/255.0.255.0", "netmask"),
            ("2001:db8::1/129", "0-128"),
            ("2001:db8::1/64/eth0:x", "labels are IPv4 only"),
            ("2001:db8::1/64/192.0.2.255", "broadcast"),
            ("192.0.2.10/24/eth0/192.0.2.x", "broadcast"),
            ("192.0.2.10/24/averyveryverylongif", "1-15"),
            ("192.0.2.10/24/eth0:", "1-15"),
            ("192.0.2.10/24/192.0.2.255/eth0", "too many"),
            ("192.0.2.10/24/eth0/192.0.2.255/x", "too many"),
        ];
        for (spec, want) in cases {
            let e = parse_vip(spec).unwrap_err().to_string();
            assert!(e.contains(want), "{spec}: {e}");
            assert!(e.contains(spec), "{spec}: {e}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn follow_up_sleeps_first_and_ends_on_time_even_after_a_failed_send() {
        let t0 = clock::now();
        let sent = Mutex::new(Vec::new());
        let send = || {
            let mut s = sent.lock().unwrap();
            s.push(clock::since(t0));
            if s.len() == 2 {
                Err("queue full")
            } else {
                Ok(())
            }
        };
        follow_up(send, DEFAULT_ANNOUNCE_COUNT - 1, DEFAULT_ANNOUNCE_INTERVAL).await;
        let ms: Vec<u128> = sent.lock().unwrap().iter().map(|d| d.as_millis()).collect();
        // With the first frame sent at t0 by the caller: five frames, 200 ms apart.
        assert_eq!(ms, [200, 400, 600, 800]);
        assert_eq!(clock::since(t0), Duration::from_millis(800));
    }
}
