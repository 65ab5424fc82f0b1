//! Interface addresses and connected routes over rtnetlink.
//!
//! [`Netlink`] is the only place in hbd that talks to `rtnetlink`: the crate has had several
//! breaking releases in a year, so its types never leave this module. Every operation is
//! idempotent in the way a resource manager needs it: adding an address that is already there
//! is [`AddOutcome::AlreadyPresent`], removing one that is gone is
//! [`DelOutcome::AlreadyAbsent`] (heartbeat's IPaddr treats both as success too).
//!
//! The socket belongs to the network namespace of the thread that called
//! [`Netlink::connect`], which is how the e2e tests drive it inside a namespace.

use std::net::{IpAddr, Ipv4Addr};

use futures::TryStreamExt;
use netlink_packet_route::AddressFamily;
use netlink_packet_route::address::{AddressAttribute, AddressFlags, AddressMessage};
use netlink_packet_route::link::{LinkAttribute, LinkFlags};
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteHeader, RouteType};
use rtnetlink::{Handle, RouteMessageBuilder};

/// Longest interface name or address label the kernel accepts (IFNAMSIZ - 1).
pub const MAX_IFNAME_LEN: usize = 15;

/// errno values the idempotent operations look for (Linux asm-generic/errno-base.h).
const ENOENT: i32 = 2;
const ENODEV: i32 = 19;
const EEXIST: i32 = 17;
const EADDRNOTAVAIL: i32 = 99;

/// Why a netlink operation failed; every variant names the interface or address concerned.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// The rtnetlink socket could not be opened (not enough privilege, no netlink).
    #[error("cannot open rtnetlink socket: {0}")]
    Connect(#[source] std::io::Error),
    /// The named interface does not exist in this network namespace.
    #[error("interface {ifname:?} does not exist")]
    NoSuchInterface {
        /// The interface name asked for.
        ifname: String,
    },
    /// An address label is too long or does not start with its interface name.
    #[error(
        "address label {label:?} is not valid on {ifname}: it must start with \"{ifname}\" \
         and be at most 15 characters (e.g. \"{ifname}:0\")"
    )]
    BadLabel {
        /// Interface the address goes on.
        ifname: String,
        /// The label given.
        label: String,
    },
    /// The kernel refused a request.
    #[error("netlink {op} {target} failed: {detail}")]
    Kernel {
        /// The operation (`add address`, `delete address`, `get link`, …).
        op: &'static str,
        /// What it was about: `192.0.2.10/24 on eth0`, an interface name, …
        target: String,
        /// Positive errno when the kernel sent one.
        errno: Option<i32>,
        /// The kernel's or the library's description.
        detail: String,
    },
}

/// Result of an idempotent add.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddOutcome {
    /// The address was added by this call.
    Added,
    /// The address was already on the interface (kernel EEXIST); nothing changed.
    AlreadyPresent,
}

/// Result of an idempotent delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DelOutcome {
    /// The address was removed by this call.
    Removed,
    /// The address was not on the interface; nothing changed.
    AlreadyAbsent,
}

/// One address as seen on an interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceAddress {
    /// The local address.
    pub ip: IpAddr,
    /// Prefix length.
    pub prefix_len: u8,
    /// IPv4 label (`eth0:vip`), when set.
    pub label: Option<String>,
}

/// A link's identity: what raw sockets need to send on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkInfo {
    /// Interface index.
    pub index: u32,
    /// Ethernet address, when the link has a 6-byte hardware address.
    pub mac: Option<[u8; 6]>,
    /// Whether the link is up and has carrier (`IFF_UP` and `IFF_RUNNING`), as keepalived's
    /// `track_interface` sees it.
    pub running: bool,
}

/// A handle on the rtnetlink socket of the current network namespace.
#[derive(Clone)]
pub struct Netlink {
    handle: Handle,
}

fn kernel_error(op: &'static str, target: impl Into<String>, e: rtnetlink::Error) -> NetError {
    let (errno, detail) = match &e {
        rtnetlink::Error::NetlinkError(m) => (Some(m.raw_code().abs()), m.to_io().to_string()),
        other => (None, other.to_string()),
    };
    NetError::Kernel {
        op,
        target: target.into(),
        errno,
        detail,
    }
}

fn errno_of(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => Some(m.raw_code().abs()),
        _ => None,
    }
}

/// Whether a dumped address entry is `ip` (on interface `index`, when given: the dump's
/// index filter is not applied by every kernel).
fn carries(msg: &AddressMessage, index: Option<u32>, ip: IpAddr) -> bool {
    index.is_none_or(|i| msg.header.index == i) && message_ip(msg) == Some(ip)
}

/// The local address carried by an address message (IFA_LOCAL for IPv4, IFA_ADDRESS else).
fn message_ip(msg: &AddressMessage) -> Option<IpAddr> {
    let local = msg.attributes.iter().find_map(|a| match a {
        AddressAttribute::Local(ip) => Some(*ip),
        _ => None,
    });
    local.or_else(|| {
        msg.attributes.iter().find_map(|a| match a {
            AddressAttribute::Address(ip) => Some(*ip),
            _ => None,
        })
    })
}

fn message_label(msg: &AddressMessage) -> Option<String> {
    msg.attributes.iter().find_map(|a| match a {
        AddressAttribute::Label(l) => Some(l.clone()),
        _ => None,
    })
}

/// Whether `ip` lies inside `net/prefix_len` (same family only).
pub fn prefix_contains(net: IpAddr, prefix_len: u8, ip: IpAddr) -> bool {
    match (net, ip) {
        (IpAddr::V4(n), IpAddr::V4(a)) if prefix_len <= 32 => {
            let mask = u32::MAX
                .checked_shl(32 - u32::from(prefix_len))
                .unwrap_or(0);
            u32::from(n) & mask == u32::from(a) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(a)) if prefix_len <= 128 => {
            let mask = u128::MAX
                .checked_shl(128 - u32::from(prefix_len))
                .unwrap_or(0);
            u128::from(n) & mask == u128::from(a) & mask
        }
        _ => false,
    }
}

/// A link's state as the kernel announced it (an `RTM_NEWLINK` or `RTM_DELLINK`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkChange {
    /// Interface name.
    pub ifname: String,
    /// Up with carrier (`IFF_UP` and `IFF_RUNNING`); a deleted link is not.
    pub running: bool,
}

/// The kernel's link announcements (rtnetlink multicast group `RTNLGRP_LINK`), as keepalived
/// follows tracked interfaces: a link going down is known when the kernel says so, not at
/// the next poll. Subscribe before reading the initial state, so no change falls between.
pub struct LinkEvents {
    messages: futures::channel::mpsc::UnboundedReceiver<(
        rtnetlink::packet_core::NetlinkMessage<rtnetlink::packet_route::RouteNetlinkMessage>,
        rtnetlink::sys::SocketAddr,
    )>,
}

impl LinkEvents {
    /// Joins `RTNLGRP_LINK` on a socket of the calling thread's network namespace and spawns
    /// its connection task on the current tokio runtime (dropping the value ends the task).
    pub fn subscribe() -> Result<LinkEvents, NetError> {
        let (conn, _handle, messages) =
            rtnetlink::new_multicast_connection(&[rtnetlink::MulticastGroup::Link])
                .map_err(NetError::Connect)?;
        tokio::spawn(conn);
        Ok(LinkEvents { messages })
    }

    /// The next link change; `None` once the socket has closed.
    pub async fn next(&mut self) -> Option<LinkChange> {
        use futures::StreamExt;
        use rtnetlink::packet_core::NetlinkPayload;
        use rtnetlink::packet_route::RouteNetlinkMessage;
        // Bounded by the socket: each turn consumes one message.
        while let Some((msg, _)) = self.messages.next().await {
            let (link, deleted) = match msg.payload {
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(l)) => (l, false),
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelLink(l)) => (l, true),
                _ => continue,
            };
            let Some(ifname) = link.attributes.iter().find_map(|a| match a {
                LinkAttribute::IfName(n) => Some(n.clone()),
                _ => None,
            }) else {
                continue;
            };
            let flags = link.header.flags;
            return Some(LinkChange {
                ifname,
                running: !deleted
                    && flags.contains(LinkFlags::Up)
                    && flags.contains(LinkFlags::Running),
            });
        }
        None
    }
}

impl Netlink {
    /// Opens an rtnetlink socket in the calling thread's network namespace and spawns its
    /// connection task on the current tokio runtime (dropping every handle ends the task).
    pub fn connect() -> Result<Netlink, NetError> {
        let (conn, handle, _) = rtnetlink::new_connection().map_err(NetError::Connect)?;
        tokio::spawn(conn);
        Ok(Netlink { handle })
    }

    /// The index and MAC address of an interface.
    pub async fn link(&self, ifname: &str) -> Result<LinkInfo, NetError> {
        let mut links = self.handle.link().get().match_name(ifname).execute();
        let msg = match links.try_next().await {
            Ok(Some(msg)) => msg,
            Ok(None) => {
                return Err(NetError::NoSuchInterface {
                    ifname: ifname.to_string(),
                });
            }
            Err(e) if errno_of(&e) == Some(ENODEV) => {
                return Err(NetError::NoSuchInterface {
                    ifname: ifname.to_string(),
                });
            }
            Err(e) => return Err(kernel_error("get link", ifname, e)),
        };
        let mac = msg.attributes.iter().find_map(|a| match a {
            LinkAttribute::Address(bytes) => <[u8; 6]>::try_from(bytes.as_slice()).ok(),
            _ => None,
        });
        let flags = msg.header.flags;
        Ok(LinkInfo {
            index: msg.header.index,
            mac,
            running: flags.contains(LinkFlags::Up) && flags.contains(LinkFlags::Running),
        })
    }

    /// The index of an interface.
    pub async fn link_index(&self, ifname: &str) -> Result<u32, NetError> {
        Ok(self.link(ifname).await?.index)
    }

    /// Makes sure `tunl0`, the IPIP fallback device LVS-TUN real servers receive on, exists.
    /// Asking for an `ipip` link makes the kernel load the `ipip` module (its alias
    /// `rtnl-link-ipip`), and loading it creates `tunl0` in every namespace; the request
    /// itself then meets EEXIST, which only says it is there. A kernel without ipip refuses
    /// the request (EOPNOTSUPP), as `modprobe ipip` would fail in the shipped script.
    pub async fn ensure_tunl0(&self) -> Result<(), NetError> {
        const TUNL0: &str = "tunl0";
        if self.link_index(TUNL0).await.is_ok() {
            return Ok(());
        }
        let mut msg = rtnetlink::LinkUnspec::new_with_name(TUNL0).build();
        msg.attributes.push(LinkAttribute::LinkInfo(vec![
            netlink_packet_route::link::LinkInfo::Kind(netlink_packet_route::link::InfoKind::IpIp),
        ]));
        match self.handle.link().add(msg).execute().await {
            Ok(()) => Ok(()),
            Err(e) if errno_of(&e) == Some(nix::libc::EEXIST) => Ok(()),
            Err(e) => Err(kernel_error("create link (kind ipip)", TUNL0, e)),
        }?;
        self.link_index(TUNL0).await.map(|_| ())
    }

    /// Sets an interface up (idempotent).
    pub async fn set_link_up(&self, ifname: &str) -> Result<(), NetError> {
        let index = self.link_index(ifname).await?;
        let msg = rtnetlink::LinkUnspec::new_with_index(index).up().build();
        self.handle
            .link()
            .set(msg)
            .execute()
            .await
            .map_err(|e| kernel_error("set link up", ifname, e))
    }

    /// The name of the interface with this index.
    pub async fn link_name(&self, index: u32) -> Result<String, NetError> {
        let mut links = self.handle.link().get().match_index(index).execute();
        let msg = match links.try_next().await {
            Ok(Some(msg)) => msg,
            Ok(None) => {
                return Err(NetError::NoSuchInterface {
                    ifname: format!("#{index}"),
                });
            }
            Err(e) if errno_of(&e) == Some(ENODEV) => {
                return Err(NetError::NoSuchInterface {
                    ifname: format!("#{index}"),
                });
            }
            Err(e) => return Err(kernel_error("get link", format!("#{index}"), e)),
        };
        msg.attributes
            .iter()
            .find_map(|a| match a {
                LinkAttribute::IfName(n) => Some(n.clone()),
                _ => None,
            })
            .ok_or(NetError::NoSuchInterface {
                ifname: format!("#{index}"),
            })
    }

    /// Adds `ip/prefix_len` to `ifname`; idempotent (EEXIST → [`AddOutcome::AlreadyPresent`]).
    ///
    /// `label` (IPv4 only) must start with the interface name, as the kernel requires;
    /// `broadcast` (IPv4 only) overrides the computed one. IPv6 addresses are added with
    /// `IFA_F_NODAD`: a VIP moving between directors must be usable at once, not after
    /// duplicate address detection (keepalived does the same).
    pub async fn add_address(
        &self,
        ifname: &str,
        ip: IpAddr,
        prefix_len: u8,
        label: Option<&str>,
        broadcast: Option<Ipv4Addr>,
    ) -> Result<AddOutcome, NetError> {
        let index = self.link_index(ifname).await?;
        self.add_address_at(index, ifname, ip, prefix_len, label, broadcast)
            .await
    }

    /// [`Netlink::add_address`] for a caller that already knows the interface index (saves
    /// one netlink round trip on the takeover path); `ifname` is used for the label check
    /// and in errors.
    pub async fn add_address_at(
        &self,
        index: u32,
        ifname: &str,
        ip: IpAddr,
        prefix_len: u8,
        label: Option<&str>,
        broadcast: Option<Ipv4Addr>,
    ) -> Result<AddOutcome, NetError> {
        if let Some(l) = label
            && (l.len() > MAX_IFNAME_LEN || !l.starts_with(ifname))
        {
            return Err(NetError::BadLabel {
                ifname: ifname.to_string(),
                label: l.to_string(),
            });
        }
        let mut req = self.handle.address().add(index, ip, prefix_len);
        let msg = req.message_mut();
        if ip.is_ipv4() {
            if let Some(l) = label {
                msg.attributes.push(AddressAttribute::Label(l.to_string()));
            }
            if let Some(b) = broadcast {
                msg.attributes
                    .retain(|a| !matches!(a, AddressAttribute::Broadcast(_)));
                msg.attributes.push(AddressAttribute::Broadcast(b));
            }
        } else {
            msg.attributes
                .push(AddressAttribute::Flags(AddressFlags::Nodad));
        }
        match req.execute().await {
            Ok(()) => Ok(AddOutcome::Added),
            Err(e) if errno_of(&e) == Some(EEXIST) => Ok(AddOutcome::AlreadyPresent),
            Err(e) => Err(kernel_error(
                "add address",
                format!("{ip}/{prefix_len} on {ifname}"),
                e,
            )),
        }
    }

    async fn address_messages(&self, index: Option<u32>) -> Result<Vec<AddressMessage>, NetError> {
        let mut req = self.handle.address().get();
        if let Some(i) = index {
            req = req.set_link_index_filter(i);
        }
        req.execute().try_collect().await.map_err(|e| {
            kernel_error(
                "dump addresses",
                index.map_or("all".to_string(), |i| format!("#{i}")),
                e,
            )
        })
    }

    /// Removes `ip` from `ifname` whatever its prefix; idempotent (not there →
    /// [`DelOutcome::AlreadyAbsent`]). See [`Netlink::del_address_at`].
    pub async fn del_address(&self, ifname: &str, ip: IpAddr) -> Result<DelOutcome, NetError> {
        let index = self.link_index(ifname).await?;
        self.del_address_at(Some(index), ip).await
    }

    /// Removes every address entry for `ip` (whatever its prefix) found by one dump: on
    /// interface `index` when given, on every interface otherwise. Idempotent (none found,
    /// or gone before the delete → [`DelOutcome::AlreadyAbsent`]).
    pub async fn del_address_at(
        &self,
        index: Option<u32>,
        ip: IpAddr,
    ) -> Result<DelOutcome, NetError> {
        let found: Vec<AddressMessage> = self
            .address_messages(index)
            .await?
            .into_iter()
            .filter(|m| carries(m, index, ip))
            .collect();
        let mut outcome = DelOutcome::AlreadyAbsent;
        for msg in found {
            let on = msg.header.index;
            match self.handle.address().del(msg).execute().await {
                Ok(()) => outcome = DelOutcome::Removed,
                Err(e) if matches!(errno_of(&e), Some(ENOENT | EADDRNOTAVAIL)) => {}
                Err(e) => {
                    return Err(kernel_error(
                        "delete address",
                        format!("{ip} on interface #{on}"),
                        e,
                    ));
                }
            }
        }
        Ok(outcome)
    }

    /// The index of an interface carrying `ip` (only interface `index`, when given), from
    /// one dump.
    pub async fn address_index(
        &self,
        index: Option<u32>,
        ip: IpAddr,
    ) -> Result<Option<u32>, NetError> {
        Ok(self
            .address_messages(index)
            .await?
            .iter()
            .find(|m| carries(m, index, ip))
            .map(|m| m.header.index))
    }

    /// Every address on `ifname`, IPv4 and IPv6, in kernel order.
    pub async fn addresses(&self, ifname: &str) -> Result<Vec<InterfaceAddress>, NetError> {
        let index = self.link_index(ifname).await?;
        Ok(self
            .address_messages(Some(index))
            .await?
            .iter()
            .filter(|m| m.header.index == index)
            .filter_map(|m| {
                Some(InterfaceAddress {
                    ip: message_ip(m)?,
                    prefix_len: m.header.prefix_len,
                    label: message_label(m),
                })
            })
            .collect())
    }

    /// Whether `ip` is configured on `ifname`.
    pub async fn has_address(&self, ifname: &str, ip: IpAddr) -> Result<bool, NetError> {
        let index = self.link_index(ifname).await?;
        Ok(self.address_index(Some(index), ip).await?.is_some())
    }

    /// Every address configured on any interface of this namespace (used to skip `ucast`
    /// lines whose peer is ourselves).
    pub async fn local_addresses(&self) -> Result<Vec<IpAddr>, NetError> {
        Ok(self
            .address_messages(None)
            .await?
            .iter()
            .filter_map(message_ip)
            .collect())
    }

    /// The interface and prefix length of the most specific connected (gateway-less,
    /// main-table, unicast) route covering `ip`: how heartbeat's IPaddr finds `nic` and
    /// `cidr_netmask` when they are omitted ("the route must already exist").
    pub async fn route_for(&self, ip: IpAddr) -> Result<Option<(String, u8)>, NetError> {
        let query = match ip {
            IpAddr::V4(_) => RouteMessageBuilder::<Ipv4Addr>::new().build(),
            IpAddr::V6(_) => RouteMessageBuilder::<std::net::Ipv6Addr>::new().build(),
        };
        let routes: Vec<_> = self
            .handle
            .route()
            .get(query)
            .execute()
            .try_collect()
            .await
            .map_err(|e| kernel_error("dump routes", ip.to_string(), e))?;
        let mut best: Option<(u32, u8)> = None;
        for r in &routes {
            let table = r
                .attributes
                .iter()
                .find_map(|a| match a {
                    RouteAttribute::Table(t) => Some(*t),
                    _ => None,
                })
                .unwrap_or(u32::from(r.header.table));
            if table != u32::from(RouteHeader::RT_TABLE_MAIN) || r.header.kind != RouteType::Unicast
            {
                continue;
            }
            if r.header.address_family
                != match ip {
                    IpAddr::V4(_) => AddressFamily::Inet,
                    IpAddr::V6(_) => AddressFamily::Inet6,
                }
            {
                continue;
            }
            let mut dest = None;
            let mut oif = None;
            let mut gateway = false;
            for a in &r.attributes {
                match a {
                    RouteAttribute::Destination(RouteAddress::Inet(d)) => {
                        dest = Some(IpAddr::V4(*d))
                    }
                    RouteAttribute::Destination(RouteAddress::Inet6(d)) => {
                        dest = Some(IpAddr::V6(*d))
                    }
                    RouteAttribute::Oif(i) => oif = Some(*i),
                    RouteAttribute::Gateway(_) | RouteAttribute::Via(_) => gateway = true,
                    _ => {}
                }
            }
            let plen = r.header.destination_prefix_length;
            let (Some(dest), Some(oif)) = (dest, oif) else {
                continue;
            };
            if gateway || plen == 0 || !prefix_contains(dest, plen, ip) {
                continue;
            }
            if best.is_none_or(|(_, p)| plen > p) {
                best = Some((oif, plen));
            }
        }
        match best {
            Some((oif, plen)) => Ok(Some((self.link_name(oif).await?, plen))),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_contains_v4_and_v6() {
        let net: IpAddr = "192.0.2.0".parse().unwrap();
        assert!(prefix_contains(net, 24, "192.0.2.200".parse().unwrap()));
        assert!(!prefix_contains(net, 24, "192.0.3.1".parse().unwrap()));
        assert!(prefix_contains(net, 0, "203.0.113.1".parse().unwrap()));
        assert!(prefix_contains(
            "192.0.2.10".parse().unwrap(),
            32,
            "192.0.2.10".parse().unwrap()
        ));
        assert!(!prefix_contains(net, 33, "192.0.2.1".parse().unwrap()));
        let net6: IpAddr = "2001:db8::".parse().unwrap();
        assert!(prefix_contains(net6, 64, "2001:db8::10".parse().unwrap()));
        assert!(!prefix_contains(
            net6,
            64,
            "2001:db8:1::10".parse().unwrap()
        ));
        assert!(!prefix_contains(net6, 64, "192.0.2.1".parse().unwrap()));
    }
}
