//! Built-in LVS role switch: `lvs` and `tunl` in haresources, native (no fork, no `ip`).
//!
//! In the seed's layout every director is also a real server. The group's first resource
//! prepares the node for its role:
//! * **start** (director): the VIPs leave the real-server device (`lo` for LVS-DR, `tunl0`
//!   for LVS-TUN), `ip_forward` is on, and the node answers ARP again (`arp_ignore=0`,
//!   `arp_announce=0` on `all` and the device), so the VIP resource that follows owns them.
//! * **stop** (real server): each VIP goes on the device as /32, `ip_forward` stays on, and
//!   ARP for it is suppressed (`arp_ignore=1`, `arp_announce=2`), replacing the old kernel
//!   "hidden" patch the seed scripts use.
//! * **status**: running when prepared as director (no VIP on the device, forwarding on).
//!
//! `tunl` is the seed's other script, the real server's init script: the same switch turned
//! around (start = real server with the VIP on the device, stop = VIP off; status = running
//! while the VIP is on the device). On `tunl0` it does what the shipped script does first:
//! `tunl0` is created when missing (the kernel loads the `ipip` module for it; a kernel
//! without ipip is a clear error), and reverse-path filtering is relaxed (`rp_filter = 0` on
//! `tunl0` and `all`), which IPIP needs because the inner packet's source is the client.
//!
//! Arguments: `lvs::VIP[::DEV]` / `tunl::VIP[::DEV]`; without a VIP, the VIPs of the group's
//! IPaddr resources (the seed writes a bare `lvs`, its script had the VIP inside). The
//! shipped resources/lvs and resources/tunl scripts do the same for heartbeat itself.

use std::net::IpAddr;

use tokio::sync::OnceCell;

use crate::net::addr::{NetError, Netlink};
use crate::net::sysctl::{Sysctl, SysctlError};

/// Why the role switch failed.
#[derive(Debug, thiserror::Error)]
pub enum LvsRoleError {
    /// An address operation failed.
    #[error("lvs role on {dev}: {source}")]
    Net {
        /// The device.
        dev: String,
        /// Cause.
        #[source]
        source: NetError,
    },
    /// `tunl0` could not be created (no ipip in this kernel).
    #[error(
        "tunl0 cannot be created: {source}; the kernel needs the ipip module (CONFIG_NET_IPIP) for LVS-TUN real servers, or use LVS-DR with the VIP on lo (tunl::VIP::lo)"
    )]
    NoTunnel {
        /// Cause.
        #[source]
        source: NetError,
    },
    /// A sysctl could not be written.
    #[error("lvs role on {dev}: {source}")]
    Sysctl {
        /// The device.
        dev: String,
        /// Cause.
        #[source]
        source: SysctlError,
    },
}

/// The IPIP fallback device of LVS-TUN real servers.
const TUNL0: &str = "tunl0";

/// The role switch for a set of VIPs on one device.
pub struct LvsRole {
    vips: Vec<IpAddr>,
    dev: String,
    real_server_on_start: bool,
    netlink: OnceCell<Netlink>,
}

impl std::fmt::Debug for LvsRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LvsRole")
            .field("vips", &self.vips)
            .field("dev", &self.dev)
            .finish_non_exhaustive()
    }
}

impl LvsRole {
    /// A role switch for `vips` on `dev`: director on start (`lvs`), or real server on
    /// start when `real_server_on_start` (`tunl`).
    pub fn new(vips: Vec<IpAddr>, dev: String, real_server_on_start: bool) -> LvsRole {
        LvsRole {
            vips,
            dev,
            real_server_on_start,
            netlink: OnceCell::new(),
        }
    }

    /// Starts the resource: the director role for `lvs`, the real-server role for `tunl`.
    pub async fn start(&self) -> Result<(), LvsRoleError> {
        if self.real_server_on_start {
            self.become_real_server().await
        } else {
            self.become_director().await
        }
    }

    /// Stops the resource: the opposite role.
    pub async fn stop(&self) -> Result<(), LvsRoleError> {
        if self.real_server_on_start {
            self.become_director().await
        } else {
            self.become_real_server().await
        }
    }

    /// Whether the resource counts as running (see the module doc).
    pub async fn is_running(&self) -> Result<bool, LvsRoleError> {
        let director = self.is_director().await?;
        Ok(if self.real_server_on_start {
            !director && self.vip_on_dev().await?
        } else {
            director
        })
    }

    /// The VIPs and the device.
    pub fn target(&self) -> (&[IpAddr], &str) {
        (&self.vips, &self.dev)
    }

    async fn nl(&self) -> Result<&Netlink, LvsRoleError> {
        self.netlink
            .get_or_try_init(|| async { Netlink::connect() })
            .await
            .map_err(|source| LvsRoleError::Net {
                dev: self.dev.clone(),
                source,
            })
    }

    fn net(&self) -> impl Fn(NetError) -> LvsRoleError + '_ {
        |source| LvsRoleError::Net {
            dev: self.dev.clone(),
            source,
        }
    }

    fn set(&self, key: Sysctl, value: &str) -> Result<(), LvsRoleError> {
        key.write(value).map_err(|source| LvsRoleError::Sysctl {
            dev: self.dev.clone(),
            source,
        })
    }

    fn arp(&self, ignore: &str, announce: &str) -> Result<(), LvsRoleError> {
        for i in ["all", self.dev.as_str()] {
            self.set(Sysctl::ArpIgnore(i.to_string()), ignore)?;
            self.set(Sysctl::ArpAnnounce(i.to_string()), announce)?;
        }
        Ok(())
    }

    /// Prepares the node as director.
    pub async fn become_director(&self) -> Result<(), LvsRoleError> {
        let nl = self.nl().await?;
        if nl.link_index(&self.dev).await.is_ok() {
            for vip in &self.vips {
                nl.del_address(&self.dev, *vip).await.map_err(self.net())?;
            }
            self.arp("0", "0")?;
        }
        self.set(Sysctl::IpForward, "1")?;
        tracing::info!(dev = %self.dev, vips = ?self.vips, "lvs: prepared as director");
        Ok(())
    }

    /// Prepares the node as real server.
    pub async fn become_real_server(&self) -> Result<(), LvsRoleError> {
        let nl = self.nl().await?;
        if self.dev == TUNL0 {
            nl.ensure_tunl0()
                .await
                .map_err(|source| LvsRoleError::NoTunnel { source })?;
        }
        let index = nl.link_index(&self.dev).await.map_err(self.net())?;
        for vip in &self.vips {
            let prefix = if vip.is_ipv4() { 32 } else { 128 };
            nl.add_address_at(index, &self.dev, *vip, prefix, None, None)
                .await
                .map_err(self.net())?;
        }
        nl.set_link_up(&self.dev).await.map_err(self.net())?;
        self.set(Sysctl::IpForward, "1")?;
        self.arp("1", "2")?;
        if self.dev == TUNL0 {
            for i in [TUNL0, "all"] {
                self.set(Sysctl::RpFilter(i.to_string()), "0")?;
            }
        }
        tracing::info!(dev = %self.dev, vips = ?self.vips, "lvs: prepared as real server");
        Ok(())
    }

    /// Whether the node is prepared as director.
    pub async fn is_director(&self) -> Result<bool, LvsRoleError> {
        let forwarding = Sysctl::IpForward
            .read()
            .map(|v| v.trim() == "1")
            .unwrap_or(false);
        Ok(forwarding && !self.vip_on_dev().await?)
    }

    async fn vip_on_dev(&self) -> Result<bool, LvsRoleError> {
        let nl = self.nl().await?;
        let mut on_dev = false;
        if nl.link_index(&self.dev).await.is_ok() {
            for vip in &self.vips {
                on_dev |= nl.has_address(&self.dev, *vip).await.map_err(self.net())?;
            }
        }
        Ok(on_dev)
    }
}
