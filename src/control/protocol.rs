//! The control protocol's JSON types.
//!
//! A request is one line of JSON such as `{"command":"status"}`; the answer is one line,
//! `{"ok":true,"status":{...}}` or `{"ok":false,"error":"..."}`. Field names are a public
//! contract (scripts parse `hactl status --json`): add fields, never rename them.

use serde::{Deserialize, Serialize};

pub use crate::manager::GroupClass;
/// Frames received and dropped, by reason (the `counters` of `hactl status`).
pub use crate::membership::receive::FrameCounters as Counters;

/// A request from `hactl`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum Request {
    /// Report membership and group state.
    Status,
    /// Move groups to this node (heartbeat `hb_takeover`).
    Takeover {
        /// Which groups, relative to this node.
        class: GroupClass,
    },
    /// Move groups to the other node (heartbeat `hb_standby`).
    Standby {
        /// Which groups, relative to this node.
        class: GroupClass,
    },
    /// Re-read the configuration and apply what can change without a restart.
    Reload,
    /// Report every real server of the directors running here.
    Checks,
    /// VRRP: drop a `takeover` / `standby` override; instances act with their configured
    /// and tracked priority again.
    Auto,
}

impl Request {
    /// The request as the socket carries it: one JSON line, newline included.
    pub fn to_line(&self) -> Result<Vec<u8>, serde_json::Error> {
        let mut line = serde_json::to_vec(self)?;
        line.push(b'\n');
        Ok(line)
    }
}

/// The daemon's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    /// Whether the request was carried out.
    pub ok: bool,
    /// Why not, when `ok` is false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The status report, for `status`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<StatusReport>,
    /// What was done, for commands.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Real servers, for `checks`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checks: Option<Vec<crate::director::report::RealReport>>,
    /// VRRP instances, for `status` when VRRP is the membership backend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vrrp: Option<Vec<VrrpInstanceReport>>,
}

impl Response {
    /// A refusal with a reason.
    pub fn refused(error: impl Into<String>) -> Response {
        Response {
            ok: false,
            error: Some(error.into()),
            status: None,
            message: None,
            checks: None,
            vrrp: None,
        }
    }

    /// A command carried out, with what was done.
    pub fn done(message: impl Into<String>) -> Response {
        Response {
            ok: true,
            error: None,
            status: None,
            message: Some(message.into()),
            checks: None,
            vrrp: None,
        }
    }
}

/// Everything `hactl status` shows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusReport {
    /// This node's name.
    pub node: String,
    /// This node's advertised state (`up` or `active`).
    pub state: String,
    /// This node's generation (incremented each start).
    pub generation: u64,
    /// Cluster members, this node first.
    pub nodes: Vec<NodeReport>,
    /// Resource groups from haresources, in file order.
    pub groups: Vec<GroupStatus>,
    /// Takeover/standby requests waiting for the pair to be stable, oldest first.
    #[serde(default)]
    pub queued: Vec<String>,
    /// Why the pair is not stable ("" when it is).
    #[serde(default)]
    pub unstable: String,
    /// Frames dropped and why, since start.
    pub counters: Counters,
    /// Ping nodes and ping groups, both nodes' counts and the ipfail decision; absent
    /// without targets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reachability: Option<crate::reachability::ReachabilityReport>,
    /// Fencing of the peer in words (running, done, failed); absent when there is none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fencing: Option<String>,
    /// What an operator must know now: a peer's frames dropped for an old generation, our
    /// own generation found stale. Absent when there is nothing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub alarms: Vec<String>,
    /// Every medium this node sends on, in link order, serial lines with their device
    /// state; empty from a daemon that predates it.
    #[serde(default)]
    pub media: Vec<MediumReport>,
}

/// One medium of this node: what `hactl status` shows under "Media".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediumReport {
    /// Link name, as in [`LinkReport::name`] (`ucast:eth0:192.0.2.12`, `serial:/dev/ttyS0`).
    pub name: String,
    /// Where its frames go (`sending to 192.0.2.12:694`, `/dev/ttyS0 at 19200 baud`).
    pub describe: String,
    /// A serial line's device: open, or retrying with the last error, and its counters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<crate::media::serial::SerialLinkStatus>,
}

/// One cluster member.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeReport {
    /// Node name.
    pub name: String,
    /// `up`, `dead` or `init`.
    pub status: String,
    /// heartbeat's finer state: `init`, `up`, `active` or `dead`.
    pub state: String,
    /// Whether this is the node answering.
    pub local: bool,
    /// Milliseconds since its last heartbeat, when heard.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_heard_ms: Option<u64>,
    /// Deadtime applied to it, in milliseconds.
    pub deadtime_ms: u64,
    /// Late heartbeats (warntime exceeded) since start.
    pub late_heartbeats: u64,
    /// Longest gap between two heartbeats, in milliseconds.
    pub longest_gap_ms: u64,
    /// One entry per medium.
    pub links: Vec<LinkReport>,
}

/// One link (node × medium).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkReport {
    /// Link name, e.g. `ucast:eth0:192.0.2.12`.
    pub name: String,
    /// `up`, `dead` or `init`.
    pub status: String,
}

/// One resource group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupStatus {
    /// Group key (its first resource, as in haresources).
    pub name: String,
    /// Preferred node.
    pub preferred: String,
    /// Node holding it, if any.
    pub owner: Option<String>,
    /// Here: `stopped`, `starting`, `running`, `stopping`, `failed` or `stop_failed`.
    pub state: String,
    /// Node the group should run on (its placement).
    #[serde(default)]
    pub target: String,
    /// Placement decision counter.
    #[serde(default)]
    pub epoch: u64,
    /// Resources in start order.
    pub resources: Vec<ResourceReport>,
}

/// One resource of a group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceReport {
    /// The resource as written.
    pub spec: String,
    /// `stopped`, `running` or `failed`.
    pub state: String,
}

/// One VRRP instance (`hactl status` with VRRP as the membership backend).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VrrpInstanceReport {
    /// `vrrp_instance` name.
    pub name: String,
    /// Interface.
    pub interface: String,
    /// Virtual router id.
    pub vrid: u8,
    /// `INIT`, `BACKUP`, `MASTER` or `FAULT`.
    pub state: String,
    /// Configured priority.
    pub base_priority: u8,
    /// Priority advertised now (tracking and `takeover`/`standby` applied).
    pub effective_priority: u8,
    /// The master's address (ours while MASTER), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub master: Option<String>,
    /// The master's priority, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub master_priority: Option<u8>,
    /// Why this instance is or is not preempting, in words.
    pub preempt: String,
    /// `auto`, `takeover` (priority 254) or `standby` (priority 1).
    pub operator: String,
    /// Tracked items that are down.
    #[serde(default)]
    pub down: Vec<String>,
    /// The resource group it drives (its first resource).
    pub group: String,
    /// Adverts sent.
    pub sent: u64,
    /// Adverts accepted.
    pub received: u64,
    /// Packets dropped.
    pub dropped: u64,
}
