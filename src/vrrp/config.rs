//! The validated VRRP model: what `vrrp_instance`, `vrrp_sync_group` and `vrrp_script`
//! blocks of keepalived.conf, and hbd's YAML `vrrp:` section, produce. Built by
//! [`crate::config::keepalived`] (the YAML through the same builder); read by the VRRP backend, which turns each
//! [`InstanceSpec`] into a [`crate::vrrp::state::Instance`].

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::packet::{Auth, Expect, MCAST_V4, MCAST_V6, Version};
use super::state::{GarpConfig, InitialState, InstanceConfig, ScriptConfig};

/// Everything VRRP needs from one configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VrrpConfig {
    /// `router_id` (informational, used in logs).
    pub router_id: Option<String>,
    /// Instances, in file order.
    pub instances: Vec<InstanceSpec>,
    /// Sync groups, in file order.
    pub sync_groups: Vec<SyncGroupSpec>,
    /// Tracked scripts, in file order.
    pub scripts: Vec<ScriptConfig>,
    /// `enable_script_security`: refuse scripts writable by non-root (as keepalived).
    pub script_security: bool,
}

impl VrrpConfig {
    /// Sync groups as member indices into `instances` (for [`crate::vrrp::state::VrrpRouter`]).
    pub fn group_indices(&self) -> Vec<Vec<usize>> {
        self.sync_groups
            .iter()
            .map(|g| {
                g.members
                    .iter()
                    .filter_map(|m| self.instances.iter().position(|i| &i.name == m))
                    .collect()
            })
            .collect()
    }

    /// The script a `track_script` line names.
    pub fn script(&self, name: &str) -> Option<&ScriptConfig> {
        self.scripts.iter().find(|s| s.name == name)
    }
}

/// One virtual address (`virtual_ipaddress` line: `ADDR[/LEN] [dev IF] [label L] [scope S]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VipSpec {
    /// The address.
    pub addr: IpAddr,
    /// Prefix length (keepalived default: /32 or /128).
    pub prefix: u8,
    /// Interface, when not the instance's (`dev`).
    pub dev: Option<String>,
    /// Address label (`label eth0:1`).
    pub label: Option<String>,
    /// Scope (`scope host|link|global`).
    pub scope: Option<String>,
}

/// Notify scripts (`notify_master`, `notify_backup`, `notify_fault`, `notify_stop`, `notify`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NotifySpec {
    /// Run on entering MASTER.
    pub master: Option<String>,
    /// Run on entering BACKUP.
    pub backup: Option<String>,
    /// Run on entering FAULT.
    pub fault: Option<String>,
    /// Run on stopping.
    pub stop: Option<String>,
    /// Run on every change with `GROUP|INSTANCE name state priority` appended (keepalived).
    pub any: Option<String>,
}

/// A tracked item with its weight (`track_script` / `track_interface` line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackSpec {
    /// Script or interface name.
    pub name: String,
    /// Weight: the line's `weight N`, else the script's own, else 0 (FAULT when down).
    pub weight: i32,
}

/// One `vrrp_instance`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceSpec {
    /// `vrrp_instance NAME`.
    pub name: String,
    /// Where it was declared (`file:line`), for messages.
    pub origin: (PathBuf, usize),
    /// `interface`.
    pub interface: String,
    /// `virtual_router_id`.
    pub vrid: u8,
    /// `version` (or global `vrrp_version`; 3 for IPv6).
    pub version: Version,
    /// `priority` (default 100).
    pub priority: u8,
    /// `advert_int` (default 1 s).
    pub advert_int: Duration,
    /// `state` (default BACKUP).
    pub initial: InitialState,
    /// Not `nopreempt`.
    pub preempt: bool,
    /// `preempt_delay`.
    pub preempt_delay: Duration,
    /// v2 authentication.
    pub auth: Auth,
    /// `virtual_ipaddress`: advertised and held.
    pub vips: Vec<VipSpec>,
    /// `virtual_ipaddress_excluded`: held, not advertised.
    pub excluded_vips: Vec<VipSpec>,
    /// Multicast group (224.0.0.18, ff02::12, or `vrrp_mcast_group4/6`).
    pub mcast_group: IpAddr,
    /// `unicast_src_ip` / `mcast_src_ip`.
    pub src_ip: Option<IpAddr>,
    /// `unicast_peer`: when not empty, adverts go to each peer instead of the group.
    pub unicast_peers: Vec<IpAddr>,
    /// `track_interface`.
    pub track_interfaces: Vec<TrackSpec>,
    /// `track_script`.
    pub track_scripts: Vec<TrackSpec>,
    /// Notify scripts.
    pub notify: NotifySpec,
    /// Announcements after becoming master.
    pub garp: GarpConfig,
}

impl InstanceSpec {
    /// Whether the instance is IPv6.
    pub fn is_ipv6(&self) -> bool {
        self.vips.first().is_some_and(|v| v.addr.is_ipv6())
    }

    /// The state machine's configuration, given the primary address the socket sends from.
    pub fn machine(&self, local_addr: IpAddr) -> InstanceConfig {
        InstanceConfig {
            name: self.name.clone(),
            vrid: self.vrid,
            version: self.version,
            priority: self.priority,
            advert_int: self.advert_int,
            initial: self.initial,
            preempt: self.preempt,
            preempt_delay: self.preempt_delay,
            local_addr: self.src_ip.unwrap_or(local_addr),
            garp: self.garp,
        }
    }

    /// The receive rules for this instance's adverts.
    pub fn expect(&self) -> Expect {
        Expect {
            version: self.version,
            vrid: self.vrid,
            naddr: self.vips.len(),
            auth: self.auth,
            interval_cs: u16::try_from(self.advert_int.as_millis() / 10).unwrap_or(u16::MAX),
            unicast: !self.unicast_peers.is_empty(),
        }
    }

    /// The default multicast group of a family.
    pub fn default_group(ipv6: bool) -> IpAddr {
        if ipv6 {
            IpAddr::V6(MCAST_V6)
        } else {
            IpAddr::V4(MCAST_V4)
        }
    }
}

/// One `vrrp_sync_group`: its instances move together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncGroupSpec {
    /// `vrrp_sync_group NAME`.
    pub name: String,
    /// Member instance names (`group { … }`).
    pub members: Vec<String>,
    /// The group's notify scripts.
    pub notify: NotifySpec,
}
