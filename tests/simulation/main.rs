//! Deterministic simulation tests on a paused tokio clock: several real node tasks in one
//! runtime over the in-memory network, with cuts, taps, forgeries and replays.

// The simulation reads tokio's clock directly (paused: no wall time is involved); the ban
// in clippy.toml is for library code, which goes through hbd::clock.
#![allow(clippy::disallowed_methods)]

mod cluster;
mod harness;
mod ownership;
mod properties;
