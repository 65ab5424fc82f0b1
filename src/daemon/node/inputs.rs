//! How a node's inputs arrive: the seam between the one loop and its two input sources.
//!
//! [`Inputs`] is what differs between the daemon ([`super::ThreadInputs`]) and the
//! simulation ([`super::ChannelInputs`]); [`InputSink`] is what they hand inputs to (the
//! node). Keeping both here, below the node and its sources, keeps the files free of
//! import circles.

use std::future::Future;
use std::sync::Arc;

use tokio::time::Instant;

use super::core::OpFinished;
use crate::control::server::ControlCall;
use crate::media::{Inbound, InboundRef};

/// An input from outside the heartbeat sockets, as both sources deliver it.
#[derive(Debug)]
pub enum Mail {
    /// A control request.
    Call(ControlCall),
    /// A group operation finished.
    OpFinished(OpFinished),
    /// A frame from a medium that delivers through mail (a serial line's reader thread).
    Frame(Inbound),
    /// Our reachability count changed (the prober task: ping nodes and ping groups).
    Reach(Option<crate::reachability::Reach>),
    /// Stop: release every group, then end the loop.
    Shutdown,
    /// The fence device finished against `peer` (`Err`: why it failed).
    Fenced {
        /// The peer fenced.
        peer: String,
        /// Success, or the failure in words.
        result: Result<(), String>,
    },
}

/// Where mail for the node goes (finished operations, forwarded control calls, frames of
/// media read by threads of their own).
pub type MailSender = Arc<dyn Fn(Mail) + Send + Sync>;

/// What an input source hands its inputs to: the node.
pub trait InputSink {
    /// A frame received at `at`.
    fn on_frame(&mut self, at: Instant, inbound: InboundRef<'_>);
    /// One piece of mail at `now`.
    fn on_mail(&mut self, now: Instant, mail: Mail);
    /// A read that failed (logged at a limited rate; a read that found nothing is quiet).
    fn receive_failed(&mut self, e: &std::io::Error);
}

/// How a node's inputs arrive: the one part of the loop that differs between the daemon
/// and the simulation.
pub trait Inputs {
    /// Applies frames that arrived before now but wait unread (answers the daemon reads
    /// lazily), each at its arrival time: called before a liveness deadline is decided.
    fn read_waiting<S: InputSink>(&mut self, node: &mut S);

    /// Waits until `wake` or until inputs arrive, and applies them to `node`. `false` when
    /// the inputs are gone for good (the loop then ends).
    fn wait<S: InputSink>(&mut self, node: &mut S, wake: Instant) -> impl Future<Output = bool>;
}
