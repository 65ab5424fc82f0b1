//! The control protocol's JSON types.
//!
//! A request is one line of JSON such as `{"command":"status"}`; the answer is one line,
//! `{"ok":true,"status":{...}}` or `{"ok":false,"error":"..."}`. Field names are a public
//! contract (scripts parse `hactl status --json`): add fields, never rename them.

use serde::{Deserialize, Serialize};

pub use crate::manager::GroupClass;

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
    pub checks: Option<Vec<crate::director::runtime::RealReport>>,
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
    pub groups: Vec<GroupReport>,
    /// Takeover/standby requests waiting for the pair to be stable, oldest first.
    #[serde(default)]
    pub queued: Vec<String>,
    /// Why the pair is not stable ("" when it is).
    #[serde(default)]
    pub unstable: String,
    /// Frames dropped and why, since start.
    pub counters: Counters,
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
pub struct GroupReport {
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

/// Frames received and dropped, by reason.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// Frames accepted.
    pub accepted: u64,
    /// Copies of a frame already accepted (several media).
    pub duplicates: u64,
    /// Frames whose digest or key index did not verify.
    pub bad_auth: u64,
    /// Frames that do not parse or lack required fields.
    pub malformed: u64,
    /// Frames larger than the wire limit.
    pub oversize: u64,
    /// Frames from an older generation or an old sequence number (replays, stale copies).
    pub replayed: u64,
    /// Frames naming a node that is not in the cluster.
    pub unknown_node: u64,
    /// Frames we could not send.
    pub send_errors: u64,
}
