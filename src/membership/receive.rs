//! Receiving a frame: one entry point from the bytes a medium delivered to a typed outcome.
//!
//! [`Membership::receive`] runs every check heartbeat's `process_clustermsg` runs
//! (HEARTBEAT-WIRE.md §7), in order: size, framing and digest ([`wire::decode_view`]),
//! envelope ([`wire::read_envelope`]), our own looped-back frames, cluster membership of the
//! sender, generation and sequence ([`SeqTrack`], kept in the peer's record), and liveness.
//! It returns a [`FrameOutcome`]: why a frame was dropped, or which peer it came from, the
//! liveness events it caused and, for a new `status`, the fields the node acts on. Counters
//! of every outcome live here too. Nothing here does I/O or reads a clock.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::config::Timing;
use crate::membership::liveness::{Liveness, LivenessEvent, LocalState, Peer, PeerState};
use crate::membership::seqtrack::{SeqTrack, SeqVerdict};
use crate::membership::wire::{self, FrameKeys, MessageView, WireError};

/// Frames received and dropped, by reason (`hactl status` shows them).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FrameCounters {
    /// Frames accepted.
    pub accepted: u64,
    /// Copies of a frame already accepted (several media).
    pub duplicates: u64,
    /// Frames whose digest or key index did not verify.
    pub bad_auth: u64,
    /// Frames that do not parse or lack required fields.
    pub malformed: u64,
    /// Frames larger than the wire limit.
    pub oversize: u64,
    /// Frames from an older generation or an old sequence number (replays, stale copies).
    pub replayed: u64,
    /// Frames naming a node that is not in the cluster.
    pub unknown_node: u64,
    /// Frames we could not send.
    pub send_errors: u64,
}

/// Why a received frame was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DropReason {
    /// Larger than [`wire::MAX_FRAME_LEN`].
    Oversize,
    /// Wrong digest or unknown key index.
    BadAuth,
    /// Does not parse, lacks a required field, or carries a bad field the node reads.
    Malformed,
    /// The sender is not a cluster node.
    UnknownNode,
    /// An older generation than the sender's known one.
    Replay,
    /// An old sequence number, or a status not newer than the last from a dead peer.
    Stale,
}

impl DropReason {
    /// The words logs and observers use.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::Oversize => "oversize",
            DropReason::BadAuth => "authentication failed",
            DropReason::Malformed => "malformed",
            DropReason::UnknownNode => "unknown node",
            DropReason::Replay => "replay",
            DropReason::Stale => "stale",
        }
    }
}

/// A dropped frame: why, and the detail a log line shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dropped {
    /// Why.
    pub reason: DropReason,
    /// What exactly, e.g. "node 'x' is not in the cluster".
    pub detail: String,
}

/// What became of one received frame.
#[derive(Debug)]
pub enum FrameOutcome<'f> {
    /// Our own frame, looped back by multicast: ignored without a word.
    Own,
    /// Dropped and counted.
    Dropped(Dropped),
    /// Accepted from a peer.
    Accepted(Accepted<'f>),
}

/// An accepted frame.
#[derive(Debug)]
pub struct Accepted<'f> {
    /// Index of the sender among the peers ([`Liveness::peers`]).
    pub peer: usize,
    /// Liveness changes it caused, for the node to act on and log.
    pub events: Vec<LivenessEvent>,
    /// The sender restarted: it carries a higher generation than the one known.
    pub restarted: Option<Restarted>,
    /// The sender's generation rose (first frame, or a restart): persist it so replays of
    /// older generations are dropped across our restarts too.
    pub new_generation: Option<u64>,
    /// A new `status` (not a copy already seen on another medium).
    pub status: Option<StatusFields<'f>>,
    /// The seq and verdict of a processed sequenced frame, for heartbeat's acknowledgements
    /// and retransmission requests (`None` for `NS_*` messages and copies).
    pub sequenced: Option<(u64, SeqVerdict)>,
    /// The message of an accepted frame other than a `status` (an `NS_*` message, one of
    /// heartbeat's resource messages), for [`crate::membership::classic`]; `None` for
    /// `status` and for copies.
    pub message: Option<MessageView<'f>>,
}

impl Accepted<'_> {
    /// The fields of an accepted frame that proves its link, to fill in with more.
    fn accepted_link(peer: usize, events: Vec<LivenessEvent>) -> Accepted<'static> {
        Accepted {
            peer,
            events,
            restarted: None,
            new_generation: None,
            status: None,
            sequenced: None,
            message: None,
        }
    }

    /// A frame that proves its link and nothing more (an `NS_*` message, a copy of a frame
    /// another link delivered).
    fn link_only(peer: usize, events: Vec<LivenessEvent>) -> FrameOutcome<'static> {
        FrameOutcome::Accepted(Accepted {
            peer,
            events,
            restarted: None,
            new_generation: None,
            status: None,
            sequenced: None,
            message: None,
        })
    }
}

/// A peer restart, seen through its generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Restarted {
    /// The generation known before.
    pub previous: u64,
    /// The new one.
    pub generation: u64,
}

/// The fields of an accepted `status` the node acts on.
#[derive(Debug)]
pub struct StatusFields<'f> {
    /// Whether it came in order: a late (reordered) status is old news and must not set our
    /// heartbeat pace.
    pub fresh: bool,
    message: MessageView<'f>,
}

impl StatusFields<'_> {
    /// A field of the status as text, e.g. [`crate::membership::reports::GROUPS_FIELD`].
    pub fn field(&self, name: &str) -> Option<&str> {
        self.message.get_str(name)
    }
}

/// The membership of one node: who is alive over which link, each peer's sequence tracking,
/// and the keys frames are checked with.
#[derive(Debug)]
pub struct Membership {
    own_name: String,
    liveness: Liveness,
    keys: FrameKeys,
    counters: FrameCounters,
    /// Per peer: the generation its frames carry while they are dropped as older than the
    /// one known ([`StaleGeneration`]), until one of its frames is accepted again.
    stale: Vec<Option<StaleGeneration>>,
}

/// A peer whose frames carry an older generation than the one known for it: a replay, or
/// the peer's state directory restored from a backup (issue #15, defect 5). Our heartbeats
/// tell it ([`STALE_GENERATION_FIELD`]) so it can move past the known one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StaleGeneration {
    /// The generation its frames carry.
    pub received: u64,
    /// The generation known for it (persisted or seen).
    pub known: u64,
}

/// Field of our `status` naming each peer whose frames we drop for an old generation and
/// the generation we know for it, `node hex` per peer, `;`-separated; only sent while it
/// happens (heartbeat ignores fields it does not know).
pub const STALE_GENERATION_FIELD: &str = "hbd_stale_gen";

/// Encodes [`STALE_GENERATION_FIELD`] for `(node, known generation)` pairs.
pub fn encode_stale_generations<'a>(stale: impl Iterator<Item = (&'a str, u64)>) -> String {
    stale
        .map(|(node, known)| format!("{node} {known:x}"))
        .collect::<Vec<_>>()
        .join(";")
}

/// The generation `text` ([`STALE_GENERATION_FIELD`]) says is known for `node`, if it names
/// it; `None` for a malformed entry.
pub fn stale_generation_for(text: &str, node: &str) -> Option<u64> {
    text.split(';').find_map(|item| {
        let (name, known) = item.split_once(' ')?;
        (name == node)
            .then(|| wire::parse_hex_u64(known.as_bytes()))
            .flatten()
    })
}

impl Membership {
    /// Membership for `own_name` at `now`: `peers` are the other nodes, each with its
    /// sequence tracking (seeded from a persisted generation or new), over `link_names`.
    pub fn new(
        own_name: &str,
        timing: Timing,
        peers: Vec<(String, SeqTrack)>,
        link_names: &[String],
        keys: FrameKeys,
        now: Instant,
    ) -> Membership {
        let peers_len = peers.len();
        Membership {
            own_name: own_name.to_string(),
            liveness: Liveness::new(timing, peers, link_names, now),
            stale: vec![None; peers_len],
            keys,
            counters: FrameCounters::default(),
        }
    }

    /// Liveness: peers, links and deadlines.
    pub fn liveness(&self) -> &Liveness {
        &self.liveness
    }

    /// The keys frames are checked (and ours signed) with.
    pub fn keys(&self) -> &FrameKeys {
        &self.keys
    }

    /// New keys (a reload): frames are checked with them from now on.
    pub fn set_keys(&mut self, keys: FrameKeys) {
        self.keys = keys;
    }

    /// New timers (a reload).
    pub fn set_timing(&mut self, timing: Timing) {
        self.liveness.set_timing(timing);
    }

    /// Our advertised state.
    pub fn local_state(&self) -> LocalState {
        self.liveness.local_state()
    }

    /// The peers, in config order.
    pub fn peers(&self) -> &[Peer] {
        self.liveness.peers()
    }

    /// Frame counters so far.
    pub fn counters(&self) -> &FrameCounters {
        &self.counters
    }

    /// Per peer (in [`Membership::peers`] order), its frames' stale generation while they
    /// are dropped for it.
    pub fn stale_generations(&self) -> &[Option<StaleGeneration>] {
        &self.stale
    }

    /// Counts a frame we could not send.
    pub fn count_send_error(&mut self) {
        self.counters.send_errors += 1;
    }

    /// Counts a frame accepted by sequence but whose node-level content was malformed.
    pub fn count_malformed(&mut self) {
        self.counters.malformed += 1;
    }

    /// The earliest instant at which [`Membership::on_tick`] has something to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.liveness.next_deadline()
    }

    /// Applies every liveness deadline that has passed at `now`.
    pub fn on_tick(&mut self, now: Instant) -> Vec<LivenessEvent> {
        self.liveness.on_tick(now)
    }

    /// Checks one frame received on `link` at `now`, updates the sender's record and says
    /// what became of it. Never panics on any input.
    pub fn receive<'f>(&mut self, now: Instant, link: usize, frame: &'f [u8]) -> FrameOutcome<'f> {
        match self.classify(now, link, frame) {
            Ok(outcome) => outcome,
            Err(dropped) => {
                let c = &mut self.counters;
                match dropped.reason {
                    DropReason::Oversize => c.oversize += 1,
                    DropReason::BadAuth => c.bad_auth += 1,
                    DropReason::Malformed => c.malformed += 1,
                    DropReason::UnknownNode => c.unknown_node += 1,
                    DropReason::Replay | DropReason::Stale => c.replayed += 1,
                }
                FrameOutcome::Dropped(dropped)
            }
        }
    }

    fn classify<'f>(
        &mut self,
        now: Instant,
        link: usize,
        frame: &'f [u8],
    ) -> Result<FrameOutcome<'f>, Dropped> {
        let drop = |reason, detail: String| Dropped { reason, detail };
        if frame.len() > wire::MAX_FRAME_LEN {
            return Err(drop(DropReason::Oversize, format!("{} bytes", frame.len())));
        }
        let message = wire::decode_view(frame, &self.keys).map_err(|e| match e {
            WireError::BadDigest { .. }
            | WireError::UnknownKeyIndex { .. }
            | WireError::WeakKeyRefused { .. } => drop(DropReason::BadAuth, e.to_string()),
            e => drop(DropReason::Malformed, e.to_string()),
        })?;
        let env = wire::read_envelope(&message)
            .map_err(|e| drop(DropReason::Malformed, e.to_string()))?;
        if env.src == self.own_name {
            return Ok(FrameOutcome::Own);
        }
        let Some(peer) = self.liveness.peer_index(env.src) else {
            return Err(drop(
                DropReason::UnknownNode,
                format!("node '{}' is not in the cluster", env.src),
            ));
        };
        let Some((seq, generation)) = env.sequence() else {
            // NS_* messages sit outside sequencing; they prove the link, never the node.
            self.counters.accepted += 1;
            let events = self.liveness.on_packet(now, peer, link, None);
            return Ok(FrameOutcome::Accepted(Accepted {
                message: Some(message),
                ..Accepted::accepted_link(peer, events)
            }));
        };
        let is_status = env.msg_type == "status";
        let record = self.liveness.peer_mut(peer);
        let peer_dead = record.state == PeerState::Dead;
        let known_generation = record.sequence.generation();
        let verdict = record.sequence.check(generation, seq, is_status, peer_dead);
        let mut restarted = None;
        match verdict {
            SeqVerdict::Replay { known } => {
                self.stale[peer] = Some(StaleGeneration {
                    received: generation,
                    known,
                });
                return Err(drop(
                    DropReason::Replay,
                    format!(
                        "generation {generation:x} from '{}' is older than {known:x}: attempted replay",
                        env.src
                    ),
                ));
            }
            SeqVerdict::Stale => {
                // A copy of a frame a faster link already delivered, arriving on a slower
                // one (a serial line behind UDP) that has not delivered it: it proves this
                // link, nothing more. One this link delivered already (a replay on the same
                // link), or a dead peer's old status, is stale.
                let lagging = !peer_dead
                    && self.liveness.peers()[peer]
                        .links
                        .get(link)
                        .is_some_and(|l| l.last_seq.is_none_or(|last| last < seq));
                if !lagging {
                    return Err(drop(
                        DropReason::Stale,
                        format!("old sequence {seq:x} from '{}'", env.src),
                    ));
                }
                self.counters.duplicates += 1;
                let events = self.liveness.on_packet(now, peer, link, Some(seq));
                return Ok(Accepted::link_only(peer, events));
            }
            SeqVerdict::Duplicate => {
                // The same frame over a second medium: it proves that link, nothing more.
                self.counters.duplicates += 1;
                let events = self.liveness.on_packet(now, peer, link, Some(seq));
                return Ok(Accepted::link_only(peer, events));
            }
            SeqVerdict::Restart { previous } => {
                self.liveness.on_restart(peer);
                restarted = Some(Restarted {
                    previous,
                    generation,
                });
            }
            SeqVerdict::Accept
            | SeqVerdict::Rejoin
            | SeqVerdict::Late
            | SeqVerdict::Gap { .. }
            | SeqVerdict::Resync { .. } => {}
        }
        self.stale[peer] = None;
        // A generation learned from a frame anyone could have signed (crc) is kept in memory
        // only: persisted, a forged one would block the real peer across our restarts.
        let new_generation = (Some(generation) != known_generation && self.keys.authenticates())
            .then_some(generation);
        self.counters.accepted += 1;
        let late = matches!(verdict, SeqVerdict::Late);
        let events = if is_status && !late {
            let st = message.get_str("st").unwrap_or("up");
            let dt = message
                .get("dt")
                .and_then(wire::parse_hex_u64)
                .map(Duration::from_millis);
            self.liveness.on_status(now, peer, link, Some(seq), st, dt)
        } else {
            // A late frame is older than the status liveness already knows: held back on the
            // path, it must not make a node that has since died look alive (issue #15,
            // defect 4). It refreshes at most its link.
            self.liveness.on_packet(now, peer, link, Some(seq))
        };
        let (status, message) = if is_status {
            let status = StatusFields {
                fresh: !late,
                message,
            };
            (Some(status), None)
        } else {
            (None, Some(message))
        };
        Ok(FrameOutcome::Accepted(Accepted {
            peer,
            events,
            restarted,
            new_generation,
            status,
            sequenced: Some((seq, verdict)),
            message,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{AuthKey, AuthKeys, AuthMethod, MsgFormat};
    use crate::membership::message::Message;
    use crate::membership::wire::EnvelopeRef;
    use std::collections::BTreeMap;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn auth(secret: &str) -> AuthKeys {
        let mut keys = BTreeMap::new();
        keys.insert(
            1,
            AuthKey {
                method: AuthMethod::Sha1,
                secret: secret.as_bytes().to_vec(),
            },
        );
        AuthKeys { active: 1, keys }
    }

    fn timing() -> Timing {
        Timing::with_defaults(ms(10), ms(30))
    }

    fn membership(at: Instant) -> Membership {
        Membership::new(
            "a",
            timing(),
            vec![("b".into(), SeqTrack::with_min_generation(5))],
            &["l0".into(), "l1".into()],
            FrameKeys::new(&auth("k")),
            at,
        )
    }

    fn frame(src: &str, t: &str, seq: u64, generation: u64, extra: &[(&str, &str)]) -> Vec<u8> {
        signed(&auth("k"), src, t, seq, generation, extra)
    }

    fn signed(
        keys: &AuthKeys,
        src: &str,
        t: &str,
        seq: u64,
        generation: u64,
        extra: &[(&str, &str)],
    ) -> Vec<u8> {
        let mut msg = Message::new();
        msg.add_str("t", t);
        if t == "status" {
            msg.add_str("st", "active");
        }
        for (n, v) in extra {
            msg.add_str(n, v);
        }
        wire::stamp(
            &mut msg,
            &EnvelopeRef {
                src,
                srcuuid: [1; 16],
                seq: Some(seq),
                generation,
                ts: 1,
                load: None,
                ttl: 3,
                dest_uuid: None,
            },
        );
        wire::encode(&msg, keys, MsgFormat::Classic)
    }

    /// `auth <active>` with a sha256 key 3 and a crc key 2.
    fn mixed_keys(active: u8) -> AuthKeys {
        let mut keys = BTreeMap::new();
        keys.insert(
            3,
            AuthKey {
                method: AuthMethod::Sha256,
                secret: b"k".to_vec(),
            },
        );
        keys.insert(
            2,
            AuthKey {
                method: AuthMethod::Crc,
                secret: Vec::new(),
            },
        );
        AuthKeys { active, keys }
    }

    /// Us ("a") with one peer ("b", no generation seen) on one medium, under `keys`.
    fn mixed_membership(keys: &AuthKeys, at: Instant) -> Membership {
        Membership::new(
            "a",
            timing(),
            vec![("b".into(), SeqTrack::new())],
            &["l0".into()],
            FrameKeys::new(keys),
            at,
        )
    }

    fn only(keys: &AuthKeys, index: u8) -> AuthKeys {
        AuthKeys {
            active: index,
            keys: keys.keys.clone(),
        }
    }

    fn accepted(o: FrameOutcome<'_>) -> Accepted<'_> {
        match o {
            FrameOutcome::Accepted(a) => a,
            other => panic!("not accepted: {other:?}"),
        }
    }

    fn dropped(o: FrameOutcome<'_>) -> DropReason {
        match o {
            FrameOutcome::Dropped(d) => d.reason,
            other => panic!("not dropped: {other:?}"),
        }
    }

    #[test]
    fn a_status_names_its_peer_its_events_and_its_fields() {
        let t0 = crate::clock::now();
        let mut m = membership(t0);
        let f = frame("b", "status", 1, 7, &[("hbd_groups", "g|1|0|b|0")]);
        let a = accepted(m.receive(t0, 0, &f));
        assert_eq!(a.peer, 0);
        assert_eq!(a.new_generation, Some(7));
        assert_eq!(
            a.restarted,
            Some(Restarted {
                previous: 5,
                generation: 7
            })
        );
        let status = a.status.expect("a status");
        assert!(status.fresh);
        assert_eq!(status.field("hbd_groups"), Some("g|1|0|b|0"));
        assert!(a.events.iter().any(|e| matches!(
            e,
            LivenessEvent::PeerState {
                to: PeerState::Active,
                ..
            }
        )));
        assert_eq!(m.counters().accepted, 1);
    }

    #[test]
    fn the_same_status_on_a_second_link_refreshes_only_that_link() {
        let t0 = crate::clock::now();
        let mut m = membership(t0);
        let f = frame("b", "status", 1, 7, &[]);
        accepted(m.receive(t0, 0, &f));
        let copy = accepted(m.receive(t0 + ms(1), 1, &f));
        assert!(copy.status.is_none() && copy.new_generation.is_none());
        assert_eq!(copy.events.len(), 1, "link l1 up: {:?}", copy.events);
        assert_eq!(m.counters().duplicates, 1);
        // the same copy again on l1 refreshes nothing
        assert!(accepted(m.receive(t0 + ms(2), 1, &f)).events.is_empty());
    }

    #[test]
    fn every_drop_is_typed_and_counted() {
        let t0 = crate::clock::now();
        let mut m = membership(t0);
        assert_eq!(
            dropped(m.receive(t0, 0, &vec![b'x'; wire::MAX_FRAME_LEN + 1])),
            DropReason::Oversize
        );
        assert_eq!(dropped(m.receive(t0, 0, b"garbage")), DropReason::Malformed);
        let mut forged = frame("b", "status", 1, 7, &[]);
        let n = forged.len();
        forged[n - 3] ^= 1;
        assert_eq!(dropped(m.receive(t0, 0, &forged)), DropReason::BadAuth);
        assert_eq!(
            dropped(m.receive(t0, 0, &frame("z", "status", 1, 7, &[]))),
            DropReason::UnknownNode
        );
        assert_eq!(
            dropped(m.receive(t0, 0, &frame("b", "status", 1, 4, &[]))),
            DropReason::Replay
        );
        accepted(m.receive(t0, 0, &frame("b", "status", 9, 7, &[])));
        assert_eq!(
            dropped(m.receive(t0, 0, &frame("b", "status", 3, 7, &[]))),
            DropReason::Stale
        );
        assert!(matches!(
            m.receive(t0, 0, &frame("a", "status", 1, 7, &[])),
            FrameOutcome::Own
        ));
        let c = m.counters();
        assert_eq!(
            (
                c.oversize,
                c.malformed,
                c.bad_auth,
                c.unknown_node,
                c.replayed
            ),
            (1, 1, 1, 1, 2)
        );
    }

    #[test]
    fn a_dead_peer_cannot_be_revived_by_its_old_status() {
        let t0 = crate::clock::now();
        let mut m = membership(t0);
        accepted(m.receive(t0, 0, &frame("b", "status", 10, 7, &[])));
        let events = m.on_tick(t0 + ms(31));
        assert!(events.iter().any(|e| matches!(
            e,
            LivenessEvent::PeerState {
                to: PeerState::Dead,
                ..
            }
        )));
        // a replayed status of the same run is stale; a newer one is the peer returning
        assert_eq!(
            dropped(m.receive(t0 + ms(40), 0, &frame("b", "status", 10, 7, &[]))),
            DropReason::Stale
        );
        let newer = frame("b", "status", 11, 7, &[]);
        let back = accepted(m.receive(t0 + ms(41), 0, &newer));
        assert!(back.status.is_some());
        assert_eq!(m.peers()[0].state, PeerState::Active);
    }

    #[test]
    fn a_slower_link_behind_a_faster_one_is_refreshed_by_its_older_copies() {
        let t0 = crate::clock::now();
        let mut m = membership(t0);
        // link 0 (UDP) delivers 1..=3; link 1 (a serial line) lags one frame behind
        for seq in 1..=3 {
            accepted(m.receive(t0, 0, &frame("b", "status", seq, 7, &[])));
        }
        let first_on_serial = frame("b", "status", 2, 7, &[]);
        let copy = accepted(m.receive(t0 + ms(1), 1, &first_on_serial));
        assert!(
            copy.status.is_none(),
            "a copy never counts as the node's status"
        );
        assert_eq!(copy.events.len(), 1, "link l1 up: {:?}", copy.events);
        // the same old frame again on the serial link is a replay there: dropped
        assert_eq!(
            dropped(m.receive(t0 + ms(2), 1, &first_on_serial)),
            DropReason::Stale
        );
        assert_eq!(m.counters().duplicates, 1);
    }

    #[test]
    fn a_late_status_is_accepted_but_not_fresh() {
        let t0 = crate::clock::now();
        let mut m = membership(t0);
        accepted(m.receive(t0, 0, &frame("b", "status", 1, 7, &[])));
        accepted(m.receive(t0, 0, &frame("b", "status", 3, 7, &[])));
        let reordered = frame("b", "status", 2, 7, &[]);
        let late = accepted(m.receive(t0, 0, &reordered));
        assert!(!late.status.expect("status").fresh);
    }

    #[test]
    fn a_late_status_does_not_keep_a_dead_peer_alive() {
        // Frames withheld on the path and delivered after the sender died are older than
        // what liveness knows: the peer still dies at deadtime after its newest status.
        let t0 = crate::clock::now();
        let mut m = membership(t0);
        accepted(m.receive(t0, 0, &frame("b", "status", 1, 7, &[])));
        accepted(m.receive(t0 + ms(1), 0, &frame("b", "status", 5, 7, &[])));
        for (i, seq) in (2..5).enumerate() {
            let at = t0 + ms(20 + 5 * i as u64);
            let f = frame("b", "status", seq, 7, &[]);
            let late = accepted(m.receive(at, 0, &f));
            assert!(late.events.is_empty(), "{:?}", late.events);
            assert!(!late.status.expect("status").fresh);
        }
        assert_eq!(m.peers()[0].last_status, Some(t0 + ms(1)));
        let events = m.on_tick(t0 + ms(31));
        assert!(
            events.iter().any(|e| matches!(
                e,
                LivenessEvent::PeerState {
                    to: PeerState::Dead,
                    ..
                }
            )),
            "dead at deadtime after its newest status: {events:?}"
        );
    }

    #[test]
    fn a_leftover_crc_key_is_refused_when_the_active_key_authenticates() {
        let t0 = crate::clock::now();
        let keys = mixed_keys(3);
        let mut m = mixed_membership(&keys, t0);
        assert!(m.keys().authenticates());
        let forged = signed(&only(&keys, 2), "b", "status", 1, 0xffff_ffff, &[]);
        assert_eq!(dropped(m.receive(t0, 0, &forged)), DropReason::BadAuth);
        assert_eq!(m.peers()[0].sequence.generation(), None);
        let real = signed(&keys, "b", "status", 1, 7, &[]);
        assert_eq!(accepted(m.receive(t0, 0, &real)).new_generation, Some(7));
    }

    #[test]
    fn under_crc_chosen_by_auth_frames_are_accepted_but_nothing_is_persisted() {
        let t0 = crate::clock::now();
        let keys = mixed_keys(2);
        let mut m = mixed_membership(&keys, t0);
        assert!(!m.keys().authenticates());
        let f = signed(&keys, "b", "status", 1, 7, &[]);
        let a = accepted(m.receive(t0, 0, &f));
        assert_eq!(a.new_generation, None, "a crc frame could be forged");
        assert_eq!(m.peers()[0].sequence.generation(), Some(7));
        // the sha256 key is still accepted (a pair moving from crc to it)
        let hmac = signed(&only(&keys, 3), "b", "status", 2, 7, &[]);
        accepted(m.receive(t0, 0, &hmac));
    }

    #[test]
    fn an_older_generation_is_remembered_until_the_peer_moves_past_it() {
        let t0 = crate::clock::now();
        let mut m = membership(t0);
        assert_eq!(
            dropped(m.receive(t0, 0, &frame("b", "status", 1, 3, &[]))),
            DropReason::Replay
        );
        assert_eq!(
            m.stale_generations(),
            &[Some(StaleGeneration {
                received: 3,
                known: 5
            })]
        );
        let text = encode_stale_generations(std::iter::once(("b", 5)));
        assert_eq!(stale_generation_for(&text, "b"), Some(5));
        assert_eq!(stale_generation_for(&text, "a"), None);
        assert_eq!(stale_generation_for("b zz", "b"), None);
        accepted(m.receive(t0, 0, &frame("b", "status", 1, 6, &[])));
        assert_eq!(m.stale_generations(), &[None]);
    }
}
