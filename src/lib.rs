//! hbd: a cluster resource manager for LVS director pairs, in the line of Linux-HA
//! heartbeat + ldirectord.
//!
//! The library holds all logic; `hbd` (daemon) and `hactl` (CLI) are thin binaries over it.
//! Protocols and decisions are plain data and pure functions; tasks around them own the
//! sockets and timers (see docs/architecture.md). Modules and files form no import circles
//! (a test, `layering`, reads the source tree to keep it so).
//!
//! * [`clock`]: the one place time is read (tokio's clock, pausable in tests).
//! * [`config`]: one validated model from YAML or an unchanged Linux-HA directory, with
//!   its `ldirectord.cf` files.
//! * [`control`]: the JSON control socket `hactl` talks to.
//! * [`daemon`]: the node task and the process around it.
//! * [`manager`]: who holds which resource group: placement, acquisition and release rules.
//! * [`membership`]: heartbeat wire format, authentication, replay protection, liveness.
//! * [`media`]: UDP ucast/mcast/bcast media, serial lines, and an in-memory network for
//!   simulation.
//! * [`net`]: rtnetlink addresses, gratuitous ARP, unsolicited NA, sysctl.
//! * [`reachability`]: ping nodes and ping groups, and ipfail's failover rules built in.
//! * [`resources`]: resource groups, VIPs and scripts.
//! * [`dataplane`]: virtual services through IPVS or nftables.
//! * [`director`]: virtual services and real-server checks from ldirectord.cf or YAML:
//!   rise/fall, quiescent and fallback.
//! * [`vrrp`]: VRRPv2/v3 codec, instance state machine and raw socket (keepalived interop).
//! * [`logging`]: stderr, logfile/debugfile and syslog outputs, swapped at reload.
//! * [`supervise`]: `respawn` programs kept running beside the daemon.
//! * [`watchdog`]: the kernel watchdog petted every keepalive, closed cleanly on stop.
//! * [`fencing`]: resetting a peer that died holding groups (stonith(8) or an agent).
//! * [`spawn`]: starting child programs past a transient "text file busy".
//! * [`telemetry`]: histograms and counters the node, director and dataplane feed.

//! * [`sdnotify`]: readiness, watchdog and stopping notifications to systemd.
//! * [`cl_status`]: heartbeat's `cl_status` answers from the status report.
//! * [`metrics`]: the optional Prometheus endpoint.
//! * [`journal`]: log lines on stderr with journald's priority prefixes.

#![warn(missing_docs)]

pub mod cl_status;
pub mod clock;
pub mod config;
pub mod control;
pub mod daemon;
pub mod dataplane;
pub mod director;
pub mod fencing;
pub mod journal;
pub mod logging;
pub mod manager;
pub mod media;
pub mod membership;
pub mod metrics;
pub mod net;
pub mod reachability;
pub mod resources;
pub mod spawn;
pub mod supervise;
pub mod telemetry;
pub mod vrrp;
pub mod watchdog;

#[cfg(test)]
mod layering;
pub mod sdnotify;
