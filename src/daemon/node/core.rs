//! The node core: every decision of a node, as a pure state machine.
//!
//! [`NodeCore::step`] takes one [`Input`] at an instant and pushes the [`Effect`]s to carry
//! out; it does no I/O and reads no clock. The daemon's heartbeat thread and the simulation
//! tests drive this same core through the same loop ([`super::Node::run`]); only the way
//! inputs arrive differs (UDP sockets and a bell, or in-memory channels on a paused clock).
//!
//! The path of one heartbeat: [`Input::Frame`] → [`Membership::receive`] (checks, sequence,
//! liveness; a typed outcome) → liveness events to the [`Manager`] (naming the peer) → the
//! peer's `hbd_groups` reports to the manager → the manager's [`Action`]s become effects
//! (start or stop a group, announce, send our status now) → pacing decides whether our own
//! heartbeat answers at once.
//!
//! **Where more membership inputs plug in** (the seam; see docs/architecture.md):
//! * another *medium* (a serial line) is one more link: its frames arrive as
//!   [`Input::Frame`] with their link index, and [`Effect::Send`] goes to every medium;
//! * *reachability* (ping nodes and groups) is another input that weighs in on placement:
//!   its changes reach the manager beside peer liveness;
//! * another *membership backend* (VRRP) replaces [`Membership`] as the source of "the peer
//!   is alive / dead / holds" facts and drives the same [`Manager`] and group effects.
//!
//! Log lines about decisions are written here with `tracing` (as sans-I/O protocol cores such
//! as quinn-proto do): they are observations, not actions. Everything another part acts on
//! (frames to send, groups to start or stop, replies, state to persist, events the
//! simulation observes) is an [`Effect`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::fence::{FenceGate, StartGate};
use crate::config::Config;
use crate::control::protocol::Response;
use crate::daemon::runner::OpError;
use crate::manager::{
    Action, Command, CommandOutcome, Manager, Placement, SplitBrain, StartOutcome,
};
use crate::membership::classic::state::ClassicState;
use crate::membership::liveness::{LivenessEvent, PeerState, fmt_ms};
use crate::membership::pacing::{self, HeartbeatPacer, Pacing};
use crate::membership::receive::{
    DropReason, FrameOutcome, Membership, STALE_GENERATION_FIELD, StaleGeneration,
    encode_stale_generations, stale_generation_for,
};
use crate::membership::reports::GROUPS_FIELD;
use crate::membership::seqtrack::SeqTrack;
use crate::membership::unheard::{self, DEAD_NODES_FIELD, Unheard, encode_dead_nodes};
use crate::membership::wire::{self, EnvelopeRef, FieldRef, FrameKeys, FramePrefix};
use crate::reachability::{
    Decision, Holding, PeerReach, REACH_FIELD, Reach, ReachabilityPolicy, Standing, encode_reach,
};

/// Who this node is on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeIdentity {
    /// Node name (`uname -n` or `--node-name`), lower-cased.
    pub name: String,
    /// 16-byte node uuid (`srcuuid`).
    pub uuid: [u8; 16],
    /// This start's generation (`hg`), higher than every earlier start's.
    pub generation: u64,
}

/// How long a stopping node waits for its groups to stop before it exits anyway.
pub const SHUTDOWN_LIMIT: Duration = Duration::from_secs(120);

/// Something that happened to a node, for logs and for observers (the simulation tests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeEvent {
    /// A liveness change.
    Liveness(LivenessEvent),
    /// A peer restarted: its frames carry a higher generation.
    PeerRestarted {
        /// Peer name.
        node: String,
        /// Its new generation.
        generation: u64,
    },
    /// Both nodes held a group when they heard each other again: one keeps it by the rule
    /// (docs/reliability.md, "Split brain"), the other releases it.
    SplitBrain {
        /// Group name.
        group: String,
        /// Our placement when it was found.
        ours: Placement,
        /// The peer's placement, from its report.
        theirs: Placement,
        /// The node that keeps the group.
        keeper: String,
    },
    /// A peer's frames carry an older generation than the one known for it: they are
    /// dropped as replays, and our heartbeats tell it so it can move past (a state
    /// directory restored from a backup, or a replay).
    PeerGenerationStale {
        /// Peer name.
        node: String,
        /// The generation its frames carry.
        received: u64,
        /// The generation known for it.
        known: u64,
    },
    /// A peer said it drops our frames because our generation is older than the one it
    /// knows for us: we hold no group until restarted past it.
    OwnGenerationStale {
        /// The peer that said so.
        peer: String,
        /// Our generation.
        was: u64,
        /// The one it knows.
        known: u64,
        /// The generation recorded for our next start.
        next_start: u64,
    },
    /// The pair peer holds us dead although we hear it (`unheard`: one-way loss, we hold
    /// no group), or hears us again (`false`).
    Unheard {
        /// The peer.
        peer: String,
        /// Whether it does not hear us.
        unheard: bool,
    },
    /// A frame was dropped.
    Dropped {
        /// Why, in the words of [`DropReason::as_str`].
        reason: &'static str,
        /// What exactly.
        detail: String,
        /// The link it arrived on.
        link: usize,
        /// Its sender's address, when the medium has one.
        from: Option<SocketAddr>,
    },
}

/// A finished group operation, back from the runner.
#[derive(Debug)]
pub struct OpFinished {
    /// Index into the configuration's groups.
    pub group: usize,
    /// A start (else a stop).
    pub start: bool,
    /// How it ended.
    pub result: Result<(), OpError>,
}

/// One input to the core.
#[derive(Debug)]
pub enum Input<'a> {
    /// A frame arrived on `link`.
    Frame {
        /// Index of the medium it arrived on.
        link: usize,
        /// Sender address, when the medium has one.
        from: Option<SocketAddr>,
        /// The raw frame.
        frame: &'a [u8],
    },
    /// Time passed: send what is due, apply passed deadlines, finish stopping.
    Timer,
    /// A group operation finished.
    OpFinished(OpFinished),
    /// An operator's takeover or standby; answered with [`Effect::Reply`].
    Command(Command),
    /// A configuration loaded again (`hactl reload`, SIGHUP); answered with
    /// [`Effect::Reply`]: applied, or refused with what needs a restart. `outside` says
    /// which parts the loop around the core already applied (log outputs, the prober).
    Reload(Box<Config>, AppliedOutside),
    /// Our reachability count changed (ping nodes and groups; `None` while a target is
    /// still unknown or without targets).
    Reach(Option<Reach>),
    /// Stop: release every group to the peer, then stop.
    Shutdown,
    /// The fence device ran against `peer` ([`Effect::Fence`]): `Err` says why it failed.
    FenceFinished {
        /// The peer fenced.
        peer: String,
        /// Success, or the failure in words.
        result: Result<(), String>,
    },
}

/// Parts of a reloaded configuration that live outside the core and that the loop applied
/// before handing the configuration in, with what each said it changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppliedOutside {
    /// The log outputs were swapped (`logfile`, `debugfile`, `logfacility`, `debug`).
    pub logging: Option<Vec<String>>,
    /// The prober took the new ping nodes and groups (and `deadping`).
    pub ping_targets: bool,
}

/// One thing the loop around the core must do.
#[derive(Debug, PartialEq)]
pub enum Effect {
    /// Send `frame` on every medium; an `answer` repeats our last status (a medium may let
    /// the peer read it later, see [`crate::media::Transmit::send_answer`]). Hand the buffer
    /// back with [`NodeCore::recycle`].
    Send {
        /// The encoded frame.
        frame: Vec<u8>,
        /// Whether it says nothing our last status did not.
        answer: bool,
    },
    /// Start the group (index into the configuration's groups), left to right.
    Start(usize),
    /// Stop the group, right to left.
    Stop(usize),
    /// Re-announce the group's addresses.
    Announce(usize),
    /// The answer to an [`Input::Command`] or [`Input::Reload`].
    Reply(Box<Response>),
    /// Remember `generation` for `peer` across our restarts.
    PersistGeneration {
        /// Peer name.
        peer: String,
        /// Its generation.
        generation: u64,
    },
    /// Remember `generation` as ours (`hb_generation`), so the next start goes past it.
    PersistOwnGeneration(u64),
    /// Log and observe.
    Event(NodeEvent),
    /// The node has stopped: every group released (or the stop limit passed).
    Stopped,
    /// Run the fence device against `peer`; answer with [`Input::FenceFinished`]. The
    /// starts it holds wait for it.
    Fence {
        /// The peer to fence.
        peer: String,
    },
}

/// The node's state; see the module doc.
pub struct NodeCore {
    config: Arc<Config>,
    identity: NodeIdentity,
    membership: Membership,
    manager: Manager,
    /// Our deadtime as our heartbeats carry it (`dt`, hex milliseconds).
    deadtime_text: String,
    /// Our status frames' leading fields, encoded and hashed once for the frames that repeat
    /// them (rebuilt by the encoder when they or the keys change).
    frame_prefix: FramePrefix,
    /// Frame buffers handed back after sending ([`NodeCore::recycle`]): a heartbeat
    /// allocates nothing.
    spare: Vec<Vec<u8>>,
    /// What our last status said (state, versions of the `hbd_groups`, `hbd_reach` and
    /// `hbd_dead` texts): an answer that repeats it is news to nobody.
    said: (&'static str, u64, u64, u64),
    next_seq: u64,
    /// When our heartbeats go out (lined up with the peers', see [`pacing`]).
    pacer: HeartbeatPacer,
    /// The load line our heartbeats carry (`ld`), when reported.
    load: Option<String>,
    /// The wall clock in seconds at a monotonic instant, for `ts`.
    wall: (Instant, u64),
    /// Reachability: our count, the peer's, and the ipfail policy over both.
    reach: ReachState,
    /// Set once stopping: the instant after which the node stops even with groups held.
    stop_deadline: Option<Instant>,
    stopped: bool,
    /// Whether starts wait for the peer to be fenced (a peer that died holding groups).
    fence: FenceGate,
    /// Stale generations already reported, per peer, and what our heartbeats say about them
    /// ([`STALE_GENERATION_FIELD`], empty when nothing is stale).
    stale: StaleState,
    /// One-way loss: the peers we hold dead as our heartbeats name them, and whether the
    /// pair peer hears us (see [`unheard`]).
    dead: DeadState,
    /// What an operator must know now (`hactl status`): generations that did not match.
    alarms: Vec<String>,
    /// heartbeat's own protocol towards heartbeat peers (see `core/classic.rs`).
    classic: ClassicState,
}

/// Who we hold dead ([`DEAD_NODES_FIELD`], with a version for [`NodeCore::said`]) and
/// whether the pair peer, naming us dead, hears us.
#[derive(Debug, Default)]
struct DeadState {
    text: String,
    version: u64,
    peer: Unheard,
    /// The pair peer came back from dead and its first fresh status is still to come:
    /// whether it names us dead tells a partition from one-way loss.
    returned: bool,
}

/// The peers whose frames carry an old generation, as last reported.
#[derive(Debug, Default)]
struct StaleState {
    reported: Vec<Option<StaleGeneration>>,
    text: String,
}

impl NodeCore {
    /// A node at `now` over media named `link_names`; `peer_generations` are the peers'
    /// generations persisted by earlier runs (older frames are replays even right after we
    /// restart).
    pub fn new(
        config: Arc<Config>,
        identity: NodeIdentity,
        link_names: &[String],
        peer_generations: &BTreeMap<String, u64>,
        now: Instant,
    ) -> NodeCore {
        let peers = config
            .nodes
            .iter()
            .filter(|n| **n != identity.name)
            .map(|p| {
                let track = match peer_generations.get(p) {
                    Some(g) => SeqTrack::with_min_generation(*g),
                    None => SeqTrack::new(),
                };
                (p.clone(), track)
            })
            .collect();
        let membership = Membership::new(
            &identity.name,
            config.timing,
            peers,
            link_names,
            FrameKeys::new(&config.auth),
            now,
        );
        let manager = Manager::new(
            &identity.name,
            &config.nodes,
            &config.groups,
            config.auto_failback,
        );
        NodeCore {
            deadtime_text: deadtime_text(&config),
            frame_prefix: FramePrefix::default(),
            spare: Vec::new(),
            said: ("", u64::MAX, u64::MAX, u64::MAX),
            next_seq: 1,
            pacer: HeartbeatPacer::new(now, config.timing.keepalive),
            load: None,
            wall: (now, 1),
            reach: ReachState {
                local: None,
                text: String::new(),
                version: 0,
                peer: PeerReach::new(),
                policy: ReachabilityPolicy::new(config.ping_hysteresis, now),
            },
            stop_deadline: None,
            stopped: false,
            fence: FenceGate::default(),
            stale: StaleState::default(),
            dead: DeadState::default(),
            alarms: Vec::new(),
            classic: ClassicState::new(membership.peers().len()),
            membership,
            manager,
            identity,
            config,
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> &Arc<Config> {
        &self.config
    }

    /// Who we are.
    pub fn identity(&self) -> &NodeIdentity {
        &self.identity
    }

    /// Membership: peers, links, counters.
    pub fn membership(&self) -> &Membership {
        &self.membership
    }

    /// Who holds which group.
    pub fn manager(&self) -> &Manager {
        &self.manager
    }

    /// What an operator must know now, loudly (`hactl status` shows them).
    pub fn alarms(&self) -> &[String] {
        &self.alarms
    }

    /// The reachability policy (both counts, the standing, the holds), for status.
    pub fn reach_policy(&self) -> &ReachabilityPolicy {
        &self.reach.policy
    }

    /// Group `index` was found running at start (left behind by an earlier run): it is held
    /// until the rules say otherwise. Before the first step.
    pub fn adopt_running(&mut self, index: usize) {
        self.manager.adopt_running(index);
    }

    /// The load line our heartbeats carry from now on (`ld`).
    pub fn set_load(&mut self, load: String) {
        self.load = Some(load);
    }

    /// The wall clock read `secs` (since the Unix epoch) at `now`, for our frames' `ts`.
    pub fn set_wall_clock(&mut self, now: Instant, secs: u64) {
        self.wall = (now, secs.max(1));
    }

    /// A sent frame's buffer, back for the next one.
    pub fn recycle(&mut self, mut frame: Vec<u8>) {
        if self.spare.len() < 4 {
            frame.clear();
            self.spare.push(frame);
        }
    }

    /// Counts a frame a medium could not send.
    pub fn count_send_error(&mut self) {
        self.membership.count_send_error();
    }

    /// When to step next with [`Input::Timer`]; `None` once stopped.
    pub fn wake(&self) -> Option<Instant> {
        if self.stopped {
            return None;
        }
        let mut wake = self.pacer.due();
        if let Some(d) = self.membership.next_deadline() {
            wake = wake.min(d);
        }
        if let Some(d) = self.stop_deadline {
            wake = wake.min(d);
        }
        if let Some(d) = self.classic.next_due() {
            wake = wake.min(d);
        }
        if let Some(d) = self.reach.policy.next_deadline(self.holding(), wake) {
            wake = wake.min(d);
        }
        Some(wake)
    }

    /// Whether a liveness deadline has passed at `now`: frames that arrived earlier but wait
    /// unread should be read before [`Input::Timer`] decides on it.
    pub fn liveness_due(&self, now: Instant) -> bool {
        self.membership.next_deadline().is_some_and(|d| d <= now)
    }

    /// Whether a peer or one of its links is down (or not heard yet): its return may wait
    /// unread among the answers, which a live peer's heartbeats or a liveness deadline
    /// would otherwise have the loop read. Read at every wake meanwhile, a peer back after
    /// one-way loss is noticed within a keepalive, not when it next says something new
    /// (seen: 5.2 s; issue #15, defect 3).
    pub fn awaits_a_return(&self) -> bool {
        self.membership.peers().iter().any(|p| {
            !p.state.is_alive()
                || p.links
                    .iter()
                    .any(|l| l.state != crate::membership::liveness::LinkState::Up)
        })
    }

    /// Applies one input at `now`, pushing what to do onto `out`.
    pub fn step(&mut self, now: Instant, input: Input<'_>, out: &mut Vec<Effect>) {
        if self.stopped {
            return;
        }
        match input {
            Input::Frame { link, from, frame } => self.on_frame(now, link, from, frame, out),
            Input::Timer => self.on_timer(now, out),
            Input::OpFinished(done) => self.on_op_finished(now, done, out),
            Input::Command(command) => {
                let reply = self.on_command(now, command, out);
                out.push(Effect::Reply(Box::new(reply)));
            }
            Input::Reload(config, outside) => {
                let reply = match self.reload(*config, &outside) {
                    Ok(m) => Response::done(m),
                    Err(e) => Response::refused(e),
                };
                out.push(Effect::Reply(Box::new(reply)));
            }
            Input::Reach(local) => {
                if local != self.reach.local {
                    self.reach.local = local;
                    self.reach.text = local.map(encode_reach).unwrap_or_default();
                    self.reach.version += 1;
                    self.reach
                        .policy
                        .observe(local, self.reach.peer.current(), now);
                    // The peer weighs our count against its own: tell it at once.
                    self.run_actions(now, vec![Action::SendReport], out);
                    self.reach_decide(now, out);
                }
            }
            Input::FenceFinished { peer, result } => self.on_fenced(now, &peer, result, out),
            Input::Shutdown => {
                if self.stop_deadline.is_none() {
                    tracing::info!("stopping: releasing every group here to the peer");
                    self.classic_on_shutdown(now, out);
                    self.stop_deadline = Some(now + SHUTDOWN_LIMIT);
                    let actions = self.manager.on_shutdown();
                    self.run_actions(now, actions, out);
                    self.on_timer(now, out);
                }
            }
        }
        self.classic_sync(now, out);
    }

    /// Sends a heartbeat if one is due, applies passed liveness deadlines, and finishes
    /// stopping once every group is released (or the stop limit passed).
    fn on_timer(&mut self, now: Instant, out: &mut Vec<Effect>) {
        if let Some(deadline) = self.stop_deadline
            && (!self.manager.holds_any() || now >= deadline)
        {
            if self.manager.holds_any() {
                tracing::error!("stopping with groups still held here: their stop did not finish");
            }
            // Tell the peer once more that nothing runs here any more.
            self.send_status(now, false, out);
            self.classic_on_stopped(now, out);
            self.stopped = true;
            out.push(Effect::Stopped);
            return;
        }
        if now >= self.pacer.due() {
            let turns = match pacing_of(&self.identity.name, &self.membership) {
                Pacing::TakeTurns { lower, .. } => Some(lower),
                _ => None,
            };
            if self.pacer.on_timer(now, turns) {
                self.send_status(now, false, out);
            }
        }
        let events = self.membership.on_tick(now);
        self.apply_events(now, events, out);
        self.reach_decide(now, out);
        self.classic_on_timer(now, out);
    }

    /// Which side holds groups now, for the reachability policy.
    fn holding(&self) -> Holding {
        Holding {
            local: self.manager.holds_any(),
            peer: self.manager.peer_holds_any(),
        }
    }

    /// Asks the reachability policy (ipfail's rules) and moves groups as it says: to the
    /// peer when we hold them and have reached fewer targets for the hysteresis; back here
    /// under auto_failback once reach is even and our take-back hold is served. The peer's
    /// mirror decision (`PullFromPeer`) is left to the peer itself: releasing is always
    /// safe, and the holder's own move is what frees the group.
    fn reach_decide(&mut self, now: Instant, out: &mut Vec<Effect>) {
        if self.reach.local.is_none() && self.reach.peer.current().is_none() {
            return;
        }
        let decision = self.reach.policy.decide(self.holding(), now);
        if decision == Decision::MoveToPeer {
            let actions = self.manager.on_reach_move_to_peer();
            if !actions.is_empty() {
                tracing::warn!(
                    ours = ?self.reach.local,
                    peer = ?self.reach.peer.current(),
                    "the peer reaches more ping nodes/groups: moving the groups held here to it"
                );
            }
            self.run_actions(now, actions, out);
        } else if self.reach.policy.standing() == Standing::Equal
            && self.reach.policy.may_take_back(now)
        {
            let actions = self.manager.on_reach_restored();
            if !actions.is_empty() {
                tracing::info!("reachability is even again: taking back the groups moved for it");
            }
            self.run_actions(now, actions, out);
        }
    }

    /// Verifies, de-duplicates and applies one received frame. Never panics on any input.
    fn on_frame(
        &mut self,
        now: Instant,
        link: usize,
        from: Option<SocketAddr>,
        frame: &[u8],
        out: &mut Vec<Effect>,
    ) {
        let mut accepted = match self.membership.receive(now, link, frame) {
            FrameOutcome::Own => return,
            FrameOutcome::Dropped(d) => {
                let replay = d.reason == DropReason::Replay;
                out.push(Effect::Event(NodeEvent::Dropped {
                    reason: d.reason.as_str(),
                    detail: d.detail,
                    link,
                    from,
                }));
                if replay {
                    self.note_stale_generations(out);
                }
                return;
            }
            FrameOutcome::Accepted(a) => a,
        };
        let peer = accepted.peer;
        if self.stale.reported.get(peer).is_some_and(Option::is_some) {
            self.note_stale_generations(out);
        }
        let classic_message = accepted.message.take();
        if let Some(r) = accepted.restarted {
            let node = self.membership.peers()[peer].name.clone();
            tracing::info!(
                %node,
                from = %format!("{:x}", r.previous),
                to = %format!("{:x}", r.generation),
                "node restarted (new generation)"
            );
            out.push(Effect::Event(NodeEvent::PeerRestarted {
                node,
                generation: r.generation,
            }));
            self.classic_on_peer_restarted(now, peer, out);
        }
        if let Some(generation) = accepted.new_generation {
            out.push(Effect::PersistGeneration {
                peer: self.membership.peers()[peer].name.clone(),
                generation,
            });
        }
        self.apply_events(now, accepted.events, out);
        if accepted.restarted.is_some() {
            // A new run: it held nothing of the old one's view.
            self.dead.returned = false;
        }
        if let Some(status) = &accepted.status {
            let active = status.field("st") == Some("active");
            self.classic_note_status(peer, status.field(GROUPS_FIELD).is_some(), active);
        }
        if let Some((seq, verdict)) = accepted.sequenced {
            self.classic_on_sequenced(now, peer, seq, verdict, out);
        }
        if let Some(message) = classic_message {
            self.classic_on_message(now, peer, &message, out);
        }
        let Some(status) = accepted.status else {
            return;
        };
        // Ownership first: when the peer's reports change ours, the one status that says so
        // also serves as the pacing reply (on_extra_send suppresses a second one).
        // A late (reordered) status is older than the one already applied: its reports
        // and counts are old news.
        let from_pair_peer = status.fresh
            && self.manager.peer() == Some(self.membership.peers()[peer].name.as_str());
        if let Some(text) = status.field(STALE_GENERATION_FIELD)
            && status.fresh
        {
            self.on_stale_note(now, peer, text, out);
        }
        // Whether the peer holds us dead (it does not hear us, or not yet again).
        let names_us = status
            .field(DEAD_NODES_FIELD)
            .is_some_and(|t| unheard::names(t, &self.identity.name));
        if from_pair_peer {
            self.on_dead_note(now, peer, names_us, out);
        }
        if let Some(text) = status.field(GROUPS_FIELD)
            && from_pair_peer
        {
            match self.manager.on_peer_reports_checked(text) {
                Ok(actions) => self.run_actions(now, actions, out),
                Err(e) => {
                    self.membership.count_malformed();
                    out.push(Effect::Event(NodeEvent::Dropped {
                        reason: DropReason::Malformed.as_str(),
                        detail: e.to_string(),
                        link,
                        from,
                    }));
                }
            }
        }
        if from_pair_peer && std::mem::take(&mut self.dead.returned) {
            // Only an hbd peer (its groups field) says whom it holds dead: heartbeat's
            // silence means nothing.
            if !names_us && status.field(GROUPS_FIELD).is_some() {
                let peer = &self.membership.peers()[peer].name;
                tracing::error!(
                    %peer,
                    "ONE-WAY LOSS: node {peer}, held dead here, never held this node dead (it heard us, or it was stalled): the groups taken from it ran on both meanwhile"
                );
                let actions = self.manager.on_peer_heard_us_while_dead();
                self.run_actions(now, actions, out);
            }
        }
        if from_pair_peer {
            match self
                .reach
                .peer
                .on_status(status.field(REACH_FIELD).map(str::as_bytes))
            {
                Ok(true) => {
                    self.reach
                        .policy
                        .observe(self.reach.local, self.reach.peer.current(), now);
                    self.reach_decide(now, out);
                }
                Ok(false) => {}
                Err(e) => {
                    self.membership.count_malformed();
                    out.push(Effect::Event(NodeEvent::Dropped {
                        reason: DropReason::Malformed.as_str(),
                        detail: format!("bad {REACH_FIELD} field: {e}"),
                        link,
                        from,
                    }));
                }
            }
        }
        if status.fresh && self.pace_on(now, peer) {
            self.send_status(now, true, out);
        }
    }

    /// A fresh status of peer `index` arrived at `now`: whether it paces ours and we send
    /// now (see [`pacing`]).
    fn pace_on(&mut self, now: Instant, index: usize) -> bool {
        let name = self.membership.peers()[index].name.as_str();
        match pacing_of(&self.identity.name, &self.membership) {
            Pacing::Follow(setter) if setter == name => self.pacer.on_pace_setter_heartbeat(now),
            Pacing::TakeTurns { partner, lower } if partner == name => {
                self.pacer.on_partner_heartbeat(now, lower)
            }
            _ => false,
        }
    }

    fn apply_events(&mut self, now: Instant, events: Vec<LivenessEvent>, out: &mut Vec<Effect>) {
        let mut local_changed = false;
        let mut actions = Vec::new();
        for event in &events {
            match event {
                LivenessEvent::PeerState { node, from, to, .. }
                    if to.is_alive() && !from.is_alive() =>
                {
                    if self.manager.peer() == Some(node.as_str()) {
                        self.fence.on_peer_alive();
                        self.dead.returned = *from == PeerState::Dead;
                    }
                    actions.extend(self.manager.on_peer_alive(node));
                    // Answer at once, as heartbeat does for a node returning after a
                    // partition: the peer learns about us (and our groups) one message later
                    // instead of up to a keepalive later.
                    local_changed = true;
                }
                LivenessEvent::PeerState {
                    node,
                    from,
                    to: PeerState::Dead,
                    ..
                } => {
                    if let Some(i) = self.membership.liveness().peer_index(node) {
                        self.classic_on_peer_gone(i, true);
                    }
                    if self.manager.peer() == Some(node.as_str()) {
                        self.dead.peer.reset();
                        self.alarms.retain(|a| !a.starts_with(UNHEARD_ALARM));
                        self.reach.peer.on_peer_dead();
                        self.reach.policy.observe(self.reach.local, None, now);
                        // Asked before the manager forgets what the peer held.
                        let may_hold = *from == PeerState::Init || self.manager.peer_holds_any();
                        self.fence.on_peer_dead(node, may_hold && self.fences());
                    }
                    actions.extend(self.manager.on_peer_dead(node));
                }
                LivenessEvent::LocalActive { .. } => {
                    actions.extend(self.manager.on_ready());
                    local_changed = true;
                }
                _ => {}
            }
        }
        if events
            .iter()
            .any(|e| matches!(e, LivenessEvent::PeerState { .. }))
        {
            self.note_dead_nodes();
        }
        out.extend(
            events
                .into_iter()
                .map(|e| Effect::Event(NodeEvent::Liveness(e))),
        );
        if local_changed && !actions.contains(&Action::SendReport) {
            // heartbeat sends a status at once when its own state changes.
            actions.push(Action::SendReport);
        }
        self.run_actions(now, actions, out);
    }

    /// Turns the manager's decisions into effects.
    fn run_actions(&mut self, now: Instant, actions: Vec<Action>, out: &mut Vec<Effect>) {
        for action in actions {
            match action {
                Action::Start(g) => match self.fence.on_start(g, now) {
                    StartGate::Go => {
                        tracing::info!(group = %self.config.groups[g].name(), "starting group");
                        out.push(Effect::Start(g));
                    }
                    StartGate::FenceFirst(peer) => {
                        tracing::warn!(
                            group = %self.config.groups[g].name(), %peer,
                            "the peer died while it may have held groups: fencing it before the takeover"
                        );
                        out.push(Effect::Fence { peer });
                    }
                    StartGate::Hold => {
                        tracing::info!(group = %self.config.groups[g].name(), "start waits for fencing");
                    }
                },
                Action::Stop(g) => {
                    tracing::info!(group = %self.config.groups[g].name(), "stopping group");
                    out.push(Effect::Stop(g));
                }
                Action::Announce(g) => {
                    tracing::info!(group = %self.config.groups[g].name(), "re-announcing the group's addresses");
                    out.push(Effect::Announce(g));
                }
                Action::SendReport => {
                    self.send_status(now, false, out);
                    self.pacer.on_extra_send(now);
                }
                Action::SplitBrain(found) => self.report_split_brain(found, out),
            }
        }
    }

    /// Logs a split brain found on a heal, with both sides' views and the keeper.
    fn report_split_brain(&self, found: SplitBrain, out: &mut Vec<Effect>) {
        let group = self.config.groups[found.group].name().to_string();
        let peer = self.manager.peer().unwrap_or("?");
        let view = |p: &Placement| format!("{}@{}", p.target, p.epoch);
        tracing::error!(
            %group,
            here = %view(&found.ours),
            peer_view = %view(&found.theirs),
            keeper = %found.keeper,
            resolved = %view(&found.resolved),
            "SPLIT BRAIN: group {group} was running on both {} and {peer}; {} keeps it{}",
            self.identity.name,
            found.keeper,
            if found.keeper == self.identity.name {
                " and re-announces its addresses"
            } else {
                ", it is released here"
            }
        );
        out.push(Effect::Event(NodeEvent::SplitBrain {
            group,
            ours: found.ours,
            theirs: found.theirs,
            keeper: found.keeper,
        }));
    }

    /// Compares the peers' stale generations with those last reported: a new one is
    /// logged loudly, raised as an alarm and named in our heartbeats from now on; a peer
    /// that moved past clears them.
    fn note_stale_generations(&mut self, out: &mut Vec<Effect>) {
        let now_stale = self.membership.stale_generations();
        self.stale.reported.resize(now_stale.len(), None);
        if self.stale.reported.as_slice() == now_stale {
            return;
        }
        for (i, (was, is)) in self.stale.reported.iter().zip(now_stale).enumerate() {
            let node = &self.membership.peers()[i].name;
            match (was, is) {
                (None, Some(s)) => {
                    tracing::error!(
                        %node,
                        received = %format!("{:x}", s.received),
                        known = %format!("{:x}", s.known),
                        "node {node} sends generation {:x}, older than the {:x} known for it: its frames are dropped as replays. Was its state directory restored from a backup? It is told to move past it",
                        s.received,
                        s.known
                    );
                    out.push(Effect::Event(NodeEvent::PeerGenerationStale {
                        node: node.clone(),
                        received: s.received,
                        known: s.known,
                    }));
                }
                (Some(_), None) => {
                    tracing::warn!(%node, "node {node} moved past its stale generation: its frames are accepted again");
                }
                _ => {}
            }
        }
        self.stale.reported = now_stale.to_vec();
        let peers = self.membership.peers();
        self.stale.text = encode_stale_generations(
            self.stale
                .reported
                .iter()
                .enumerate()
                .filter_map(|(i, s)| s.map(|s| (peers[i].name.as_str(), s.known))),
        );
        self.alarms
            .retain(|a| !a.starts_with("dropping frames of "));
        for (i, s) in self.stale.reported.iter().enumerate() {
            if let Some(s) = s {
                self.alarms.push(format!(
                    "dropping frames of {}: generation {:x} is older than the {:x} known (state directory restored from a backup?)",
                    peers[i].name, s.received, s.known
                ));
            }
        }
    }

    /// Peer `index` says (in [`STALE_GENERATION_FIELD`]) which generation it knows for us:
    /// when that is above ours, our `hb_generation` went backwards (restored from a backup)
    /// and the peer drops all we send. It cannot hear what we hold, so we hold nothing: we
    /// release every group, record a generation past the known one for the next start, and
    /// say loudly that hbd must be restarted here. (Moving past it in place would let a
    /// stale boot rejoin unseen; the simulation test
    /// `restart_with_higher_generation_is_accepted_lower_is_refused` keeps it refused.)
    fn on_stale_note(&mut self, now: Instant, index: usize, text: &str, out: &mut Vec<Effect>) {
        let Some(known) = stale_generation_for(text, &self.identity.name) else {
            return;
        };
        let was = self.identity.generation;
        if known <= was || self.manager.is_barred() {
            return;
        }
        let peer = self.membership.peers()[index].name.clone();
        let next = known.saturating_add(1);
        // Persisted only from a frame that could not be forged.
        let recorded = self.membership.keys().authenticates();
        if recorded {
            out.push(Effect::PersistOwnGeneration(next));
        }
        let fix = if recorded {
            format!(
                "restart hbd on this node to rejoin (generation {next} is recorded for its next start)"
            )
        } else {
            format!("write {next} into hb_generation and restart hbd on this node to rejoin")
        };
        tracing::error!(
            %peer,
            "node {peer} drops our frames: our generation {was:x} is older than the {known:x} it knows for us (was hb_generation restored from a backup?); this node holds no group until restarted: {fix}"
        );
        self.alarms.push(format!(
            "{peer} drops our frames: our generation {was:x} is older than the {known:x} it knows (hb_generation restored from a backup?); holding no group: {fix}"
        ));
        out.push(Effect::Event(NodeEvent::OwnGenerationStale {
            peer,
            was,
            known,
            next_start: next,
        }));
        let actions = self.manager.on_barred();
        self.run_actions(now, actions, out);
    }

    /// Our heartbeats name the peers we hold dead from now on ([`DEAD_NODES_FIELD`]).
    fn note_dead_nodes(&mut self) {
        let text = encode_dead_nodes(
            self.membership
                .peers()
                .iter()
                .filter(|p| p.state == PeerState::Dead)
                .map(|p| p.name.as_str()),
        );
        if text != self.dead.text {
            self.dead.text = text;
            self.dead.version += 1;
        }
    }

    /// A fresh status of the pair peer `index` arrived, naming us dead or not: one-way loss
    /// (it does not hear us, we hear it) once it has named us for two keepalives. It has
    /// taken our groups and cannot learn that we hold them, so we release them, loudly,
    /// until it hears us again (issue #15, the one-way loss scenario).
    fn on_dead_note(&mut self, now: Instant, index: usize, named: bool, out: &mut Vec<Effect>) {
        let patience = unheard::patience(self.config.timing.keepalive);
        let Some(change) = self.dead.peer.on_status(now, named, patience) else {
            return;
        };
        let peer = self.membership.peers()[index].name.clone();
        let unheard = change == unheard::Change::Unheard;
        if unheard {
            tracing::error!(
                %peer,
                "ONE-WAY LOSS: node {peer} has held this node dead for {} although we hear it: our heartbeats do not reach it and it has taken our groups over; releasing every group here until it hears us again",
                fmt_ms(patience)
            );
            self.alarms.push(format!(
                "{UNHEARD_ALARM}{peer} holds this node dead although we hear it (one-way loss): holding no group until it hears us; check the path from this node to {peer}"
            ));
        } else {
            tracing::warn!(%peer, "node {peer} hears this node again: the one-way loss is over");
            self.alarms.retain(|a| !a.starts_with(UNHEARD_ALARM));
        }
        out.push(Effect::Event(NodeEvent::Unheard { peer, unheard }));
        let actions = self.manager.on_unheard(unheard);
        self.run_actions(now, actions, out);
    }

    fn on_op_finished(&mut self, now: Instant, done: OpFinished, out: &mut Vec<Effect>) {
        let name = self.config.groups[done.group].name();
        match (&done.result, done.start) {
            (Ok(()), true) => tracing::info!(group = %name, "group running"),
            (Ok(()), false) => tracing::info!(group = %name, "group stopped"),
            (Err(e), true) if !e.held => tracing::error!(group = %name, "group start failed: {e}"),
            (Err(e), _) => tracing::error!(
                group = %name,
                "GROUP {} FAILED: {e}; the group is held failed here and will not be started on the peer; fix it and restart hbd",
                if done.start { "START" } else { "STOP" }
            ),
        }
        let actions = if done.start {
            let outcome = match &done.result {
                Ok(()) => StartOutcome::Running,
                Err(e) if e.held => StartOutcome::Stuck,
                Err(_) => StartOutcome::Failed,
            };
            self.manager.on_started(done.group, outcome)
        } else {
            // Any failed stop may leave resources running here.
            self.manager.on_stopped(done.group, done.result.is_ok())
        };
        self.run_actions(now, actions, out);
    }

    /// Whether a fence device applies to this node.
    fn fences(&self) -> bool {
        self.config
            .fencing
            .as_ref()
            .is_some_and(|f| f.device_for(&self.identity.name).is_some())
    }

    /// The fence device finished: the held starts go ahead, or fail (the groups stay
    /// stopped here and the failure is reported, as a failed start is).
    fn on_fenced(
        &mut self,
        now: Instant,
        peer: &str,
        result: Result<(), String>,
        out: &mut Vec<Effect>,
    ) {
        let failure = result.as_ref().err().cloned();
        let held = self.fence.on_finished(peer, result);
        match failure {
            None => {
                tracing::warn!(%peer, "peer fenced: taking its groups over");
                for g in held {
                    tracing::info!(group = %self.config.groups[g].name(), "starting group");
                    out.push(Effect::Start(g));
                }
            }
            Some(reason) => {
                tracing::error!(%peer, %reason, "FENCING FAILED: the groups it may hold stay stopped here");
                for g in held {
                    let done = OpFinished {
                        group: g,
                        start: true,
                        result: Err(OpError::clean(format!(
                            "fencing {peer} failed ({reason}); not taken over"
                        ))),
                    };
                    self.on_op_finished(now, done, out);
                }
            }
        }
    }

    /// The fence gate in words, for `hactl status`.
    pub fn fencing_status(&self, now: Instant) -> Option<String> {
        self.fence.describe(now)
    }

    /// Carries out an operator's takeover or standby.
    fn on_command(&mut self, now: Instant, command: Command, out: &mut Vec<Effect>) -> Response {
        tracing::info!(?command, "operator command");
        match self.manager.on_command(command) {
            Ok((outcome, actions)) => {
                self.run_actions(now, actions, out);
                if matches!(outcome, CommandOutcome::Applied(_)) {
                    self.classic_on_command(now, command, out);
                }
                Response::done(match outcome {
                    CommandOutcome::Applied(groups) => format!("moving: {}", groups.join(", ")),
                    CommandOutcome::NothingToDo(why) => format!("nothing to do: {why}"),
                    CommandOutcome::Queued(why) => {
                        format!("queued until the pair is stable ({why})")
                    }
                })
            }
            Err(e) => Response::refused(e.to_string()),
        }
    }

    /// Applies a configuration loaded again. Keys, timers and the wire format apply at once;
    /// a change to nodes, media, groups or the failback policy is refused as a whole and
    /// names what needs a restart (groups keep running across a restart: hbd adopts them).
    fn reload(&mut self, mut new: Config, outside: &AppliedOutside) -> Result<String, String> {
        let needs_restart = self.needs_restart(&new);
        if !needs_restart.is_empty() {
            return Err(format!(
                "nothing applied: changing {} needs a restart of hbd (running groups are adopted on restart)",
                needs_restart.join(", ")
            ));
        }
        let old = &self.config;
        let mut changed = Vec::new();
        if new.auth != old.auth {
            changed.push("authkeys");
        }
        if new.timing != old.timing {
            changed.push("timers");
            self.membership.set_timing(new.timing);
            self.pacer.set_keepalive(new.timing.keepalive);
        }
        if new.msgfmt != old.msgfmt || new.hopfudge != old.hopfudge {
            changed.push("wire format");
        }
        // Parts the running node does not re-read: kept as they run, and named, so the
        // answer says only what was really applied.
        let mut kept = Vec::new();
        let mut applied_outside = Vec::new();
        match &outside.logging {
            Some(changes) => applied_outside.extend(changes.iter().cloned()),
            None if new.logging != old.logging => {
                kept.push("logging");
                new.logging = old.logging.clone();
            }
            None => {}
        }
        let ping_changed = new.ping_nodes != old.ping_nodes
            || new.ping_groups != old.ping_groups
            || new.timing.deadping != old.timing.deadping;
        if ping_changed && outside.ping_targets {
            applied_outside.push("ping targets".to_string());
        } else if new.ping_nodes != old.ping_nodes || new.ping_groups != old.ping_groups {
            kept.push("ping nodes");
            new.ping_nodes = old.ping_nodes.clone();
            new.ping_groups = old.ping_groups.clone();
        }
        if new.ping_hysteresis != old.ping_hysteresis {
            self.reach.policy.set_hysteresis(new.ping_hysteresis);
            changed.push("ping_hysteresis");
        }
        if new.respawn != old.respawn || new.watchdog != old.watchdog {
            kept.push("respawn/watchdog");
            new.respawn = old.respawn.clone();
            new.watchdog = old.watchdog.clone();
        }
        if new.fencing != old.fencing {
            // Read from the configuration at each fencing, so the next one uses it.
            changed.push("fencing");
        }
        if new.vip_announce != old.vip_announce {
            // Copied into the resource context at start.
            kept.push("vip_announce");
            new.vip_announce = old.vip_announce;
        }
        if new.metrics != old.metrics {
            // The endpoint is bound at start.
            kept.push("metrics");
            new.metrics = old.metrics;
        }
        self.membership.set_keys(FrameKeys::new(&new.auth));
        self.deadtime_text = deadtime_text(&new);
        self.config = Arc::new(new);
        tracing::info!(?changed, ?kept, "configuration reloaded");
        let mut applied: Vec<String> = changed.iter().map(|c| c.to_string()).collect();
        applied.extend(applied_outside);
        let mut message = if applied.is_empty() {
            "configuration reloaded: no change applied".to_string()
        } else {
            format!("configuration reloaded: {} applied", applied.join(", "))
        };
        if !kept.is_empty() {
            message.push_str(&format!(
                "; not applied until hbd restarts: {}",
                kept.join(", ")
            ));
        }
        if !self.membership.keys().authenticates() {
            let warning = "auth chooses crc: heartbeats are not authenticated, anyone on the network can forge them; choose sha256 in authkeys";
            tracing::warn!("{warning}");
            message.push_str(&format!("; WARNING: {warning}"));
        }
        Ok(message)
    }

    /// What of `new` only a restart can apply (nodes, media, groups, the failback policy):
    /// a reload changing any of them is refused as a whole, before anything is applied.
    pub fn needs_restart(&self, new: &Config) -> Vec<&'static str> {
        let old = &self.config;
        let mut needs_restart = Vec::new();
        if new.nodes != old.nodes {
            needs_restart.push("node");
        }
        if new.media != old.media {
            needs_restart.push("media");
        }
        if new.groups != old.groups {
            needs_restart.push("haresources groups");
        }
        if new.auto_failback != old.auto_failback {
            needs_restart.push("auto_failback");
        }
        needs_restart
    }

    /// Pushes our `status` heartbeat, built in place from borrowed fields into a reused
    /// buffer with the keys prepared once: a heartbeat goes out a hundred times a second and
    /// should touch as little as it can. As an `answer` (to a peer's heartbeat) it is marked
    /// so only when it says nothing our last status did not.
    fn send_status(&mut self, now: Instant, answer: bool, out: &mut Vec<Effect>) {
        // A node without groups sends no `hbd_groups` field (version 0 then).
        let has_groups = !self.config.groups.is_empty();
        let (groups, version) = if has_groups {
            self.manager.reports_text()
        } else {
            ("", 0)
        };
        let state = self.membership.local_state().as_str();
        let said = (state, version, self.reach.version, self.dead.version);
        let as_answer = answer && self.said == said;
        self.said = said;
        let mut fields: [FieldRef<'_>; 8] = [
            FieldRef::string("t", b"status"),
            FieldRef::string("st", state.as_bytes()),
            FieldRef::string("dt", self.deadtime_text.as_bytes()),
            FieldRef::string("protocol", b"1"),
            FieldRef::string(GROUPS_FIELD, groups.as_bytes()),
            FieldRef::string(REACH_FIELD, self.reach.text.as_bytes()),
            FieldRef::string(STALE_GENERATION_FIELD, self.stale.text.as_bytes()),
            FieldRef::string(DEAD_NODES_FIELD, self.dead.text.as_bytes()),
        ];
        // Optional fields only when they say something: groups (when there are any), our
        // reachability count (when we have one), the peers whose generation is stale, then
        // the peers we hold dead.
        let mut n = 4;
        if has_groups {
            n += 1;
        }
        if self.reach.local.is_some() {
            fields.swap(n, 5);
            n += 1;
        }
        if !self.stale.text.is_empty() {
            fields.swap(n, 6);
            n += 1;
        }
        if !self.dead.text.is_empty() {
            fields.swap(n, 7);
            n += 1;
        }
        let specific = &fields[..n];
        let seq = self.next_seq;
        self.next_seq += 1;
        let env = envelope(
            &self.config,
            &self.identity,
            self.load.as_deref(),
            self.wall,
            Some(seq),
            now,
        );
        let mut frame = self.spare.pop().unwrap_or_else(|| Vec::with_capacity(1024));
        wire::encode_stamped_prefixed(
            &mut frame,
            specific,
            &env,
            self.membership.keys(),
            self.config.msgfmt,
            &mut self.frame_prefix,
        );
        self.classic.record(seq, &frame);
        out.push(Effect::Send {
            frame,
            answer: as_answer,
        });
    }
}

/// How the alarm of a peer that does not hear us starts (`hactl status`).
const UNHEARD_ALARM: &str = "one-way loss: ";

/// Reachability as the core keeps it (see [`crate::reachability`]).
struct ReachState {
    /// Our count, when we have one.
    local: Option<Reach>,
    /// It as our heartbeats carry it (`hbd_reach`), empty without one.
    text: String,
    /// Changes with `text`, so an answer carrying a new count is not marked "nothing new".
    version: u64,
    /// The peer's count, from its heartbeats.
    peer: PeerReach,
    /// ipfail's rules over both counts.
    policy: ReachabilityPolicy,
}

/// How our heartbeats line up with the live peers now.
fn pacing_of<'a>(own: &str, membership: &'a Membership) -> Pacing<'a> {
    let peers = membership.peers().iter().map(|p| {
        (
            p.name.as_str(),
            matches!(p.state, PeerState::Up | PeerState::Active),
        )
    });
    pacing::pacing(own, peers)
}

/// `dt` of our heartbeats: the deadtime in hex milliseconds.
fn deadtime_text(config: &Config) -> String {
    format!("{:x}", config.timing.deadtime.as_millis())
}

/// The envelope every frame we send carries, with `seq` (none for `NS_*` messages) and a
/// `ts` read off the monotonic clock from the wall time `wall` was taken at.
fn envelope<'a>(
    config: &Config,
    identity: &'a NodeIdentity,
    load: Option<&'a str>,
    wall: (Instant, u64),
    seq: Option<u64>,
    now: Instant,
) -> EnvelopeRef<'a> {
    let (at, secs) = wall;
    EnvelopeRef {
        src: &identity.name,
        srcuuid: identity.uuid,
        seq,
        generation: identity.generation,
        ts: secs.saturating_add(now.saturating_duration_since(at).as_secs()),
        load,
        ttl: frame_ttl(config),
        dest_uuid: None,
    }
}

/// heartbeat's `ttl` field: hopfudge + node count, ping nodes included (§5). Derived from
/// the configuration at each send, so a reload that changes either is on the wire at once.
fn frame_ttl(config: &Config) -> u32 {
    let nodes = config.nodes.len() + config.ping_nodes.len() + config.ping_groups.len();
    u32::from(config.hopfudge).saturating_add(u32::try_from(nodes).unwrap_or(u32::MAX))
}

/// Logs a node event at the level an operator expects.
pub(super) fn log_liveness(event: &LivenessEvent) {
    match event {
        LivenessEvent::PeerState {
            node,
            from,
            to,
            reason,
        } => {
            if *to == PeerState::Dead {
                tracing::warn!(%node, from = from.as_str(), to = to.as_str(), "node is dead: {reason}");
            } else {
                tracing::info!(%node, from = from.as_str(), to = to.as_str(), "node state: {reason}");
            }
        }
        LivenessEvent::LinkState {
            node,
            link,
            to,
            reason,
        } => {
            if *to == crate::membership::liveness::LinkState::Dead {
                tracing::warn!(%node, %link, "link dead: {reason}");
            } else {
                tracing::info!(%node, %link, "link up: {reason}");
            }
        }
        LivenessEvent::LateHeartbeat {
            node,
            interval,
            warntime,
        } => tracing::warn!(
            %node,
            "late heartbeat: {} since the previous one (warntime {})",
            fmt_ms(*interval),
            fmt_ms(*warntime)
        ),
        LivenessEvent::LocalActive { reason } => {
            tracing::info!("this node is active: {reason}")
        }
    }
}

mod classic;
#[cfg(test)]
mod tests;
