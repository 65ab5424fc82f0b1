//! Control: the local API `hactl` speaks, one JSON request and one JSON response per line
//! over a Unix socket (default /run/hbd/hbd.sock, mode 0600: only root may steer the node).
//!
//! * [`protocol`]: request, response and status types (the JSON contract).
//! * [`server`]: the listening side inside the daemon; it forwards each request to the
//!   node's task and writes back its answer.
//! * [`status`]: the status report rendered from the node's state.
//! * [`client`]: the connecting side used by `hactl`.

pub mod client;
pub mod protocol;
pub mod server;
pub mod status;

/// Where the daemon listens unless told otherwise.
pub const DEFAULT_SOCKET: &str = "/run/hbd/hbd.sock";
