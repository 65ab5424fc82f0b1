//! Dataplane: desired virtual services vs what the kernel has, applied through IPVS or
//! nftables.
//!
//! * [`model`]: `VirtualService`, `RealServer`, schedulers, forwarding, persistence.
//! * [`diff`]: pure desired-vs-actual comparison into ordered [`Change`]s.
//! * [`ipvs`]: IPVS over generic netlink (the classic LVS dataplane).
//! * [`nft`]: nftables DNAT load balancing over native netlink, for kernels without IPVS.
//! * [`format`]: `ipvsadm -Ln` and `ipvsadm-save` text for `hactl`.
//!
//! A backend is chosen at start-up ([`DataplaneBackend`]); every reconcile lists what the
//! kernel actually has, diffs it with the desired state and applies only the difference
//! (features §4 item 7), so reloads are hitless and hand-made drift is repaired.

pub mod diff;
pub mod format;
pub mod ipvs;
pub mod model;
pub mod netlink;
pub mod nft;

use std::collections::HashSet;
use std::future::Future;

pub use diff::{ApplyError, Change, ServiceParams, apply_changes, diff};
pub use model::{
    Family, Forwarding, Netmask, Persistence, RealServer, Scheduler, ServiceKey, VirtualService,
};

/// Why a dataplane operation failed.
#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    /// The generic netlink family "IPVS" does not resolve.
    #[error(
        "the kernel has no IPVS (CONFIG_IP_VS / module ip_vs not loaded); use the nftables dataplane (dataplane: nftables)"
    )]
    NoIpvs,
    /// A netlink exchange failed.
    #[error("{backend}: {source}")]
    Netlink {
        /// Which backend was talking.
        backend: &'static str,
        /// The underlying failure.
        source: netlink::NetlinkError,
    },
    /// The backend cannot express part of a service.
    #[error("{backend} cannot program {service}: {why}")]
    Unsupported {
        /// Which backend refused.
        backend: &'static str,
        /// The service concerned.
        service: ServiceKey,
        /// What it cannot do and what to use instead.
        why: String,
    },
    /// A change does not fit the current state (e.g. deleting a real that is not there).
    #[error("{0}")]
    Apply(#[from] ApplyError),
}

/// What a reconcile did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReconcileReport {
    /// The changes applied, in order (empty when the kernel already matched).
    pub changes: Vec<Change>,
}

/// A place virtual services live: the kernel through IPVS or nftables, or memory.
pub trait Dataplane {
    /// What is programmed now (only what this dataplane can see as services).
    fn list(&mut self) -> impl Future<Output = Result<Vec<VirtualService>, DataplaneError>> + Send;

    /// Apply changes in order (atomically where the backend can: nftables does).
    fn apply(
        &mut self,
        changes: &[Change],
    ) -> impl Future<Output = Result<(), DataplaneError>> + Send;

    /// List, diff against `desired`, apply the difference. Services not desired are only
    /// removed when their key is in `owned`.
    fn reconcile(
        &mut self,
        desired: &[VirtualService],
        owned: &HashSet<ServiceKey>,
    ) -> impl Future<Output = Result<ReconcileReport, DataplaneError>> + Send
    where
        Self: Send,
    {
        async move {
            let actual = self.list().await?;
            self.reconcile_with(&actual, desired, owned).await
        }
    }

    /// [`Dataplane::reconcile`] against services the caller has just listed (saves listing
    /// the kernel twice when it already needed the list).
    fn reconcile_with(
        &mut self,
        actual: &[VirtualService],
        desired: &[VirtualService],
        owned: &HashSet<ServiceKey>,
    ) -> impl Future<Output = Result<ReconcileReport, DataplaneError>> + Send
    where
        Self: Send,
    {
        let changes = diff(desired, actual, owned);
        async move {
            if !changes.is_empty() {
                self.apply(&changes).await?;
            }
            Ok(ReconcileReport { changes })
        }
    }
}

/// An in-memory dataplane that records every change: for simulation and tests.
#[derive(Debug, Clone, Default)]
pub struct MemoryDataplane {
    /// The current services.
    pub services: Vec<VirtualService>,
    /// Every change ever applied, in order.
    pub log: Vec<Change>,
}

impl Dataplane for MemoryDataplane {
    async fn list(&mut self) -> Result<Vec<VirtualService>, DataplaneError> {
        Ok(self.services.clone())
    }

    async fn apply(&mut self, changes: &[Change]) -> Result<(), DataplaneError> {
        let mut next = self.services.clone();
        apply_changes(&mut next, changes)?;
        self.services = next;
        self.log.extend_from_slice(changes);
        Ok(())
    }
}

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

impl Dataplane for DataplaneBackend {
    async fn list(&mut self) -> Result<Vec<VirtualService>, DataplaneError> {
        match self {
            DataplaneBackend::Ipvs(d) => d.list().await,
            DataplaneBackend::Nft(d) => d.list().await,
            DataplaneBackend::Memory(d) => d.list().await,
        }
    }

    async fn apply(&mut self, changes: &[Change]) -> Result<(), DataplaneError> {
        match self {
            DataplaneBackend::Ipvs(d) => d.apply(changes).await,
            DataplaneBackend::Nft(d) => d.apply(changes).await,
            DataplaneBackend::Memory(d) => d.apply(changes).await,
        }
    }
}

#[cfg(test)]
mod tests {
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
