//! heartbeat's own protocol beyond `status`, spoken to heartbeat 3.0.6 peers.
//!
//! A real heartbeat node needs more than heartbeats to be one cluster with hbd
//! (HEARTBEAT-WIRE.md §6–§7, shared/reference/features.md §2.5–2.7):
//!
//! * [`message`]: the classic messages as typed data, read from and written to heartbeat's
//!   field lists: the node-list exchange (`reqnodes`/`repnodes`) that brings heartbeat's
//!   communication up, reliable delivery (`NS_ackmsg`, `NS_rexmit`, `NS_nak_rexmit`) and the
//!   haresources resource protocol (`starting`, `resource`, `ask_resources`, `hb_takeover`,
//!   `ip-request`/`ip-request-resp`, `shutdone`).
//! * [`delivery`]: the sender's history of sequenced frames (answers to `NS_rexmit` with the
//!   original bytes, original `ts` included), when to acknowledge, and the retransmission
//!   requests for gaps, as plain data with pure functions.
//! * [`resources`]: what the heartbeat peer holds (its `rsc_hold`), in the words of hbd's
//!   groups, and the standby handshake's phase.
//!
//! hbd speaks this protocol only to a peer whose heartbeats carry no `hbd_groups` field (a
//! heartbeat node): hbd pairs keep exchanging their group reports and nothing else, so they
//! keep their speed. The decisions stay in the node core (`daemon::node::core`).

pub mod delivery;
pub mod message;
pub mod resources;
pub mod state;
