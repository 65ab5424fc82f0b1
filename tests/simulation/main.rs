//! Deterministic simulation tests on a paused tokio clock: several real node tasks in one
//! runtime over the in-memory network, with cuts, taps, forgeries and replays.

mod cluster;
mod harness;
mod ownership;
