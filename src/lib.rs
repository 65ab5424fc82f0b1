//! hbd: a cluster resource manager for LVS director pairs, in the line of Linux-HA
//! heartbeat + ldirectord.
//!
//! The library holds all logic; `hbd` (daemon) and `hactl` (CLI) are thin binaries over it.
//! Protocols and decisions are plain data and pure functions; tasks around them own the
//! sockets and timers (see docs/architecture.md).
//!
//! * [`config`]: one validated model from YAML or an unchanged Linux-HA directory.
//! * [`control`]: the JSON control socket `hactl` talks to.
//! * [`daemon`]: the node task and the process around it.
//! * [`manager`]: who holds which resource group: placement, acquisition and release rules.
//! * [`membership`]: heartbeat wire format, authentication, replay protection, liveness.
//! * [`media`]: UDP ucast/mcast/bcast media and an in-memory network for simulation.
//! * [`net`]: rtnetlink addresses, gratuitous ARP, unsolicited NA, sysctl.
//! * [`resources`]: resource groups, VIPs and scripts.
//! * [`director`]: real-server health checks, rise/fall, quiescent and fallback.
//! * [`dataplane`]: virtual services through IPVS or nftables.
//! * [`director`]: virtual services and real-server checks from ldirectord.cf or YAML.

#![warn(missing_docs)]

pub mod config;
pub mod control;
pub mod daemon;
pub mod dataplane;
pub mod director;
pub mod manager;
pub mod media;
pub mod membership;
pub mod net;
pub mod resources;
