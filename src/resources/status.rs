//! What a resource's status check says, whatever its class: the one answer the group runner
//! and the scripts' exit-code contracts (heartbeat, LSB, OCF) share.

/// What a resource's status check says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResourceStatus {
    /// Active on this node.
    Running,
    /// Not active on this node.
    Stopped,
    /// The check gave an answer outside its contract; treated as possibly running.
    Unknown(String),
}
