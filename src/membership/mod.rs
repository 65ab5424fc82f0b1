//! Membership: heartbeat frames, authentication, replay protection and liveness.
//!
//! * [`message`]: heartbeat's ordered field list.
//!
//! The codec follows shared/wire/HEARTBEAT-WIRE.md byte for byte so hbd can pair with a real
//! heartbeat 3.0.6 node.

pub mod message;
