//! Membership: heartbeat frames, authentication, replay protection and liveness.
//!
//! * [`message`]: heartbeat's ordered field list.
//! * [`auth`]: frame digests (crc, HMAC-MD5, HMAC-SHA1, HMAC-SHA256).
//! * [`wire`]: netstring and classic framing.
//! * [`seqtrack`]: generation and sequence checks that drop replayed and stale frames.
//! * [`pacing`]: when our heartbeat goes out (phase-locked to a pace-setting peer).
//! * [`liveness`]: who is alive over which link: exact deadtime/warntime/initdead deadlines.
//! * [`generation`]: the per-start generation number and node uuid persisted in the state dir.
//!
//! The codec follows shared/wire/HEARTBEAT-WIRE.md byte for byte so hbd can pair with a real
//! heartbeat 3.0.6 node.

pub mod auth;
pub mod generation;
pub mod liveness;
pub mod message;
pub mod pacing;
pub mod seqtrack;
pub mod wire;
