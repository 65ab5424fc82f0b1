//! Deterministic simulation tests on a paused tokio clock.
