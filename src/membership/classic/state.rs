//! The classic protocol's state in a node, as plain data: which peers are heartbeat nodes,
//! our sent-frame history, the retransmission requests and each peer's resources. The node
//! core (`daemon::node::core`) makes the decisions over it.

use tokio::time::Instant;

use crate::membership::classic::delivery::{RexmitRequests, SentHistory};
use crate::membership::classic::message::RscHold;
use crate::membership::classic::resources::PeerResources;

/// The classic protocol's state in the node core.
#[derive(Debug, Default)]
pub struct ClassicState {
    /// Per peer (index into the membership's peers).
    pub peers: Vec<ClassicPeer>,
    /// Our sequenced frames, kept once any peer is a heartbeat node.
    pub history: SentHistory,
    /// Our `(rsc_hold, isstable)` as last sent, to send a `resource` message on change.
    pub said: Option<(RscHold, bool)>,
    /// A `starting` asks for our `resource` message even if nothing changed.
    pub asked: bool,
    /// We stop: our `resource info=shutdown` was sent, `shutdone` follows.
    pub stopping: bool,
    /// A heartbeat peer was found: send `starting`, so it tells us what it holds now (what
    /// it said before may be overtaken by a takeover in progress there).
    pub start_asked: bool,
    /// `auto_failback legacy`: ask the heartbeat peer for our own groups (`ip-request`).
    pub legacy_requests: bool,
}

/// What we know of one peer's classic protocol.
#[derive(Debug, Default)]
pub struct ClassicPeer {
    /// Whether it is a heartbeat node.
    pub classic: bool,
    /// Its frames we miss and ask for.
    pub requests: RexmitRequests,
    /// What it holds and the standby handshake with it.
    pub resources: PeerResources,
    /// `auto_failback legacy`: our `ip-request`s for our own groups went out (once it is
    /// active, as heartbeat's `req_our_resources` asks at communication up).
    pub legacy_asked: bool,
}

impl ClassicState {
    /// State for `peers` peers.
    pub fn new(peers: usize) -> ClassicState {
        ClassicState {
            peers: (0..peers).map(|_| ClassicPeer::default()).collect(),
            ..ClassicState::default()
        }
    }

    /// Whether any peer is a heartbeat node.
    pub fn any(&self) -> bool {
        self.peers.iter().any(|p| p.classic)
    }

    /// The earliest retransmission request due.
    pub fn next_due(&self) -> Option<Instant> {
        self.peers
            .iter()
            .filter_map(|p| p.requests.next_due())
            .min()
    }

    /// Remembers a sequenced frame we sent, while a heartbeat peer may ask for it again.
    pub fn record(&mut self, seq: u64, frame: &[u8]) {
        if self.any() {
            self.history.record(seq, frame);
        }
    }
}
