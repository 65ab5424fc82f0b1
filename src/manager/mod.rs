//! The ownership manager: which node holds which resource group, as a pure state machine.
//!
//! Both nodes run the same rules on the same shared facts, so they agree without a leader:
//!
//! * Every group has a **placement** `(target node, epoch)`. Epoch 0 means "the default":
//!   the preferred node. Any decision to move a group (peer death, standby, takeover,
//!   auto_failback, a failed start) writes a new placement with `epoch + 1`; on receipt the
//!   higher epoch wins, equal epochs with different targets are settled in favour of the
//!   preferred node.
//! * Every heartbeat carries our [`GroupReport`]s: whether we hold each group and our
//!   placement. A node **releases** a group as soon as its placement targets the other node
//!   (release is always safe). It **acquires** a group only when its placement targets itself
//!   and either the peer is dead, or the peer's latest report agrees on the very same
//!   placement and says it does not hold the group. So while the nodes hear each other a
//!   group is never started on both: the acquirer waits for the holder's word that it let go.
//! * A planned move therefore costs one message: the holder stops the group and sends its
//!   report at once; the other node starts the group when that report arrives. A takeover
//!   request adds the message that asks for it (one round trip).
//! * If both nodes hold a group (a partition healed), the policy picks the keeper at once on
//!   both sides: with `auto_failback on|legacy` the preferred node, with `off` the target of
//!   the newer placement (ties: preferred). The keeper re-announces the VIP (gratuitous ARP)
//!   at once and again when the other's report says it let go; the other releases, so the
//!   overlap lasts one heartbeat exchange. Each side reports it once ([`Action::SplitBrain`],
//!   with both placements) for the log.
//! * auto_failback: when the preferred node (re)joins, the node holding its groups hands them
//!   back (`on`, `legacy`) or keeps them (`off`). It is an event at join, so a `standby` sticks
//!   until the next membership change or command, as with heartbeat.
//! * Requests that arrive while a group is starting or stopping, or while the nodes disagree
//!   on a placement, are queued (and shown) and run once the pair is stable.
//!
//! Inputs are method calls; outputs are [`Action`]s the node task carries out (start or
//! stop a group through the resource layer, announce a VIP, send our report now).

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::config::{AutoFailback, GroupSpec};
pub use crate::membership::reports::{
    GroupReport, MAX_EPOCH, Placement, ReportError, decode_reports, encode_reports,
};
use crate::membership::reports::{next_epoch, validate_reports};

/// Lifecycle of a group on this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupPhase {
    /// Not running here.
    Stopped,
    /// Resources are being started, left to right.
    Starting,
    /// Every resource runs here.
    Running,
    /// Resources are being stopped, right to left.
    Stopping,
    /// A start failed and what had started was stopped again; not running here.
    Failed,
    /// A stop failed: resources may still run here, so the peer must never start the group.
    StopFailed,
}

impl GroupPhase {
    /// Whether resources of the group may be active on this node.
    pub fn holds(self) -> bool {
        matches!(
            self,
            GroupPhase::Starting
                | GroupPhase::Running
                | GroupPhase::Stopping
                | GroupPhase::StopFailed
        )
    }

    /// Whether the group failed here: a start that failed (nothing runs), or a stop that
    /// failed (something may still run: then it is also held). Reports carry it, so the
    /// peer neither moves a failed group back here nor keeps a second copy beside a stuck
    /// one.
    pub fn failed(self) -> bool {
        matches!(self, GroupPhase::Failed | GroupPhase::StopFailed)
    }

    /// Whether an operation is under way.
    pub fn in_transition(self) -> bool {
        matches!(self, GroupPhase::Starting | GroupPhase::Stopping)
    }

    /// Word used in status output.
    pub fn as_str(self) -> &'static str {
        match self {
            GroupPhase::Stopped => "stopped",
            GroupPhase::Starting => "starting",
            GroupPhase::Running => "running",
            GroupPhase::Stopping => "stopping",
            GroupPhase::Failed => "failed",
            GroupPhase::StopFailed => "stop_failed",
        }
    }
}

/// How a group start ended, as the node reports it to [`Manager::on_started`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartOutcome {
    /// Every member runs.
    Running,
    /// A member failed and the rollback stopped everything again: nothing runs here.
    Failed,
    /// A member failed and the rollback got stuck: something may still run here, so the
    /// group is held as after a failed stop and the peer must never start it.
    Stuck,
}

/// Which groups a command is about, relative to the node it runs on (heartbeat's
/// `hb_standby` / `hb_takeover` argument).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupClass {
    /// Every group.
    All,
    /// Groups whose preferred node is this node.
    Local,
    /// Groups whose preferred node is the other node (heartbeat's `foreign` / `failback`).
    Foreign,
}

/// An operator's request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "class")]
pub enum Command {
    /// Move these groups here.
    Takeover(GroupClass),
    /// Move these groups to the other node.
    Standby(GroupClass),
}

/// What the node task must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Start the group (index into the config's groups), left to right.
    Start(usize),
    /// Stop the group, right to left.
    Stop(usize),
    /// Re-announce the group's addresses (gratuitous ARP / unsolicited NA).
    Announce(usize),
    /// Send our heartbeat (with our group reports) now rather than at the next keepalive.
    SendReport,
    /// Both nodes hold a group (a partition healed): log it as a split brain, with both
    /// sides' views and the keeper the rule chose. Once per resolution.
    SplitBrain(SplitBrain),
}

/// A split brain found on a heal: both nodes held a group under different placements.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitBrain {
    /// Index into the configuration's groups.
    pub group: usize,
    /// Our placement when it was found.
    pub ours: Placement,
    /// The peer's placement, from its report.
    pub theirs: Placement,
    /// The node that keeps the group ([`Manager`] doc, "split brain").
    pub keeper: String,
    /// The placement both sides converge on.
    pub resolved: Placement,
}

/// How a command was taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandOutcome {
    /// Applied now; the groups listed will move.
    Applied(Vec<String>),
    /// Nothing to move.
    NothingToDo(String),
    /// The pair is unstable: queued, runs when stable.
    Queued(String),
}

/// Why a command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// Standby needs a live peer to take the groups.
    #[error("the peer node is not alive: nobody can take the groups over")]
    PeerNotAlive,
    /// This node is not ready yet (initdead running, peer not heard).
    #[error("this node is still starting (waiting for its peer or initdead)")]
    NotReady,
    /// The peer does not hear this node ([`Manager::on_unheard`]).
    #[error(
        "this node holds no group: the peer does not hear it (it holds this node dead: one-way loss); fix the path from this node to the peer"
    )]
    Unheard,
    /// The peer drops our frames for an old generation ([`Manager::on_barred`]).
    #[error(
        "this node holds no group: the peer drops its frames as replays (its generation is older than the one the peer knows); restart hbd here"
    )]
    Barred,
    /// A group's placement epoch reached [`MAX_EPOCH`]: a new decision could not outrank it.
    #[error(
        "group {group} cannot move: its placement epoch {epoch} is at the limit; stop hbd on both nodes and start them again to reset it"
    )]
    EpochExhausted {
        /// Group key.
        group: String,
        /// Its epoch.
        epoch: u64,
    },
}

/// One group's state here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupState {
    /// Group key.
    pub name: String,
    /// Preferred node.
    pub preferred: String,
    /// Lifecycle here.
    pub phase: GroupPhase,
    /// Our placement.
    pub placement: Placement,
}

/// Our reports as the `hbd_groups` text: the reports it was encoded from, the text, and how
/// many times it was encoded (its version, which changes whenever the text does).
#[derive(Debug, Clone, Default)]
struct EncodedReports {
    reports: Vec<GroupReport>,
    text: String,
    version: u64,
}

/// The manager for one node of a two-node cluster.
#[derive(Debug, Clone)]
pub struct Manager {
    me: String,
    peer: Option<String>,
    policy: AutoFailback,
    groups: Vec<GroupState>,
    ready: bool,
    peer_alive: bool,
    peer_reports: Option<Vec<GroupReport>>,
    /// The `hbd_groups` text `peer_reports` were decoded from, if they came as text: the
    /// same text on the next heartbeat (nearly always) is not decoded again.
    peer_text: Option<String>,
    queue: VecDeque<Command>,
    last_sent: Vec<GroupReport>,
    /// What [`Manager::reports_text`] last encoded.
    encoded: EncodedReports,
    adopted: Vec<bool>,
    /// Groups handed to the peer because it reaches more ping nodes/groups (ipfail): they
    /// come back under auto_failback once reachability is even again.
    reach_moved: Vec<bool>,
    /// Placement epoch for which a split brain was last re-announced, per group: the keeper
    /// announces once per resolution, not once per stale report.
    announced: Vec<Option<u64>>,
    /// Placement epoch for which a split brain was last reported, per group: logged once
    /// per resolution on each side.
    split_reported: Vec<Option<u64>>,
    /// Per group: we kept it through a split brain and the other side has not yet said it
    /// let go (then we announce once more).
    split_keeper: Vec<bool>,
    shutting_down: bool,
    /// The peer drops our frames (our generation is older than the one it knows): we hold
    /// nothing until restarted, since the peer cannot hear that we would.
    barred: bool,
    /// The peer names us dead in its heartbeats ([`Manager::on_unheard`]): we hold nothing
    /// while it does, since it has taken our groups and cannot hear that we hold them.
    unheard: bool,
    /// Per group: the peer's last report before we held it dead said it held the group, and
    /// we took it over. If the peer comes back having heard us all along (one-way loss), it
    /// held the group while we did: a split brain it ended on its side.
    taken_held: Vec<bool>,
}

impl Manager {
    /// A manager for node `me` among `nodes`, managing `groups` with `policy`.
    pub fn new(me: &str, nodes: &[String], groups: &[GroupSpec], policy: AutoFailback) -> Manager {
        let peer = nodes.iter().find(|n| *n != me).cloned();
        Manager {
            me: me.to_string(),
            peer,
            policy,
            groups: groups
                .iter()
                .map(|g| GroupState {
                    name: g.name().to_string(),
                    preferred: g.preferred.clone(),
                    phase: GroupPhase::Stopped,
                    placement: Placement {
                        target: g.preferred.clone(),
                        epoch: 0,
                    },
                })
                .collect(),
            ready: false,
            peer_alive: false,
            peer_reports: None,
            peer_text: None,
            queue: VecDeque::new(),
            last_sent: Vec::new(),
            encoded: EncodedReports::default(),
            adopted: vec![false; groups.len()],
            reach_moved: vec![false; groups.len()],
            announced: vec![None; groups.len()],
            split_reported: vec![None; groups.len()],
            split_keeper: vec![false; groups.len()],
            shutting_down: false,
            barred: false,
            unheard: false,
            taken_held: vec![false; groups.len()],
        }
    }

    /// Groups and their state here.
    pub fn groups(&self) -> &[GroupState] {
        &self.groups
    }

    /// Commands waiting for the pair to be stable.
    pub fn queued(&self) -> impl Iterator<Item = &Command> {
        self.queue.iter()
    }

    /// The node currently believed to hold group `index`.
    pub fn owner(&self, index: usize) -> Option<String> {
        let g = &self.groups[index];
        if g.phase.holds() {
            return Some(self.me.clone());
        }
        let peer = self.peer.as_ref()?;
        let reports = self.peer_reports.as_ref()?;
        (self.peer_alive && report_for(reports, &g.name).is_some_and(|r| r.holds))
            .then(|| peer.clone())
    }

    /// Our reports, for our heartbeats.
    pub fn reports(&self) -> Vec<GroupReport> {
        self.groups
            .iter()
            .map(|g| GroupReport {
                group: g.name.clone(),
                holds: g.phase.holds(),
                failed: g.phase.failed(),
                placement: g.placement.clone(),
            })
            .collect()
    }

    /// [`Manager::reports`] as [`encode_reports`] writes them, encoded again only when they
    /// changed (every heartbeat carries them, and they change once in a long while), with a
    /// version that changes with the text: a sender compares versions to tell whether its
    /// groups are news, without keeping a copy of the text.
    pub fn reports_text(&mut self) -> (&str, u64) {
        if !self.reports_match(&self.encoded.reports) {
            let reports = self.reports();
            self.encoded = EncodedReports {
                text: encode_reports(&reports),
                reports,
                version: self.encoded.version + 1,
            };
        }
        (&self.encoded.text, self.encoded.version)
    }

    /// At start, before anything else: group `index` was found (partly) running here, left
    /// behind by an earlier run. It is held until the rules say otherwise.
    pub fn adopt_running(&mut self, index: usize) {
        self.groups[index].phase = GroupPhase::Running;
        self.adopted[index] = true;
    }

    /// We are ready to decide (membership went active: every node heard, or initdead).
    pub fn on_ready(&mut self) -> Vec<Action> {
        self.ready = true;
        self.decide()
    }

    /// The other node of the pair, the one groups move to and from.
    pub fn peer(&self) -> Option<&str> {
        self.peer.as_deref()
    }

    /// `node`'s heartbeats arrive (again). When it is the peer and was dead or never heard
    /// before, auto_failback hands its groups back. Another node (a cluster without groups
    /// may have more than two) decides nothing here.
    pub fn on_peer_alive(&mut self, node: &str) -> Vec<Action> {
        if self.peer.as_deref() != Some(node) {
            return Vec::new();
        }
        let was_alive = self.peer_alive;
        self.peer_alive = true;
        if !was_alive
            && self.ready
            && matches!(self.policy, AutoFailback::On | AutoFailback::Legacy)
            && let Some(peer) = self.peer.clone()
        {
            for g in &mut self.groups {
                if g.preferred == peer && g.placement.target == self.me {
                    g.placement.move_to(&peer);
                }
            }
        }
        self.decide()
    }

    /// `node` was declared dead: when it is the peer, every group it was to hold is ours
    /// now. Another node decides nothing here.
    pub fn on_peer_dead(&mut self, node: &str) -> Vec<Action> {
        if self.peer.as_deref() != Some(node) {
            return Vec::new();
        }
        if let Some(reports) = &self.peer_reports {
            for (i, g) in self.groups.iter().enumerate() {
                self.taken_held[i] = report_for(reports, &g.name).is_some_and(|r| r.holds);
            }
        }
        self.peer_gone(node);
        self.peer_reports = None;
        self.decide()
    }

    /// The peer released every group and stops (heartbeat's `shutdone`): every group it was
    /// to hold is ours at once, as at its death, without waiting a deadtime. It counts as
    /// gone, so when it starts again ([`Manager::on_peer_alive`]) auto_failback applies as
    /// after a death.
    pub fn on_peer_shutdown(&mut self, node: &str) -> Vec<Action> {
        if self.peer.as_deref() != Some(node) {
            return Vec::new();
        }
        self.peer_gone(node);
        self.peer_reports = Some(
            self.groups
                .iter()
                .map(|g| GroupReport {
                    group: g.name.clone(),
                    holds: false,
                    failed: false,
                    placement: g.placement.clone(),
                })
                .collect(),
        );
        self.decide()
    }

    /// The peer `peer` is gone, dead or shut down: every group it was to hold is ours. A
    /// node held out for a stale generation holds out only against a peer that could hold
    /// the groups unheard: with the peer gone it takes over as any survivor does (and is
    /// held out again if the peer returns still naming our generation stale).
    fn peer_gone(&mut self, peer: &str) {
        self.peer_alive = false;
        self.barred = false;
        self.unheard = false;
        self.reach_moved.fill(false);
        self.peer_text = None;
        for g in &mut self.groups {
            if g.placement.target == peer {
                g.placement.move_to(&self.me);
            }
        }
    }

    /// The peer's latest group reports arrived (with each of its heartbeats); reports that
    /// fail [`validate_reports`] are ignored as a whole.
    pub fn on_peer_reports(&mut self, reports: &[GroupReport]) -> Vec<Action> {
        if self.validate(reports).is_err() {
            return Vec::new();
        }
        self.peer_text = None;
        self.apply_peer_reports(reports.to_vec())
    }

    /// Checks the peer's reports against the cluster (targets are our two nodes, epochs
    /// cannot wrap), so a forged or broken report cannot place a group where nobody runs it.
    fn validate(&self, reports: &[GroupReport]) -> Result<(), ReportError> {
        let nodes: Vec<&str> = std::iter::once(self.me.as_str())
            .chain(self.peer.as_deref())
            .collect();
        validate_reports(reports, &nodes)
    }

    /// The peer's `hbd_groups` field arrived with a heartbeat ([`encode_reports`] text):
    /// decoded only when it differs from the last one. `None` when it is malformed (then
    /// nothing is applied, never half of it).
    pub fn on_peer_reports_text(&mut self, text: &str) -> Option<Vec<Action>> {
        self.on_peer_reports_checked(text).ok()
    }

    /// [`Manager::on_peer_reports_text`] saying why a field was refused: it does not parse,
    /// or a report fails [`validate_reports`].
    pub fn on_peer_reports_checked(&mut self, text: &str) -> Result<Vec<Action>, ReportError> {
        let known = self.peer_text.as_deref() == Some(text);
        let reports = match self.peer_reports.take() {
            Some(reports) if known => reports,
            previous => {
                let checked = decode_reports(text)
                    .ok_or(ReportError::Malformed)
                    .and_then(|r| self.validate(&r).map(|()| r));
                match checked {
                    Ok(reports) => {
                        self.peer_text = Some(text.to_string());
                        reports
                    }
                    Err(e) => {
                        self.peer_reports = previous;
                        return Err(e);
                    }
                }
            }
        };
        Ok(self.apply_peer_reports(reports))
    }

    fn apply_peer_reports(&mut self, reports: Vec<GroupReport>) -> Vec<Action> {
        let mut actions = Vec::new();
        for i in 0..self.groups.len() {
            let Some(theirs) = report_for(&reports, &self.groups[i].name) else {
                continue;
            };
            let g = &mut self.groups[i];
            let both_hold = g.phase.holds() && theirs.holds && g.phase != GroupPhase::StopFailed;
            if both_hold && theirs.failed {
                // Both hold it and the peer's copy will not stop (a failed stop or a stuck
                // rollback, reported `holds` and `failed`): it stays there, as it would have
                // without the split brain, and ours goes, so one copy is left.
                let ours = g.placement.clone();
                let peer = self.peer.clone().unwrap_or_default();
                if g.placement.target != peer || g.placement.epoch < theirs.placement.epoch {
                    g.placement = Placement {
                        target: peer.clone(),
                        epoch: next_epoch(g.placement.epoch.max(theirs.placement.epoch)),
                    };
                }
                self.note_split_brain(i, ours, theirs.placement.clone(), peer, &mut actions);
                continue;
            }
            if both_hold && theirs.placement != g.placement {
                // Both hold it and disagree on who should: a partition healed, or the peer
                // restarted while we had taken over. Both sides pick the same keeper from the
                // same two placements.
                let keeper = self.split_brain_keeper(i, &theirs.placement);
                let ours = self.groups[i].placement.clone();
                let g = &mut self.groups[i];
                if theirs.placement.target == keeper && theirs.placement.epoch >= g.placement.epoch
                {
                    // The peer already decided what we would: take its decision as is.
                    g.placement = theirs.placement.clone();
                } else if g.placement.target == keeper && g.placement.epoch > theirs.placement.epoch
                {
                    // We already decided; the peer has not heard it yet.
                } else {
                    g.placement = Placement {
                        target: keeper.clone(),
                        epoch: next_epoch(g.placement.epoch.max(theirs.placement.epoch)),
                    };
                }
                self.note_split_brain(i, ours, theirs.placement.clone(), keeper, &mut actions);
                continue;
            }
            if both_hold {
                // Both hold it and agree on who should (the peer decided on its return
                // already): the one the placement does not name is releasing. It is still
                // a split brain, and said so, once.
                let ours = g.placement.clone();
                let keeper = ours.target.clone();
                self.note_split_brain(i, ours, theirs.placement.clone(), keeper, &mut actions);
                continue;
            }
            let g = &mut self.groups[i];
            if !theirs.holds
                && self.split_keeper[i]
                && g.phase.holds()
                && g.placement.target == self.me
            {
                // The other side let go after a split brain: clients that used its MAC since
                // our first announce learn ours again.
                self.split_keeper[i] = false;
                actions.push(Action::Announce(i));
            }
            let mine = &g.placement;
            let adopt = theirs.placement.epoch > mine.epoch
                || (theirs.placement.epoch == mine.epoch
                    && theirs.placement.target != mine.target
                    && theirs.placement.target == g.preferred);
            if adopt {
                g.placement = theirs.placement.clone();
            }
        }
        self.peer_reports = Some(reports);
        actions.extend(self.decide());
        actions
    }

    /// A split brain on group `i`, resolved to `self.groups[i].placement` with `keeper`:
    /// reported once per resolution; the keeper re-announces the addresses now, and again
    /// when the other side's report says it let go.
    fn note_split_brain(
        &mut self,
        i: usize,
        ours: Placement,
        theirs: Placement,
        keeper: String,
        actions: &mut Vec<Action>,
    ) {
        let resolved = self.groups[i].placement.clone();
        if self.split_reported[i] != Some(resolved.epoch) {
            self.split_reported[i] = Some(resolved.epoch);
            actions.push(Action::SplitBrain(SplitBrain {
                group: i,
                ours,
                theirs,
                keeper: keeper.clone(),
                resolved: resolved.clone(),
            }));
        }
        if keeper == self.me {
            self.split_keeper[i] = true;
            if self.announced[i] != Some(resolved.epoch) {
                // Clients that talked to the other node during the split still have its
                // MAC: tell them where the VIP is.
                self.announced[i] = Some(resolved.epoch);
                actions.push(Action::Announce(i));
            }
        }
    }

    fn split_brain_keeper(&self, index: usize, theirs: &Placement) -> String {
        let g = &self.groups[index];
        match self.policy {
            AutoFailback::On | AutoFailback::Legacy => g.preferred.clone(),
            AutoFailback::Off => {
                if g.placement.epoch > theirs.epoch {
                    g.placement.target.clone()
                } else if theirs.epoch > g.placement.epoch {
                    theirs.target.clone()
                } else {
                    g.preferred.clone()
                }
            }
        }
    }

    /// The daemon is stopping (SIGTERM): hand every group to a live peer and release what
    /// runs here, as heartbeat gives up its resources on shutdown. Nothing is acquired any
    /// more.
    pub fn on_shutdown(&mut self) -> Vec<Action> {
        self.shutting_down = true;
        if self.peer_alive
            && let Some(peer) = self.peer.clone()
        {
            for g in &mut self.groups {
                if g.placement.target != peer {
                    g.placement.move_to(&peer);
                }
            }
        }
        let mut actions = Vec::new();
        for (i, g) in self.groups.iter_mut().enumerate() {
            if g.phase == GroupPhase::Running {
                g.phase = GroupPhase::Stopping;
                actions.push(Action::Stop(i));
            }
        }
        actions.push(Action::SendReport);
        self.last_sent = self.reports();
        actions
    }

    /// The peer drops every frame of ours as a replay (our generation went backwards: a
    /// state directory restored from a backup). It cannot hear what we hold, so holding
    /// anything is a split brain: release everything and acquire nothing until restarted.
    pub fn on_barred(&mut self) -> Vec<Action> {
        self.barred = true;
        self.decide()
    }

    /// One-way loss seen from the side that still hears: the peer has named us dead in its
    /// heartbeats for longer than our answer needs (`unheard: true`), so it has taken our
    /// groups over and cannot learn that we hold them; only we can end the split brain, so
    /// we release everything and acquire nothing until it hears us again (`false`). The
    /// placements stay: the heal settles them by the usual rules.
    pub fn on_unheard(&mut self, unheard: bool) -> Vec<Action> {
        if self.unheard == unheard {
            return Vec::new();
        }
        self.unheard = unheard;
        self.decide()
    }

    /// The peer we held dead is back and says it heard us all along (one-way loss the other
    /// way): each group it held when we took it over ran on both meanwhile, until the peer
    /// released it ([`Manager::on_unheard`] on its side). Reported as a split brain here
    /// too, once, with the placement now in force; nothing else changes.
    pub fn on_peer_heard_us_while_dead(&mut self) -> Vec<Action> {
        let mut actions = Vec::new();
        for i in 0..self.groups.len() {
            if !std::mem::take(&mut self.taken_held[i]) {
                continue;
            }
            let ours = self.groups[i].placement.clone();
            let theirs = self
                .peer_reports
                .as_ref()
                .and_then(|r| report_for(r, &self.groups[i].name))
                .map_or_else(|| ours.clone(), |r| r.placement.clone());
            let keeper = ours.target.clone();
            self.note_split_brain(i, ours, theirs, keeper, &mut actions);
        }
        actions
    }

    /// Whether [`Manager::on_unheard`] holds this node out.
    pub fn is_unheard(&self) -> bool {
        self.unheard
    }

    /// Whether [`Manager::on_barred`] holds this node out.
    pub fn is_barred(&self) -> bool {
        self.barred
    }

    /// Whether any group may still run here (starting, running, stopping).
    pub fn holds_any(&self) -> bool {
        self.groups
            .iter()
            .any(|g| g.phase.holds() && g.phase != GroupPhase::StopFailed)
    }

    /// Whether the peer's latest report says it holds any group.
    pub fn peer_holds_any(&self) -> bool {
        self.peer_alive
            && self
                .peer_reports
                .as_ref()
                .is_some_and(|r| r.iter().any(|r| r.holds))
    }

    /// Reachability (ipfail): the peer has reached more ping nodes/groups than we have for
    /// the hysteresis. Every group placed here goes to the peer (`peer@epoch+1`), and is
    /// remembered as moved for reachability. Calling it again changes nothing.
    pub fn on_reach_move_to_peer(&mut self) -> Vec<Action> {
        let Some(peer) = self.peer.clone().filter(|_| self.peer_alive) else {
            return Vec::new();
        };
        for (i, g) in self.groups.iter_mut().enumerate() {
            if g.placement.target == self.me && g.phase != GroupPhase::StopFailed {
                g.placement.move_to(&peer);
                self.reach_moved[i] = true;
            }
        }
        self.decide()
    }

    /// Reachability is even again and our take-back hold is served: under auto_failback
    /// `on`/`legacy` the groups that went to the peer for reachability come back
    /// (`me@epoch+1`; the peer releases first, as for any move). Under `off` they stay.
    pub fn on_reach_restored(&mut self) -> Vec<Action> {
        if !matches!(self.policy, AutoFailback::On | AutoFailback::Legacy) || !self.peer_alive {
            return Vec::new();
        }
        let Some(peer) = self.peer.clone() else {
            return Vec::new();
        };
        let mut moved = false;
        for (i, g) in self.groups.iter_mut().enumerate() {
            if self.reach_moved[i] && g.placement.target == peer {
                g.placement.move_to(&self.me);
                self.reach_moved[i] = false;
                moved = true;
            }
        }
        if moved { self.decide() } else { Vec::new() }
    }

    /// A start finished. A start whose rollback got stuck holds the group here, failed, as a
    /// failed stop does.
    pub fn on_started(&mut self, index: usize, outcome: StartOutcome) -> Vec<Action> {
        let g = &mut self.groups[index];
        match outcome {
            StartOutcome::Running => g.phase = GroupPhase::Running,
            StartOutcome::Stuck => g.phase = GroupPhase::StopFailed,
            StartOutcome::Failed => {
                g.phase = GroupPhase::Failed;
                // Let the peer try, unless it failed there too (no ping-pong).
                let peer_failed = self
                    .peer_reports
                    .as_ref()
                    .and_then(|r| report_for(r, &g.name))
                    .is_some_and(|r| r.failed);
                if let (Some(peer), true, false) = (&self.peer, self.peer_alive, peer_failed) {
                    g.placement.move_to(peer);
                }
            }
        }
        self.decide()
    }

    /// A stop finished. A failed stop holds the group here, failed, for good: the peer never
    /// starts it while it may still run here.
    pub fn on_stopped(&mut self, index: usize, ok: bool) -> Vec<Action> {
        self.groups[index].phase = if ok {
            GroupPhase::Stopped
        } else {
            GroupPhase::StopFailed
        };
        self.decide()
    }

    /// An operator's command.
    pub fn on_command(
        &mut self,
        command: Command,
    ) -> Result<(CommandOutcome, Vec<Action>), CommandError> {
        if !self.ready {
            return Err(CommandError::NotReady);
        }
        if let Command::Standby(_) = command
            && !self.peer_alive
        {
            return Err(CommandError::PeerNotAlive);
        }
        if self.barred {
            return Err(CommandError::Barred);
        }
        if self.unheard {
            return Err(CommandError::Unheard);
        }
        self.check_epochs(command)?;
        // The operator decides from now on: nothing comes back for reachability.
        self.reach_moved.fill(false);
        if !self.is_stable() {
            self.queue.push_back(command);
            let why = self.instability();
            return Ok((CommandOutcome::Queued(why), Vec::new()));
        }
        let outcome = self.apply_command(command);
        Ok((outcome, self.decide()))
    }

    /// Refuses a command that would move a group whose epoch cannot grow any more: it
    /// would print "moving" and move nothing.
    fn check_epochs(&self, command: Command) -> Result<(), CommandError> {
        let class = match command {
            Command::Takeover(c) | Command::Standby(c) => c,
        };
        match self.groups.iter().find(|g| {
            let in_class = match class {
                GroupClass::All => true,
                GroupClass::Local => g.preferred == self.me,
                GroupClass::Foreign => g.preferred != self.me,
            };
            in_class && g.placement.epoch >= MAX_EPOCH
        }) {
            Some(g) => Err(CommandError::EpochExhausted {
                group: g.name.clone(),
                epoch: g.placement.epoch,
            }),
            None => Ok(()),
        }
    }

    fn apply_command(&mut self, command: Command) -> CommandOutcome {
        let Some(peer) = self.peer.clone() else {
            return CommandOutcome::NothingToDo("single-node cluster".into());
        };
        let (class, new_target) = match command {
            Command::Takeover(c) => (c, self.me.clone()),
            Command::Standby(c) => (c, peer.clone()),
        };
        let mut moved = Vec::new();
        for g in &mut self.groups {
            let in_class = match class {
                GroupClass::All => true,
                GroupClass::Local => g.preferred == self.me,
                GroupClass::Foreign => g.preferred != self.me,
            };
            if !in_class {
                continue;
            }
            // A failed group is retried by an explicit command.
            if g.phase == GroupPhase::Failed && new_target == self.me {
                g.phase = GroupPhase::Stopped;
            }
            if g.placement.target != new_target {
                g.placement.move_to(&new_target);
                moved.push(g.name.clone());
            }
        }
        if moved.is_empty() {
            CommandOutcome::NothingToDo(format!("the groups already target {new_target}"))
        } else {
            CommandOutcome::Applied(moved)
        }
    }

    /// Whether no group is in transition and both nodes agree on every placement.
    pub fn is_stable(&self) -> bool {
        self.instability().is_empty()
    }

    /// Why the pair is not stable, in words ("" when stable).
    pub fn instability(&self) -> String {
        let mut why = Vec::new();
        for g in &self.groups {
            if g.phase.in_transition() {
                why.push(format!("{} is {}", g.name, g.phase.as_str()));
            }
        }
        if self.peer_alive {
            match &self.peer_reports {
                None => why.push("waiting for the peer's first report".into()),
                Some(reports) => {
                    for g in &self.groups {
                        match report_for(reports, &g.name) {
                            Some(r) if r.placement == g.placement => {
                                if r.holds && g.placement.target == self.me {
                                    why.push(format!("{} is being released by the peer", g.name));
                                }
                            }
                            Some(_) => why.push(format!("{}: placement not agreed yet", g.name)),
                            None => why.push(format!("{}: unknown to the peer", g.name)),
                        }
                    }
                }
            }
        }
        why.join("; ")
    }

    /// Applies the rules: releases what targets the peer, acquires what targets us when safe,
    /// runs queued commands once stable.
    fn decide(&mut self) -> Vec<Action> {
        let mut actions = Vec::new();
        if !self.ready {
            return actions;
        }
        if self.shutting_down || self.barred || self.unheard {
            // Only releases from now on: a start that finishes is undone.
            for i in 0..self.groups.len() {
                if self.groups[i].phase == GroupPhase::Running {
                    self.groups[i].phase = GroupPhase::Stopping;
                    actions.push(Action::Stop(i));
                }
            }
            if !self.last_sent_is_current() {
                self.last_sent = self.reports();
                actions.push(Action::SendReport);
            }
            return actions;
        }
        for i in 0..self.groups.len() {
            let g = &self.groups[i];
            let mine = g.placement.target == self.me;
            match g.phase {
                GroupPhase::Running if mine && self.adopted[i] => {
                    // Kept after a restart: start what is missing (running members are
                    // skipped, so the VIP never drops).
                    self.adopted[i] = false;
                    self.groups[i].phase = GroupPhase::Starting;
                    actions.push(Action::Start(i));
                }
                GroupPhase::Running if !mine => {
                    self.adopted[i] = false;
                    self.groups[i].phase = GroupPhase::Stopping;
                    actions.push(Action::Stop(i));
                }
                GroupPhase::Stopped if mine && self.may_acquire(i) => {
                    self.groups[i].phase = GroupPhase::Starting;
                    actions.push(Action::Start(i));
                }
                _ => {}
            }
        }
        if !self.queue.is_empty() && self.is_stable() {
            let queued: Vec<Command> = self.queue.drain(..).collect();
            for command in queued {
                self.apply_command(command);
            }
            actions.extend(self.decide());
        }
        if !self.last_sent_is_current() {
            // Tell the peer at once: a planned move costs one message, not a keepalive.
            self.last_sent = self.reports();
            actions.push(Action::SendReport);
        }
        actions.dedup();
        actions
    }

    /// Whether the reports last sent still say what [`Manager::reports`] would (compared in
    /// place: this runs on every heartbeat from the peer).
    fn last_sent_is_current(&self) -> bool {
        self.reports_match(&self.last_sent)
    }

    /// Whether `reports` say what [`Manager::reports`] would, compared without allocating.
    fn reports_match(&self, reports: &[GroupReport]) -> bool {
        self.groups.len() == reports.len()
            && self.groups.iter().zip(reports).all(|(g, r)| {
                r.group == g.name
                    && r.holds == g.phase.holds()
                    && r.failed == g.phase.failed()
                    && r.placement == g.placement
            })
    }

    fn may_acquire(&self, index: usize) -> bool {
        let g = &self.groups[index];
        if self.peer.is_none() || !self.peer_alive {
            return true;
        }
        let Some(reports) = &self.peer_reports else {
            return false;
        };
        report_for(reports, &g.name).is_some_and(|r| r.placement == g.placement && !r.holds)
    }
}

fn report_for<'a>(reports: &'a [GroupReport], group: &str) -> Option<&'a GroupReport> {
    reports.iter().find(|r| r.group == group)
}

#[cfg(test)]
mod tests;
