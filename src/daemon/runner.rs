//! Group runners: how the node task starts, stops and announces resource groups.
//!
//! The node task decides (through [`crate::manager`]); a [`GroupRunner`] carries the decision
//! out and reports back. The daemon uses [`ResourceRunner`] (VIPs through rtnetlink, scripts,
//! OCF agents); simulation tests use a fake that records a trace.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::config::GroupSpec;
use crate::director::DirectorConfig;
use crate::director::runtime::RealReport;
use crate::resources::group::{self, GroupPolicy};
use crate::resources::{self, ResolveContext, Resource, ResourceStatus};

/// A boxed operation; `Err` says why, and whether something may still run here.
pub type OpFuture = Pin<Box<dyn Future<Output = Result<(), OpError>> + Send>>;

/// Why a group operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct OpError {
    /// The reason in words.
    pub reason: String,
    /// Whether resources of the group may still run here (a stop, or a failed start's
    /// rollback, got stuck): the group must then be held failed and never started on the
    /// peer.
    pub held: bool,
}

impl OpError {
    /// A failure after which nothing of the group runs here.
    pub fn clean(reason: impl Into<String>) -> OpError {
        OpError {
            reason: reason.into(),
            held: false,
        }
    }

    /// A failure after which resources of the group may still run here.
    pub fn held(reason: impl Into<String>) -> OpError {
        OpError {
            reason: reason.into(),
            held: true,
        }
    }
}

impl From<group::GroupError> for OpError {
    fn from(e: group::GroupError) -> OpError {
        OpError {
            held: e.holds_group_failed(),
            reason: e.to_string(),
        }
    }
}

/// Outcomes of reloading every running director, one line each.
pub type ReloadFuture = Pin<Box<dyn Future<Output = Vec<Result<String, String>>> + Send>>;

/// Starts, stops, announces and probes groups by index into the config's groups.
pub trait GroupRunner: Send + Sync {
    /// Starts the group left to right (an `Err` means it was rolled back, or, when
    /// [`OpError::held`] is set, could not be).
    fn start(&self, group: usize) -> OpFuture;
    /// Stops the group right to left; an `Err` means resources may still run here.
    fn stop(&self, group: usize) -> OpFuture;
    /// Re-announces the group's addresses (gratuitous ARP / unsolicited NA).
    fn announce(&self, group: usize) -> OpFuture;
    /// Whether any resource of the group runs here already (left behind by an earlier run).
    fn probe(&self, group: usize) -> Pin<Box<dyn Future<Output = bool> + Send>>;

    /// Real-server states of every director running here (`hactl checks`).
    fn director_reports(&self) -> Pin<Box<dyn Future<Output = Vec<RealReport>> + Send>> {
        Box::pin(async { Vec::new() })
    }

    /// Re-reads the configuration of every director running here; one line per director.
    /// `inline` is the reloaded YAML `director:` section, for directors that use it.
    fn reload_directors(&self, inline: Option<DirectorConfig>) -> ReloadFuture {
        let _ = inline;
        Box::pin(async { Vec::new() })
    }
}

/// The real runner over [`crate::resources`].
pub struct ResourceRunner {
    groups: Vec<Result<Arc<Vec<Resource>>, String>>,
    policy: GroupPolicy,
}

impl ResourceRunner {
    /// Resolves every group's resources. A group with an entry that cannot be resolved (a
    /// missing script, a bad address) is kept as an error: starting it fails with the reason.
    pub fn new(groups: &[GroupSpec], ctx: &ResolveContext, policy: GroupPolicy) -> ResourceRunner {
        let groups = groups
            .iter()
            .map(|g| {
                let mut ctx = ctx.clone();
                ctx.group_vips = g
                    .resources
                    .iter()
                    .filter(|r| resources::BUILTIN_VIP_TYPES.contains(&r.kind.as_str()))
                    .filter_map(|r| r.args.first())
                    .filter_map(|a| resources::ipaddr::parse_vip(a).ok())
                    .map(|v| v.ip)
                    .collect();
                g.resources
                    .iter()
                    .map(|r| resources::resolve(r, &ctx))
                    .collect::<Result<Vec<_>, _>>()
                    .map(Arc::new)
                    .map_err(|e| e.to_string())
            })
            .collect();
        ResourceRunner { groups, policy }
    }

    /// Groups that cannot run, with the reason (logged at start).
    pub fn unresolved(&self) -> impl Iterator<Item = (usize, &str)> {
        self.groups
            .iter()
            .enumerate()
            .filter_map(|(i, g)| g.as_ref().err().map(|e| (i, e.as_str())))
    }

    fn resolved(&self) -> Vec<Arc<Vec<Resource>>> {
        self.groups
            .iter()
            .filter_map(|g| g.as_ref().ok().cloned())
            .collect()
    }

    fn members(&self, group: usize) -> Result<Arc<Vec<Resource>>, String> {
        match self.groups.get(group) {
            Some(Ok(m)) => Ok(m.clone()),
            Some(Err(e)) => Err(e.clone()),
            None => Err(format!("no group {group}")),
        }
    }
}

impl GroupRunner for ResourceRunner {
    fn start(&self, group: usize) -> OpFuture {
        let members = self.members(group);
        let policy = self.policy;
        Box::pin(async move {
            let members = members.map_err(OpError::clean)?;
            group::start_group(&members, policy)
                .await
                .map_err(OpError::from)
        })
    }

    fn stop(&self, group: usize) -> OpFuture {
        // A group that never resolved never started: nothing to stop.
        let Ok(members) = self.members(group) else {
            return Box::pin(async { Ok(()) });
        };
        let policy = self.policy;
        Box::pin(async move {
            group::stop_group(&members, policy)
                .await
                .map_err(OpError::from)
        })
    }

    fn announce(&self, group: usize) -> OpFuture {
        let members = self.members(group);
        Box::pin(async move {
            for m in members.map_err(OpError::clean)?.iter() {
                if let Resource::Vip(vip) = m {
                    vip.reannounce()
                        .await
                        .map_err(|e| OpError::clean(e.to_string()))?;
                }
            }
            Ok(())
        })
    }

    fn director_reports(&self) -> Pin<Box<dyn Future<Output = Vec<RealReport>> + Send>> {
        let groups = self.resolved();
        Box::pin(async move {
            let mut out = Vec::new();
            for members in groups {
                for m in members.iter() {
                    if let Resource::Director(d) = m
                        && let Some(r) = d.report().await
                    {
                        out.extend(r);
                    }
                }
            }
            out
        })
    }

    fn reload_directors(&self, inline: Option<DirectorConfig>) -> ReloadFuture {
        let groups = self.resolved();
        Box::pin(async move {
            let mut out = Vec::new();
            for members in groups {
                for m in members.iter() {
                    let Resource::Director(d) = m else {
                        continue;
                    };
                    if let Some(config) = &inline {
                        d.set_inline(config.clone());
                    }
                    if d.is_running().await {
                        out.push(d.reload().await);
                    }
                }
            }
            out
        })
    }

    fn probe(&self, group: usize) -> Pin<Box<dyn Future<Output = bool> + Send>> {
        let members = self.members(group);
        Box::pin(async move {
            let Ok(members) = members else {
                return false;
            };
            group::status_group(&members)
                .await
                .iter()
                .any(|(_, s)| *s == ResourceStatus::Running)
        })
    }
}
