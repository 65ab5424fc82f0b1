//! Built-in `ipvssync::IFACE[::SYNCID]`: the kernel's IPVS connection sync daemon follows
//! the group, so established connections survive a director failover.
//!
//! * **start** (this node becomes the active director): the backup daemon stops and the
//!   master starts, multicasting the connection table on IFACE.
//! * **stop** (the group leaves): the master stops and the backup starts, so this node
//!   learns the new active's connections.
//! * **status**: running while the master runs. A node where neither runs (a standby just
//!   started, which has never held the group) starts the backup then: heartbeat probes
//!   every group at start, and the standby must receive the master's table from its first
//!   moment, as keepalived's `lvs_sync_daemon` starts the backup in BACKUP state.
//!
//! Put it before `ldirectord` in the group (`dir1 VIP ipvssync::eth0::7 ldirectord`); the
//! two directors must use the same SYNCID (0-255, default 0). The daemon is per network
//! namespace, like the rules.

use crate::dataplane::DataplaneError;
use crate::dataplane::ipvs::Ipvs;
use crate::dataplane::ipvs_sync::{IFNAME_MAX, SyncDaemon, SyncRole};

/// Why the sync daemon could not be switched.
#[derive(Debug, thiserror::Error)]
pub enum IpvsSyncError {
    /// IPVS refused or is missing.
    #[error("ipvssync on {interface}: {source}")]
    Ipvs {
        /// The multicast interface.
        interface: String,
        /// Cause.
        #[source]
        source: DataplaneError,
    },
    /// The blocking task was lost (the runtime is shutting down).
    #[error("ipvssync on {interface}: the netlink task did not finish")]
    Lost {
        /// The multicast interface.
        interface: String,
    },
}

/// Why `ipvssync` arguments are unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IpvsSyncArgsError {
    /// No interface, or too many words.
    #[error("write ipvssync::IFACE[::SYNCID]")]
    Shape,
    /// The interface name is empty or longer than the kernel takes.
    #[error("interface {0:?} is not a usable name (1-{IFNAME_MAX} characters)")]
    Interface(String),
    /// The sync id is not 0-255.
    #[error("syncid {0:?} is not a number from 0 to 255")]
    SyncId(String),
}

/// The sync daemon switch of one group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpvsSync {
    interface: String,
    sync_id: u8,
}

impl IpvsSync {
    /// From the haresources arguments (`IFACE`, optional `SYNCID`).
    pub fn from_args(args: &[String]) -> Result<IpvsSync, IpvsSyncArgsError> {
        let (interface, id) = match args {
            [i] => (i, None),
            [i, id] => (i, Some(id)),
            _ => return Err(IpvsSyncArgsError::Shape),
        };
        if interface.is_empty() || interface.len() > IFNAME_MAX || interface.contains('/') {
            return Err(IpvsSyncArgsError::Interface(interface.clone()));
        }
        let sync_id = match id {
            None => 0,
            Some(id) => id
                .parse()
                .map_err(|_| IpvsSyncArgsError::SyncId(id.clone()))?,
        };
        Ok(IpvsSync {
            interface: interface.clone(),
            sync_id,
        })
    }

    /// The multicast interface.
    pub fn interface(&self) -> &str {
        &self.interface
    }

    fn daemon(&self, role: SyncRole) -> SyncDaemon {
        SyncDaemon {
            role,
            interface: self.interface.clone(),
            sync_id: self.sync_id,
        }
    }

    /// Runs one netlink exchange off the runtime's threads (the socket blocks).
    async fn with_ipvs<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Ipvs) -> Result<T, DataplaneError> + Send + 'static,
    ) -> Result<T, IpvsSyncError> {
        let interface = self.interface.clone();
        tokio::task::spawn_blocking(move || Ipvs::open().and_then(|mut ipvs| f(&mut ipvs)))
            .await
            .map_err(|_| IpvsSyncError::Lost {
                interface: interface.clone(),
            })?
            .map_err(|source| IpvsSyncError::Ipvs { interface, source })
    }

    async fn become_(&self, role: SyncRole) -> Result<(), IpvsSyncError> {
        let wanted = self.daemon(role);
        let steps = self.with_ipvs(move |ipvs| ipvs.apply_sync(&wanted)).await?;
        if !steps.is_empty() {
            tracing::info!(
                interface = %self.interface,
                sync_id = self.sync_id,
                "IPVS sync daemon: {} now",
                role.name()
            );
        }
        Ok(())
    }

    /// This node is the active director: master.
    pub async fn start(&self) -> Result<(), IpvsSyncError> {
        self.become_(SyncRole::Master).await
    }

    /// This node is the standby: backup.
    pub async fn stop(&self) -> Result<(), IpvsSyncError> {
        self.become_(SyncRole::Backup).await
    }

    /// Whether the master runs; starts the backup when neither runs (see the module doc).
    pub async fn is_running(&self) -> Result<bool, IpvsSyncError> {
        let running = self.with_ipvs(|ipvs| ipvs.sync_daemons()).await?;
        if running.iter().any(|d| d.role == SyncRole::Master) {
            return Ok(true);
        }
        if running.is_empty() {
            self.become_(SyncRole::Backup).await?;
        }
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(words: &[&str]) -> Vec<String> {
        words.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn arguments_name_the_interface_and_the_sync_id() {
        let s = IpvsSync::from_args(&args(&["eth0", "7"])).unwrap();
        assert_eq!(s.daemon(SyncRole::Master).interface, "eth0");
        assert_eq!(s.daemon(SyncRole::Backup).sync_id, 7);
        assert_eq!(
            IpvsSync::from_args(&args(&["eth0"])).unwrap().sync_id,
            0,
            "ipvsadm's default syncid"
        );
        assert_eq!(
            IpvsSync::from_args(&args(&[])),
            Err(IpvsSyncArgsError::Shape)
        );
        assert_eq!(
            IpvsSync::from_args(&args(&["eth0", "256"])),
            Err(IpvsSyncArgsError::SyncId("256".into()))
        );
        assert_eq!(
            IpvsSync::from_args(&args(&["a-very-long-interface-name"])),
            Err(IpvsSyncArgsError::Interface(
                "a-very-long-interface-name".into()
            ))
        );
    }
}
