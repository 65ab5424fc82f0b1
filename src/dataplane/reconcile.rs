//! What every dataplane backend offers ([`Dataplane`]: list and apply), how a reconcile is
//! built on those two (list, diff against the desired services, apply the difference), and
//! why a backend fails ([`DataplaneError`]). The backends (`ipvs`, `nft`, `memory`) implement
//! it; `dataplane/mod.rs` chooses one.

use std::collections::HashSet;
use std::future::Future;

use super::diff::{ApplyError, Change, diff};
use super::model::{ServiceKey, VirtualService};
use super::netlink;

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
    /// A kernel exchange running off the async runtime never reported back: its thread
    /// was shut down with the runtime.
    #[error("{backend}: the kernel exchange was abandoned (the daemon is shutting down)")]
    Abandoned {
        /// Which backend was talking.
        backend: &'static str,
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
