//! VRRP: the alternative membership backend, interoperable with keepalived (issue 13).
//!
//! * [`packet`]: the VRRPv2 (RFC 3768) / VRRPv3 (RFC 5798) advertisement codec and the
//!   receive checks, with typed drop reasons.
//! * [`state`]: one virtual router instance (INIT, BACKUP, MASTER, FAULT), sync groups and
//!   tracked scripts/interfaces, as plain data with pure transitions.
//! * [`socket`]: the I/O edge: a raw IP protocol 112 socket on one interface.
//! * [`task`]: one instance's task: socket + timer + state machine, emitting
//!   [`task::InstanceEvent`]s (hold / release the group, announce, notify).
//! * [`backend`]: VRRP as a membership backend: instance states hold and release resource
//!   groups; tracked scripts and interfaces; notify scripts.
//! * [`config`]: the validated model ([`config::VrrpConfig`]) keepalived.conf and the YAML
//!   `vrrp:` section produce.
//!
//! keepalived.conf is read by [`crate::config::keepalived`] into a [`state::VrrpConfig`].

pub mod backend;
pub mod config;
pub mod packet;
pub mod socket;
pub mod state;
pub mod task;
