//! Root end-to-end tests in network namespaces. They fail loudly when not run as root.

// These tests measure real processes in real namespaces: they read the wall clock and
// std's Instant on purpose (hbd::clock is for code that must run on a paused clock).
#![allow(clippy::disallowed_methods)]

mod checks;
mod cli;
mod cluster;
mod conntrackd;
mod control;
mod dataplane;
mod director;
mod failover;
mod faults;
mod fencing;
mod hacf;
mod hostile;
mod ipfail;
mod media;
mod mixed;
mod net;
mod netns;
mod package;
mod reach;
mod respawn;
mod serial;
mod services;
mod shims;
mod vm;
mod vrrp;
mod web;
