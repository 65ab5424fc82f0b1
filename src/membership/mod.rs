//! Membership: heartbeat frames, authentication, replay protection and liveness.
//!
//! * [`message`]: heartbeat's ordered field list.
//! * [`auth`]: frame digests (crc, HMAC-MD5, HMAC-SHA1, HMAC-SHA256).
//! * [`wire`]: netstring and classic framing.
//! * [`reports`]: the `hbd_groups` field: what a node says about each resource group.
//! * [`receive`]: the one entry point for a received frame ([`receive::Membership`]):
//!   every check in order, and a typed outcome.
//! * [`seqtrack`]: generation and sequence checks that drop replayed and stale frames.
//! * [`liveness`]: who is alive over which link: one record per peer (its links, deadlines
//!   and sequence tracking) and exact deadtime/warntime/initdead deadlines.
//! * [`pacing`]: when our heartbeat goes out (phase-locked to a pace-setting peer).
//! * [`classic`]: heartbeat's protocol beyond `status` (node list, acks and retransmission,
//!   the haresources resource protocol), spoken to heartbeat peers.
//! * [`unheard`]: the `hbd_dead` field, and telling from it that the peer does not hear us
//!   (one-way loss seen from the side that still hears).
//! * [`generation`]: the per-start generation number and node uuid persisted in the state dir.
//!
//! The codec follows shared/wire/HEARTBEAT-WIRE.md byte for byte so hbd can pair with a real
//! heartbeat 3.0.6 node.

pub mod auth;
pub mod classic;
pub mod generation;
pub mod liveness;
pub mod message;
pub mod pacing;
pub mod receive;
pub mod reports;
pub mod seqtrack;
pub mod unheard;
pub mod wire;
