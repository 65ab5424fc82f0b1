//! The node: one actor that owns membership state and every decision.
//!
//! It sends our `status` heartbeat every keepalive on every medium, verifies and
//! de-duplicates what arrives ([`wire`], [`SeqTrack`]), feeds [`Liveness`] and answers
//! control requests. It sleeps until the next thing it must do (next heartbeat or the next
//! liveness deadline), so a peer is declared dead at exactly its deadtime.
//!
//! Its decisions are plain methods taking `now` ([`Node::on_frame`], timers, control calls);
//! two loops drive them. [`Node::run`] is a task fed by channels, which the simulation tests
//! run over the in-memory network on a paused clock. The daemon runs the node on a thread of
//! its own that reads the UDP sockets itself ([`Node::run_on_thread`], see `thread`), so a
//! heartbeat costs one lean wakeup; both loops share one turn.
//! Frames leave through [`crate::media::Transmit`] handles in both.

mod thread;

pub use thread::Bell;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::config::Config;
use crate::control::protocol::{
    Counters, GroupReport, LinkReport, NodeReport, Request, ResourceReport, Response, StatusReport,
};
use crate::control::server::ControlCall;
use crate::daemon::runner::{GroupRunner, OpError};
use crate::manager::{Action, Command, CommandOutcome, GroupPhase, Manager, StartOutcome};
use crate::media::{Inbound, InboundRef, Medium};
use crate::membership::generation::PeerGenerationWriter;
use crate::membership::liveness::{LinkState, Liveness, LivenessEvent, PeerState, fmt_ms};
use crate::membership::pacing::{self, HeartbeatPacer, Pacing};
use crate::membership::seqtrack::{SeqTrack, SeqVerdict};
use crate::membership::wire::{self, EnvelopeRef, FieldRef, FrameKeys, FramePrefix, WireError};

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

/// Everything a node task needs.
pub struct NodeSetup {
    /// Validated configuration.
    pub config: Arc<Config>,
    /// Our identity.
    pub identity: NodeIdentity,
    /// Open media; an [`Inbound::link`] indexes this list.
    pub media: Vec<Medium>,
    /// Highest generation seen from each peer in earlier runs, so frames replayed from an
    /// older generation are dropped even right after we restart.
    pub peer_generations: BTreeMap<String, u64>,
    /// Where to persist peer generations; `None` keeps them in memory only.
    pub state_dir: Option<PathBuf>,
    /// Whether to report the load average (`ld`) from /proc/loadavg.
    pub report_load: bool,
    /// Where to copy every [`NodeEvent`], timestamped (simulation tests); `None` for nobody.
    pub observer: Option<mpsc::UnboundedSender<(Instant, NodeEvent)>>,
    /// Carries out group starts and stops.
    pub runner: Arc<dyn GroupRunner>,
    /// Re-reads the configuration for `hactl reload`; `None` refuses reloads.
    pub reloader: Option<Reloader>,
}

/// Loads the configuration again from where it came from.
pub type Reloader = Arc<dyn Fn() -> Result<Config, String> + Send + Sync>;

/// Something that happened in the node, as seen by an observer.
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
    /// A frame was dropped.
    Dropped {
        /// Why: `oversize`, `authentication failed`, `malformed`, `unknown node`, `replay`
        /// or `stale`.
        reason: &'static str,
    },
}

/// Rate limit for repeated drop reasons: at most one log line per reason per interval, so a
/// flood of forged packets cannot flood the log.
const DROP_LOG_INTERVAL: Duration = Duration::from_secs(1);

/// Field of our `status` messages that carries our group reports (ignored by heartbeat).
pub const GROUPS_FIELD: &str = "hbd_groups";

/// How long a stopping node waits for its groups to stop before it exits anyway.
const SHUTDOWN_LIMIT: Duration = Duration::from_secs(120);

/// How often the load average in our heartbeats is refreshed.
const LOAD_REFRESH: Duration = Duration::from_secs(1);

#[derive(Default)]
struct DropLog {
    seen: BTreeMap<&'static str, (Instant, u64)>,
}

impl DropLog {
    /// Returns how many were suppressed since the last line if a line should be logged now.
    fn allow(&mut self, reason: &'static str, now: Instant) -> Option<u64> {
        match self.seen.get_mut(reason) {
            Some((last, suppressed))
                if now.saturating_duration_since(*last) < DROP_LOG_INTERVAL =>
            {
                *suppressed += 1;
                None
            }
            Some((last, suppressed)) => {
                let n = *suppressed;
                *last = now;
                *suppressed = 0;
                Some(n)
            }
            None => {
                self.seen.insert(reason, (now, 0));
                Some(0)
            }
        }
    }
}

/// The node actor's state.
pub struct Node {
    config: Arc<Config>,
    identity: NodeIdentity,
    media: Vec<Medium>,
    liveness: Liveness,
    seqtracks: Vec<SeqTrack>,
    /// Persists peer generations off the async thread; `None` keeps them in memory only.
    generation_writer: Option<PeerGenerationWriter>,
    report_load: bool,
    load: (Option<Instant>, String),
    /// Our deadtime as our heartbeats carry it (`dt`, hex milliseconds).
    deadtime_text: String,
    /// The configuration's keys, prepared for signing and verifying.
    frame_keys: FrameKeys,
    /// Where heartbeats are built; reused so a send allocates (almost) nothing.
    send_buffer: Vec<u8>,
    /// Our status frames' leading fields, encoded and hashed once for the frames that repeat
    /// them (rebuilt by the encoder when they or the keys change).
    frame_prefix: FramePrefix,
    /// What our last status said (state, version of the `hbd_groups` text,
    /// [`Manager::reports_text`]): an answer that repeats it is news to nobody.
    said: (&'static str, u64),
    next_seq: u64,
    /// When our heartbeats go out (lined up with the peers', see [`pacing`]).
    pacer: HeartbeatPacer,
    counters: Counters,
    drop_log: DropLog,
    observer: Option<mpsc::UnboundedSender<(Instant, NodeEvent)>>,
    manager: Manager,
    runner: Arc<dyn GroupRunner>,
    op_tx: mpsc::UnboundedSender<OpDone>,
    op_rx: Option<mpsc::UnboundedReceiver<OpDone>>,
    reloader: Option<Reloader>,
}

/// An input from outside the heartbeat path, as both loops receive it.
#[derive(Debug)]
enum Mail {
    Call(ControlCall),
    OpDone(OpDone),
    Shutdown,
}

/// A finished group operation, back from the runner.
#[derive(Debug)]
struct OpDone {
    group: usize,
    start: bool,
    result: Result<(), OpError>,
}

impl Node {
    /// Builds the node at `now`; nothing is sent until [`Node::run`].
    pub fn new(setup: NodeSetup, now: Instant) -> Node {
        let config = setup.config;
        let peers: Vec<String> = config
            .nodes
            .iter()
            .filter(|n| **n != setup.identity.name)
            .cloned()
            .collect();
        let link_names: Vec<String> = setup.media.iter().map(|m| m.name.clone()).collect();
        let liveness = Liveness::new(config.timing, &peers, &link_names, now);
        let seqtracks = peers
            .iter()
            .map(|p| match setup.peer_generations.get(p) {
                Some(g) => SeqTrack::with_min_generation(*g),
                None => SeqTrack::new(),
            })
            .collect();
        let generation_writer =
            setup
                .state_dir
                .and_then(|dir| match PeerGenerationWriter::spawn(dir) {
                    Ok(w) => Some(w),
                    Err(e) => {
                        tracing::error!(error = %e, "cannot start the peer generation writer: peer generations are not persisted");
                        None
                    }
                });
        let manager = Manager::new(
            &setup.identity.name,
            &config.nodes,
            &config.groups,
            config.auto_failback,
        );
        let (op_tx, op_rx) = mpsc::unbounded_channel();
        Node {
            identity: setup.identity,
            media: setup.media,
            liveness,
            seqtracks,
            generation_writer,
            report_load: setup.report_load,
            load: (None, "n/a".to_string()),
            deadtime_text: deadtime_text(&config),
            frame_keys: FrameKeys::new(&config.auth),
            send_buffer: Vec::with_capacity(1024),
            frame_prefix: FramePrefix::default(),
            said: ("", u64::MAX),
            next_seq: 1,
            pacer: HeartbeatPacer::new(now, config.timing.keepalive),
            counters: Counters::default(),
            drop_log: DropLog::default(),
            observer: setup.observer,
            manager,
            runner: setup.runner,
            op_tx,
            op_rx: Some(op_rx),
            reloader: setup.reloader,
            config,
        }
    }

    /// Logs the start and adopts groups an earlier run left running: they are held until
    /// the rules say otherwise. Called once, before the loop ([`Node::run`] does it).
    pub async fn prepare(&mut self) {
        tracing::info!(
            node = %self.identity.name,
            generation = self.identity.generation,
            links = ?self.liveness.link_names(),
            keepalive = %fmt_ms(self.config.timing.keepalive),
            deadtime = %fmt_ms(self.config.timing.deadtime),
            "node starting"
        );
        for i in 0..self.config.groups.len() {
            if self.runner.probe(i).await {
                tracing::warn!(
                    group = %self.config.groups[i].name(),
                    "group found running at start (left behind): adopting it"
                );
                self.manager.adopt_running(i);
            }
        }
    }

    /// Runs until `shutdown` turns true or every input closes, as a task on the runtime
    /// (the simulation tests run it on a paused clock; the daemon uses
    /// [`Node::run_on_thread`]).
    pub async fn run(
        mut self,
        mut inbound: mpsc::Receiver<Inbound>,
        mut control: mpsc::Receiver<ControlCall>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        self.prepare().await;
        let mut op_rx = self.op_rx.take().expect("run is called once");
        let mut control_open = true;
        let mut stop_deadline = None;
        // One timer for the whole loop, replaced only when the deadline changes (a new
        // registration can cost the driver an eventfd write and an extra epoll round).
        let timer = tokio::time::sleep_until(self.pacer.due());
        tokio::pin!(timer);
        while let Some(wake) = self.turn(Instant::now(), stop_deadline) {
            if timer.deadline() != wake {
                // A fresh timer, not `reset`: tokio extends a later deadline lazily, leaving
                // the old one in its wheel, and the driver then wakes at the old deadline for
                // nothing (one spurious wakeup per received heartbeat).
                timer.set(tokio::time::sleep_until(wake));
            }
            let mail = tokio::select! {
                biased;
                changed = shutdown.changed(), if stop_deadline.is_none() => {
                    (changed.is_err() || *shutdown.borrow()).then_some(Mail::Shutdown)
                }
                frame = inbound.recv() => match frame {
                    Some(frame) => {
                        self.on_frame(Instant::now(), frame.as_ref());
                        None
                    }
                    None => break,
                },
                Some(done) = op_rx.recv() => Some(Mail::OpDone(done)),
                call = control.recv(), if control_open => {
                    control_open = call.is_some();
                    call.map(Mail::Call)
                }
                _ = &mut timer => None,
            };
            if let Some(mail) = mail {
                self.on_mail(Instant::now(), mail, &mut stop_deadline);
            }
        }
        if let Some(writer) = self.generation_writer.take() {
            writer.close().await;
        }
        tracing::info!(node = %self.identity.name, "node stopped");
    }

    /// Applies one input from outside the heartbeat path (either loop): a control call, a
    /// finished group operation, or the request to stop, which starts stopping once and
    /// sets `stop_deadline`.
    fn on_mail(&mut self, now: Instant, mail: Mail, stop_deadline: &mut Option<Instant>) {
        match mail {
            Mail::Call(call) => self.on_call(now, call),
            Mail::OpDone(done) => self.on_op_done(now, done),
            Mail::Shutdown if stop_deadline.is_none() => {
                *stop_deadline = Some(self.begin_stop(now));
            }
            Mail::Shutdown => {}
        }
    }

    /// One turn of either loop at `now`: sends what is due and applies passed deadlines,
    /// then says when to wake next, or `None` when the node stops now (stopping, and every
    /// group released or `stop_deadline` passed), after telling the peer once more.
    fn turn(&mut self, now: Instant, stop_deadline: Option<Instant>) -> Option<Instant> {
        if let Some(deadline) = stop_deadline
            && (!self.manager.holds_any() || now >= deadline)
        {
            if self.manager.holds_any() {
                tracing::error!("stopping with groups still held here: their stop did not finish");
            }
            // Tell the peer once more that nothing runs here any more.
            self.send_status(now);
            return None;
        }
        self.on_timer(now);
        let wake = match self.liveness.next_deadline() {
            Some(d) => d.min(self.pacer.due()),
            None => self.pacer.due(),
        };
        Some(stop_deadline.map_or(wake, |d| wake.min(d)))
    }

    /// Starts stopping at `now`: every group here is released to the peer. Returns the
    /// deadline after which the node stops even if a stop has not finished.
    fn begin_stop(&mut self, now: Instant) -> Instant {
        tracing::info!("stopping: releasing every group here to the peer");
        let actions = self.manager.on_shutdown();
        self.run_actions(now, actions);
        now + SHUTDOWN_LIMIT
    }

    /// Sends a heartbeat if one is due and applies passed liveness deadlines.
    fn on_timer(&mut self, now: Instant) {
        if now >= self.pacer.due() {
            let turns = match self.pacing() {
                Pacing::TakeTurns { lower, .. } => Some(lower),
                _ => None,
            };
            if self.pacer.on_timer(now, turns) {
                self.send_status(now);
            }
        }
        let events = self.liveness.on_tick(now);
        self.apply_events(now, events);
    }

    fn notify(&mut self, now: Instant, event: NodeEvent) {
        if let Some(observer) = &self.observer
            && observer.send((now, event)).is_err()
        {
            self.observer = None;
        }
    }

    fn apply_events(&mut self, now: Instant, events: Vec<LivenessEvent>) {
        let mut local_changed = false;
        let mut actions = Vec::new();
        for event in &events {
            match event {
                LivenessEvent::PeerState { from, to, .. } if to.is_alive() && !from.is_alive() => {
                    actions.extend(self.manager.on_peer_alive());
                    // Answer at once, as heartbeat does for a node returning after a
                    // partition: the peer learns about us (and our groups) one message later
                    // instead of up to a keepalive later.
                    local_changed = true;
                }
                LivenessEvent::PeerState {
                    to: PeerState::Dead,
                    ..
                } => actions.extend(self.manager.on_peer_dead()),
                LivenessEvent::LocalActive { .. } => actions.extend(self.manager.on_ready()),
                _ => {}
            }
        }
        for event in events {
            log_event(&event);
            if let LivenessEvent::PeerState {
                node,
                to: PeerState::Dead,
                ..
            } = &event
                && let Some(i) = self.liveness.peer_index(node)
            {
                // From now on a status not newer than the last one is stale, a newer one
                // is the peer returning after a partition.
                self.seqtracks[i].mark_dead();
            }
            self.notify(now, NodeEvent::Liveness(event.clone()));
            if matches!(event, LivenessEvent::LocalActive { .. }) {
                local_changed = true;
            }
        }
        if local_changed && !actions.contains(&Action::SendReport) {
            // heartbeat sends a status at once when its own state changes.
            actions.push(Action::SendReport);
        }
        self.run_actions(now, actions);
    }

    /// Carries out the manager's decisions.
    fn run_actions(&mut self, now: Instant, actions: Vec<Action>) {
        for action in actions {
            match action {
                Action::Start(g) | Action::Stop(g) => {
                    let start = matches!(action, Action::Start(_));
                    let name = self.config.groups[g].name().to_string();
                    tracing::info!(group = %name, "{} group", if start { "starting" } else { "stopping" });
                    let op = if start {
                        self.runner.start(g)
                    } else {
                        self.runner.stop(g)
                    };
                    let tx = self.op_tx.clone();
                    tokio::spawn(async move {
                        let result = op.await;
                        let _ = tx.send(OpDone {
                            group: g,
                            start,
                            result,
                        });
                    });
                }
                Action::Announce(g) => {
                    let name = self.config.groups[g].name().to_string();
                    tracing::info!(group = %name, "re-announcing the group's addresses");
                    let op = self.runner.announce(g);
                    tokio::spawn(async move {
                        if let Err(e) = op.await {
                            tracing::warn!(group = %name, "re-announce failed: {e}");
                        }
                    });
                }
                Action::SendReport => {
                    self.send_status(now);
                    self.pacer.on_extra_send(now);
                }
            }
        }
    }

    fn on_op_done(&mut self, now: Instant, done: OpDone) {
        let name = self.config.groups[done.group].name().to_string();
        let ok = done.result.is_ok();
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
            self.manager.on_stopped(done.group, ok)
        };
        self.run_actions(now, actions);
    }

    /// The load line for our heartbeats, re-read at most every [`LOAD_REFRESH`].
    fn refresh_load(&mut self, now: Instant) {
        if !self.report_load {
            return;
        }
        let stale = self
            .load
            .0
            .is_none_or(|at| now.saturating_duration_since(at) >= LOAD_REFRESH);
        if stale {
            let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
            let line = text.lines().next().unwrap_or("n/a").trim().to_string();
            self.load = (Some(now), if line.is_empty() { "n/a".into() } else { line });
        }
    }

    /// Sends our `status` heartbeat on every medium. The frame is built in place, borrowing
    /// what it says (one reused buffer, keys prepared once): a heartbeat is sent a hundred
    /// times a second and should touch as little as it can.
    fn send_status(&mut self, now: Instant) {
        self.send_status_as(now, false);
    }

    /// Sends our status in answer to a peer's heartbeat: marked as an answer (which the peer
    /// may read only when it next wakes) when it says nothing our last status did not.
    fn send_answer(&mut self, now: Instant) {
        self.send_status_as(now, true);
    }

    fn send_status_as(&mut self, now: Instant, answer: bool) {
        self.refresh_load(now);
        // A node without groups sends no `hbd_groups` field (version 0 then).
        let has_groups = !self.config.groups.is_empty();
        let (groups, version) = if has_groups {
            self.manager.reports_text()
        } else {
            ("", 0)
        };
        let state = self.liveness.local_state().as_str();
        let said = (state, version);
        let as_answer = answer && self.said == said;
        self.said = said;
        let fields = [
            FieldRef::string("t", b"status"),
            FieldRef::string("st", state.as_bytes()),
            FieldRef::string("dt", self.deadtime_text.as_bytes()),
            FieldRef::string("protocol", b"1"),
            FieldRef::string(GROUPS_FIELD, groups.as_bytes()),
        ];
        let specific = if has_groups {
            &fields[..]
        } else {
            &fields[..4]
        };
        let seq = self.next_seq;
        self.next_seq += 1;
        let ts = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(1)
            .max(1);
        let env = EnvelopeRef {
            src: &self.identity.name,
            srcuuid: self.identity.uuid,
            seq: Some(seq),
            generation: self.identity.generation,
            ts,
            load: Some(&self.load.1),
            ttl: frame_ttl(&self.config),
            dest_uuid: None,
        };
        let mut frame = std::mem::take(&mut self.send_buffer);
        frame.clear();
        wire::encode_stamped_prefixed(
            &mut frame,
            specific,
            &env,
            &self.frame_keys,
            self.config.msgfmt,
            &mut self.frame_prefix,
        );
        for medium in &self.media {
            let sent = if as_answer {
                medium.tx.send_answer(&frame)
            } else {
                medium.tx.send(&frame)
            };
            if let Err(e) = sent {
                self.counters.send_errors += 1;
                if let Some(suppressed) = self.drop_log.allow("send", now) {
                    tracing::warn!(link = %medium.name, error = %e, suppressed, "heartbeat send failed");
                }
            }
        }
        self.send_buffer = frame;
    }

    fn drop_frame(
        &mut self,
        now: Instant,
        reason: &'static str,
        inbound: InboundRef<'_>,
        detail: &str,
    ) {
        self.notify(now, NodeEvent::Dropped { reason });
        if let Some(suppressed) = self.drop_log.allow(reason, now) {
            let link = self
                .media
                .get(inbound.link)
                .map(|m| m.name.as_str())
                .unwrap_or("?");
            let from = inbound
                .from
                .map(|a| a.to_string())
                .unwrap_or_else(|| "-".to_string());
            tracing::warn!(%link, %from, suppressed, "dropped frame: {reason}: {detail}");
        }
    }

    /// Verifies, de-duplicates and applies one received frame. Never panics on any input.
    pub fn on_frame(&mut self, now: Instant, inbound: InboundRef<'_>) {
        if inbound.frame.len() > wire::MAX_FRAME_LEN {
            self.counters.oversize += 1;
            let detail = format!("{} bytes", inbound.frame.len());
            self.drop_frame(now, "oversize", inbound, &detail);
            return;
        }
        let msg = match wire::decode_view(inbound.frame, &self.frame_keys) {
            Ok(m) => m,
            Err(e @ (WireError::BadDigest { .. } | WireError::UnknownKeyIndex { .. })) => {
                self.counters.bad_auth += 1;
                self.drop_frame(now, "authentication failed", inbound, &e.to_string());
                return;
            }
            Err(e) => {
                self.counters.malformed += 1;
                self.drop_frame(now, "malformed", inbound, &e.to_string());
                return;
            }
        };
        let env = match wire::read_envelope(&msg) {
            Ok(env) => env,
            Err(e) => {
                self.counters.malformed += 1;
                self.drop_frame(now, "malformed", inbound, &e.to_string());
                return;
            }
        };
        if env.src == self.identity.name {
            // Our own multicast looped back.
            return;
        }
        let Some(peer) = self.liveness.peer_index(env.src) else {
            self.counters.unknown_node += 1;
            let detail = format!("node '{}' is not in the cluster", env.src);
            self.drop_frame(now, "unknown node", inbound, &detail);
            return;
        };
        let Some((seq, generation)) = env.sequence() else {
            // NS_* messages sit outside sequencing; hbd peers do not need them yet.
            self.counters.accepted += 1;
            let events = self.liveness.on_packet(now, peer, inbound.link, None);
            self.apply_events(now, events);
            return;
        };
        let is_status = env.msg_type == "status";
        let peer_dead = self.liveness.peers()[peer].state == PeerState::Dead;
        let known_generation = self.seqtracks[peer].generation();
        let verdict = self.seqtracks[peer].check(generation, seq, is_status, peer_dead);
        match verdict {
            SeqVerdict::Replay { known } => {
                self.counters.replayed += 1;
                let detail = format!(
                    "generation {generation:x} from '{}' is older than {known:x}: attempted replay",
                    env.src,
                );
                self.drop_frame(now, "replay", inbound, &detail);
                return;
            }
            SeqVerdict::Stale => {
                self.counters.replayed += 1;
                let detail = format!("old sequence {seq:x} from '{}'", env.src);
                self.drop_frame(now, "stale", inbound, &detail);
                return;
            }
            SeqVerdict::Duplicate => {
                self.counters.duplicates += 1;
                let events = self.liveness.on_packet(now, peer, inbound.link, Some(seq));
                self.apply_events(now, events);
                return;
            }
            SeqVerdict::Restart { previous } => {
                tracing::info!(
                    node = %env.src,
                    from = %format!("{previous:x}"),
                    to = %format!("{generation:x}"),
                    "node restarted (new generation)"
                );
                self.liveness.on_restart(peer);
                self.notify(
                    now,
                    NodeEvent::PeerRestarted {
                        node: env.src.to_string(),
                        generation,
                    },
                );
            }
            SeqVerdict::Accept
            | SeqVerdict::Rejoin
            | SeqVerdict::Late
            | SeqVerdict::Gap { .. }
            | SeqVerdict::Resync { .. } => {}
        }
        // A late (reordered) frame is old news: it must not set our pace.
        let verdict_is_fresh = !matches!(verdict, SeqVerdict::Late);
        if self.seqtracks[peer].generation() != known_generation
            && let Some(writer) = &self.generation_writer
        {
            // A new generation for this peer: remember it across our restarts.
            writer.store(env.src, generation);
        }
        self.counters.accepted += 1;
        let events = if is_status {
            let st = msg.get_str("st").unwrap_or("up");
            let dt = msg
                .get("dt")
                .and_then(wire::parse_hex_u64)
                .map(Duration::from_millis);
            self.liveness
                .on_status(now, peer, inbound.link, Some(seq), st, dt)
        } else {
            self.liveness.on_packet(now, peer, inbound.link, Some(seq))
        };
        self.apply_events(now, events);
        // Ownership first: when the peer's reports change ours, the one status that says so
        // also serves as the pacing reply (on_extra_send suppresses a second one).
        if is_status && let Some(text) = msg.get_str(GROUPS_FIELD) {
            match self.manager.on_peer_reports_text(text) {
                Some(actions) => self.run_actions(now, actions),
                None => {
                    self.counters.malformed += 1;
                    self.drop_frame(now, "malformed", inbound, "bad hbd_groups field");
                }
            }
        }
        if is_status && verdict_is_fresh && self.pace_on(now, env.src) {
            self.send_answer(now);
        }
    }

    /// A fresh status of `name` arrived at `now`: whether it paces ours and we send now
    /// (see [`pacing`]).
    fn pace_on(&mut self, now: Instant, name: &str) -> bool {
        match self.pacing() {
            Pacing::Follow(setter) if setter == name => self.pacer.on_pace_setter_heartbeat(now),
            Pacing::TakeTurns { partner, lower } if partner == name => {
                self.pacer.on_partner_heartbeat(now, lower)
            }
            _ => false,
        }
    }

    /// How our heartbeats line up with the live peers now.
    fn pacing(&self) -> Pacing<'_> {
        let peers = self.liveness.peers().iter().map(|p| {
            (
                p.name.as_str(),
                matches!(p.state, PeerState::Up | PeerState::Active),
            )
        });
        pacing::pacing(&self.identity.name, peers)
    }

    /// Answers one control call; requests that wait on resources are answered from a task
    /// so the node never stops heartbeating.
    fn on_call(&mut self, now: Instant, call: ControlCall) {
        match call.request {
            Request::Checks => {
                let reports = self.runner.director_reports();
                tokio::spawn(async move {
                    let checks = reports.await;
                    let mut response = Response::done(format!("{} real server(s)", checks.len()));
                    response.checks = Some(checks);
                    let _ = call.reply.send(response);
                });
            }
            Request::Reload => {
                let first = self.reload();
                let inline = self
                    .config
                    .director
                    .as_ref()
                    .and_then(|d| d.ldirectord_cf.is_none().then(|| d.config.clone()));
                let directors = self.runner.reload_directors(inline);
                tokio::spawn(async move {
                    let mut lines = Vec::new();
                    let mut ok = true;
                    match first {
                        Ok(m) => lines.push(m),
                        Err(e) => {
                            ok = false;
                            lines.push(e);
                        }
                    }
                    for r in directors.await {
                        match r {
                            Ok(m) => lines.push(m),
                            Err(e) => {
                                ok = false;
                                tracing::error!("{e}");
                                lines.push(e);
                            }
                        }
                    }
                    let text = lines.join("\n");
                    let _ = call.reply.send(if ok {
                        Response::done(text)
                    } else {
                        Response::refused(text)
                    });
                });
            }
            Request::Status => {
                let _ = call.reply.send(Response {
                    ok: true,
                    error: None,
                    status: Some(self.status_report(now)),
                    message: None,
                    checks: None,
                });
            }
            Request::Takeover { class } => {
                let _ = call
                    .reply
                    .send(self.on_command(now, Command::Takeover(class)));
            }
            Request::Standby { class } => {
                let _ = call
                    .reply
                    .send(self.on_command(now, Command::Standby(class)));
            }
        }
    }

    /// Carries out an operator's takeover or standby.
    fn on_command(&mut self, now: Instant, command: Command) -> Response {
        tracing::info!(?command, "operator command");
        match self.manager.on_command(command) {
            Ok((outcome, actions)) => {
                self.run_actions(now, actions);
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

    /// Re-reads the configuration. Keys, timers, logging and ping settings apply at once;
    /// a change to nodes, media, groups or the failback policy is refused and names what
    /// needs a restart (groups keep running across a restart: hbd adopts them).
    pub fn reload(&mut self) -> Result<String, String> {
        let Some(reloader) = &self.reloader else {
            return Err("this node cannot reload its configuration".into());
        };
        let new = reloader()?;
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
        if !needs_restart.is_empty() {
            return Err(format!(
                "nothing applied: changing {} needs a restart of hbd (running groups are adopted on restart)",
                needs_restart.join(", ")
            ));
        }
        let mut changed = Vec::new();
        if new.auth != old.auth {
            changed.push("authkeys");
        }
        if new.timing != old.timing {
            changed.push("timers");
            self.liveness.set_timing(new.timing);
            self.pacer.set_keepalive(new.timing.keepalive);
        }
        if new.logging != old.logging {
            changed.push("logging");
        }
        if new.ping_nodes != old.ping_nodes || new.ping_groups != old.ping_groups {
            changed.push("ping nodes");
        }
        if new.msgfmt != old.msgfmt || new.hopfudge != old.hopfudge {
            changed.push("wire format");
        }
        self.frame_keys = FrameKeys::new(&new.auth);
        self.deadtime_text = deadtime_text(&new);
        self.config = Arc::new(new);
        tracing::info!(?changed, "configuration reloaded");
        Ok(if changed.is_empty() {
            "configuration reloaded: no change".to_string()
        } else {
            format!("configuration reloaded: {} applied", changed.join(", "))
        })
    }

    /// The status report `hactl status` prints.
    pub fn status_report(&self, now: Instant) -> StatusReport {
        let link_names = self.liveness.link_names();
        let mut nodes = vec![NodeReport {
            name: self.identity.name.clone(),
            status: "up".to_string(),
            state: self.liveness.local_state().as_str().to_string(),
            local: true,
            last_heard_ms: None,
            deadtime_ms: millis(self.config.timing.deadtime),
            late_heartbeats: 0,
            longest_gap_ms: 0,
            links: link_names
                .iter()
                .map(|n| LinkReport {
                    name: n.clone(),
                    status: "up".to_string(),
                })
                .collect(),
        }];
        for p in self.liveness.peers() {
            let status = match p.state {
                PeerState::Init => "init",
                PeerState::Up | PeerState::Active => "up",
                PeerState::Dead => "dead",
            };
            nodes.push(NodeReport {
                name: p.name.clone(),
                status: status.to_string(),
                state: p.state.as_str().to_string(),
                local: false,
                last_heard_ms: p
                    .last_status
                    .map(|t| millis(now.saturating_duration_since(t))),
                deadtime_ms: millis(p.deadtime),
                late_heartbeats: p.late_heartbeats,
                longest_gap_ms: millis(p.longest_gap),
                links: p
                    .links
                    .iter()
                    .zip(link_names)
                    .map(|(l, name)| LinkReport {
                        name: name.clone(),
                        status: match l.state {
                            LinkState::Init => "init",
                            LinkState::Up => "up",
                            LinkState::Dead => "dead",
                        }
                        .to_string(),
                    })
                    .collect(),
            });
        }
        let groups = self
            .manager
            .groups()
            .iter()
            .enumerate()
            .map(|(i, g)| {
                let resource_state = match g.phase {
                    GroupPhase::Running => "running",
                    GroupPhase::Failed => "failed",
                    GroupPhase::StopFailed => "unknown",
                    GroupPhase::Starting | GroupPhase::Stopping => g.phase.as_str(),
                    GroupPhase::Stopped => "stopped",
                };
                GroupReport {
                    name: g.name.clone(),
                    preferred: g.preferred.clone(),
                    owner: self.manager.owner(i),
                    state: g.phase.as_str().to_string(),
                    target: g.placement.target.clone(),
                    epoch: g.placement.epoch,
                    resources: self.config.groups[i]
                        .resources
                        .iter()
                        .map(|r| ResourceReport {
                            spec: r.spec.clone(),
                            state: resource_state.to_string(),
                        })
                        .collect(),
                }
            })
            .collect();
        StatusReport {
            node: self.identity.name.clone(),
            state: self.liveness.local_state().as_str().to_string(),
            generation: self.identity.generation,
            nodes,
            groups,
            queued: self.manager.queued().map(|c| format!("{c:?}")).collect(),
            unstable: self.manager.instability(),
            counters: self.counters.clone(),
        }
    }
}

/// `dt` of our heartbeats: the deadtime in hex milliseconds.
fn deadtime_text(config: &Config) -> String {
    format!("{:x}", config.timing.deadtime.as_millis())
}

/// heartbeat's `ttl` field: hopfudge + node count, ping nodes included (§5). Derived from
/// the configuration at each send, so a reload that changes either is on the wire at once.
fn frame_ttl(config: &Config) -> u32 {
    let nodes = config.nodes.len() + config.ping_nodes.len() + config.ping_groups.len();
    u32::from(config.hopfudge).saturating_add(u32::try_from(nodes).unwrap_or(u32::MAX))
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn log_event(event: &LivenessEvent) {
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
            if *to == LinkState::Dead {
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
