//! Dataplane: desired virtual services vs what the kernel has, applied through IPVS or
//! nftables.
//!
//! * [`model`]: `VirtualService`, `RealServer`, schedulers, forwarding, persistence.
//! * [`diff`]: pure desired-vs-actual comparison into ordered [`Change`]s.
//! * [`ipvs`]: IPVS over generic netlink (the classic LVS dataplane).
//! * [`nft`]: nftables DNAT load balancing over native netlink, for kernels without IPVS.
//! * [`format`]: `ipvsadm -Ln` and `ipvsadm-save` text for `hactl`.
//! * [`Dataplane`] (`reconcile.rs`): what every backend does, and list → diff → apply;
//!   [`MemoryDataplane`] (`memory.rs`) records every change for the simulation.
//! * [`conntrack`]: connection counts per real for the nftables dataplane (ctnetlink).
//! * [`support`]: what each backend can do with a service (refused or approximated), pure.
//!
//! A backend is chosen at start-up ([`DataplaneBackend`]); every reconcile lists what the
//! kernel actually has, diffs it with the desired state and applies only the difference
//! (features §4 item 7), so reloads are hitless and hand-made drift is repaired.

pub mod conntrack;
pub mod diff;
pub mod format;
pub mod ipvs;
pub mod ipvs_sync;
mod memory;
pub mod model;
pub mod netlink;
pub mod nft;
mod reconcile;
pub mod support;

pub use diff::{ApplyError, Change, ServiceParams, apply_changes, diff};
pub use memory::MemoryDataplane;
pub use model::{
    Connections, Family, Forwarding, Netmask, Persistence, RealConnections, RealServer, Scheduler,
    ServiceKey, VirtualService,
};
pub use reconcile::{Dataplane, DataplaneError, ReconcileReport};
pub use support::{BackendKind, Limitation};

/// The configured dataplane (an enum so callers need no trait objects).
#[derive(Debug)]
pub enum DataplaneBackend {
    /// Kernel IPVS.
    Ipvs(ipvs::Ipvs),
    /// nftables DNAT in hbd's own table.
    Nft(nft::Nft),
    /// In memory (simulation).
    Memory(MemoryDataplane),
}

impl DataplaneBackend {
    /// The first line of `hactl ipvs`, as ipvsadm prints it: IPVS's own version and
    /// connection table size; for nftables the IPVS version hbd's view follows, and which
    /// table it shows (parsers that skip three header lines, as ldirectord's, then work).
    pub fn header(&mut self) -> String {
        match self {
            DataplaneBackend::Ipvs(d) => match d.info() {
                Ok((version, size)) => format::version_line(version, size),
                Err(_) => format::version_line(format::IPVS_VERSION, 0),
            },
            DataplaneBackend::Nft(d) => format!(
                "{} via nftables (table ip {})",
                format::version_line(format::IPVS_VERSION, 0),
                d.table()
            ),
            DataplaneBackend::Memory(_) => format::version_line(format::IPVS_VERSION, 0),
        }
    }

    /// ActiveConn/InActConn (and PersistConn) per real of `services`: IPVS's own counters,
    /// or conntrack's flows (and the persistence maps' entries) for nftables.
    pub fn connections(
        &mut self,
        services: &[VirtualService],
    ) -> Result<Connections, DataplaneError> {
        match self {
            DataplaneBackend::Ipvs(d) => d.connections(services),
            DataplaneBackend::Nft(d) => {
                let mut counts = conntrack::count(services, &conntrack::dump()?);
                for (real, n) in d.persistent_counts(services)? {
                    counts.entry(real).or_default().persistent = n;
                }
                Ok(counts)
            }
            DataplaneBackend::Memory(_) => Ok(Connections::new()),
        }
    }

    /// Which kind of dataplane this is (what [`support::limitations`] is asked about).
    pub fn kind(&self) -> BackendKind {
        match self {
            DataplaneBackend::Ipvs(_) => BackendKind::Ipvs,
            DataplaneBackend::Nft(_) => BackendKind::Nftables,
            DataplaneBackend::Memory(_) => BackendKind::Memory,
        }
    }
}

impl Dataplane for DataplaneBackend {
    async fn list(&mut self) -> Result<Vec<VirtualService>, DataplaneError> {
        match self {
            DataplaneBackend::Ipvs(d) => d.list().await,
            DataplaneBackend::Nft(d) => d.list().await,
            DataplaneBackend::Memory(d) => d.list().await,
        }
    }

    /// Applies and counts how long the kernel took (the `hbd_dataplane_apply_seconds`
    /// metric), whoever asked: the director's start, a reload or a check's change.
    async fn apply(&mut self, changes: &[Change]) -> Result<(), DataplaneError> {
        let started = crate::clock::now();
        let applied = match self {
            DataplaneBackend::Ipvs(d) => d.apply(changes).await,
            DataplaneBackend::Nft(d) => d.apply(changes).await,
            DataplaneBackend::Memory(d) => d.apply(changes).await,
        };
        if applied.is_ok() && !changes.is_empty() {
            crate::telemetry::global().observe_dataplane_apply(crate::clock::since(started));
        }
        applied
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[tokio::test]
    async fn memory_reconcile_is_idempotent() {
        let mut dp = DataplaneBackend::Memory(MemoryDataplane::default());
        let k = ServiceKey::Tcp("192.0.2.10:80".parse().unwrap());
        let mut vs = VirtualService::new(k, Scheduler::Wrr);
        vs.reals.push(RealServer::new(
            "198.51.100.1:80".parse().unwrap(),
            Forwarding::Masq,
        ));
        let owned = HashSet::from([k]);
        let r1 = dp
            .reconcile(std::slice::from_ref(&vs), &owned)
            .await
            .unwrap();
        assert_eq!(r1.changes.len(), 2);
        let r2 = dp
            .reconcile(std::slice::from_ref(&vs), &owned)
            .await
            .unwrap();
        assert!(r2.changes.is_empty());
        let r3 = dp.reconcile(&[], &owned).await.unwrap();
        assert_eq!(r3.changes.len(), 2);
        assert!(dp.list().await.unwrap().is_empty());
    }

    #[test]
    fn no_ipvs_message_names_the_fix() {
        let m = DataplaneError::NoIpvs.to_string();
        assert!(
            m.contains("CONFIG_IP_VS") && m.contains("dataplane: nftables"),
            "{m}"
        );
    }
}
